"""Stand-in of modules/patches.py: replace a function of a module or class, remembering the original
per caller key, as the WebUI's built-in Lora extension does for torch.nn layers."""
from __future__ import annotations

from collections import defaultdict

originals = defaultdict(dict)


def patch(key, obj, field, replacement):
    """Replace obj.field with `replacement`; returns the original. Patching the same field twice
    under one key is an error (undo first), as in the WebUI."""
    patch_key = (obj, field)
    if patch_key in originals[key]:
        raise RuntimeError(f"patch for {field} is already applied")
    original_func = getattr(obj, field)
    originals[key][patch_key] = original_func
    setattr(obj, field, replacement)
    return original_func


def undo(key, obj, field):
    """Put back the original that patch() replaced; always returns None."""
    patch_key = (obj, field)
    if patch_key not in originals[key]:
        raise RuntimeError(f"there is no patch for {field} to undo")
    original_func = originals[key].pop(patch_key)
    setattr(obj, field, original_func)
    return None


def original(key, obj, field):
    """The original of a patched function, or None."""
    return originals[key].get((obj, field), None)
