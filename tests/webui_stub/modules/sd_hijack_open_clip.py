"""Stand-in of modules/sd_hijack_open_clip.py: wrappers around OpenCLIP encoders (pad id 0)."""
from __future__ import annotations

import torch

from modules import sd_hijack_clip


class FrozenOpenCLIPEmbedderWithCustomWords(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords):
    def tokenize(self, texts):
        rows = super().tokenize(texts)
        end = self.wrapped.tokenizer.eos_token_id
        return [r[:r.index(end) + 1] + [0] * (len(r) - r.index(end) - 1) for r in rows]

    def encode_with_transformers(self, tokens):
        return self.wrapped.encode_with_transformer(tokens)


class FrozenOpenCLIPEmbedder2WithCustomWords(FrozenOpenCLIPEmbedderWithCustomWords):
    def encode_with_transformers(self, tokens):
        d = self.wrapped.encode_with_transformer(tokens)
        return d[self.wrapped.layer], d["pooled"]

    def forward(self, texts):
        tokens = torch.tensor(self.tokenize(list(texts)), device=next(self.wrapped.parameters()).device)
        return self.encode_with_transformers(tokens)
