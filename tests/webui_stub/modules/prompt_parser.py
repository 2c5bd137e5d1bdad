"""Stand-in of modules/prompt_parser.py: SdConditioning, the prompt list with size information."""
from __future__ import annotations


class SdConditioning(list):
    """A list of prompts plus the width/height SDXL's size conditioning reads."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, 'is_negative_prompt', False)
        self.width = width or getattr(copy_from, 'width', None)
        self.height = height or getattr(copy_from, 'height', None)
