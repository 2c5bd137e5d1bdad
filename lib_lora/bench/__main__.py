"""`python -m lib_lora.bench --child CONFIG MODEL RESULT`: one tiny-bench run in a fresh process (tiny.py)."""
import sys

from .tiny import _child

if len(sys.argv) == 5 and sys.argv[1] == "--child":
    sys.exit(_child(*sys.argv[2:]))
sys.exit("usage: python -m lib_lora bench (this module only runs the tiny bench's child process)")
