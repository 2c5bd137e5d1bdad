"""Stand-in of modules/sd_hijack_clip.py: the wrappers the WebUI puts around text encoders.

Simplified: one 77-token chunk per prompt, no emphasis, no textual inversion; what matters
for Train LoRA is the structure (`.wrapped`, the attributes copied from it, clip skip)."""
from __future__ import annotations

import torch

from modules import shared


class FrozenCLIPEmbedderWithCustomWords(torch.nn.Module):
    def __init__(self, wrapped, hijack):
        super().__init__()
        self.wrapped, self.hijack = wrapped, hijack
        self.chunk_length = 75
        self.is_trainable = getattr(wrapped, 'is_trainable', False)
        self.input_key = getattr(wrapped, 'input_key', 'txt')
        self.return_pooled = getattr(wrapped, 'return_pooled', False)
        self.legacy_ucg_val = None

    def tokenize(self, texts):
        ids = self.wrapped.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]
        tok = self.wrapped.tokenizer
        return [[tok.bos_token_id] + (x[:75] + [tok.eos_token_id] * (75 - len(x[:75]))) + [tok.eos_token_id]
                for x in ids]

    def encode_with_transformers(self, tokens):
        skip = shared.opts.CLIP_stop_at_last_layers
        out = self.wrapped.transformer(input_ids=tokens, output_hidden_states=-skip)
        if skip > 1:
            return self.wrapped.transformer.text_model.final_layer_norm(out.hidden_states[-skip])
        return out.last_hidden_state

    def forward(self, texts):
        tokens = torch.tensor(self.tokenize(list(texts)), device=next(self.wrapped.parameters()).device)
        return self.encode_with_transformers(tokens)


class FrozenCLIPEmbedderForSDXLWithCustomWords(FrozenCLIPEmbedderWithCustomWords):
    def encode_with_transformers(self, tokens):
        out = self.wrapped.transformer(input_ids=tokens, output_hidden_states=self.wrapped.layer == "hidden")
        if shared.opts.sdxl_clip_l_skip is True:
            return out.hidden_states[-shared.opts.CLIP_stop_at_last_layers]
        if self.wrapped.layer == "last":
            return out.last_hidden_state
        return out.hidden_states[self.wrapped.layer_idx]
