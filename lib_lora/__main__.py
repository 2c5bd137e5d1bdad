import sys

from lib_lora.cli import main

sys.exit(main())
