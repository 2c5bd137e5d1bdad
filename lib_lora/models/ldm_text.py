"""Captions -> text-encoder hidden states the way the WebUI conditions generation, minus emphasis.

The WebUI splits a prompt into 77-token chunks (text_chunks.py, the one chunker
both backends share), encodes the chunks separately and concatenates them along
the sequence. We follow that exactly so a
LoRA sees at training time what it will see at generation time, with one
deliberate difference: captions are never parsed for attention emphasis or BREAK,
because booru tags such as `shimakaze (azur lane)` contain brackets that are part
of the tag. Everything here is duck-typed over ldm/sgm embedders (no WebUI import).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from lib_lora.errors import ModelError
from lib_lora.models import text_chunks
from lib_lora.models.text_chunks import split_into_chunks  # noqa: F401 (re-exported for callers)


def unwrap(module: nn.Module) -> nn.Module:
    """The WebUI wraps each text encoder (sd_hijack_clip / sd_hijack_open_clip) and keeps the
    original at `.wrapped`; we always talk to the original."""
    return getattr(module, "wrapped", module)


@dataclass
class TextEncoder:
    """One text encoder of the loaded model, unwrapped, with its tokenizer and special ids."""
    raw: nn.Module
    kind: str                                   # 'hf_clip' | 'open_clip'
    tokenize: Callable[[list[str]], list[list[int]]]
    id_start: int
    id_end: int
    id_pad: int
    comma_id: int | None


def _hf_tokenize(tokenizer: Any) -> Callable[[list[str]], list[list[int]]]:
    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]
    return tokenize


def describe_encoder(raw: nn.Module, fallback_tokenizer: Any = None) -> TextEncoder:
    """Build the TextEncoder record for an unwrapped ldm/sgm embedder."""
    kind = "open_clip" if hasattr(raw, "encode_with_transformer") or hasattr(raw, "model") else "hf_clip"
    tokenizer = getattr(raw, "tokenizer", None) or fallback_tokenizer
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
        tokenize = _hf_tokenize(tokenizer)
    else:
        tokenize, vocab, start, end = _open_clip_tokenizer()
    # OpenCLIP pads with 0 after the end token; HF CLIP (ldm FrozenCLIPEmbedder) pads with EOS
    pad = 0 if kind == "open_clip" else end
    return TextEncoder(raw, kind, tokenize, start, end, pad, vocab.get(",</w>"))


def _open_clip_tokenizer():
    """SD2's FrozenOpenCLIPEmbedder keeps no tokenizer: it calls open_clip's module-level one."""
    try:
        from open_clip.tokenizer import _tokenizer  # the WebUI ships open_clip
    except ImportError as err:
        raise ModelError("The OpenCLIP text encoder has no tokenizer and open_clip is not installed",
                         where="cond_stage_model", fix="Install open-clip-torch (the WebUI ships it)") from err
    vocab = _tokenizer.encoder
    return (lambda texts: [_tokenizer.encode(t) for t in texts], vocab,
            vocab["<start_of_text>"], vocab["<end_of_text>"])


def token_batch(captions: list[str], enc: TextEncoder, max_token_length: int) -> torch.Tensor:
    """(B, k, 77) token ids chunked as the WebUI does (text_chunks, shared with the diffusers path)."""
    return text_chunks.chunk_id_lists(enc.tokenize(captions), max_token_length, bos=enc.id_start,
                                      eos=enc.id_end, pad=enc.id_pad, comma_id=enc.comma_id)


def run_encoder(enc: TextEncoder, tokens: torch.Tensor, clip_skip: int,
                hf_layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode (B, k, 77) tokens -> ((B, 77*k, C) hidden states, pooled of the first chunk or None).

    hf_clip with hf_layer None (SD1): clip_skip > 1 takes hidden_states[-clip_skip] through the
    final layer norm, as the WebUI does; hf_layer 'model' (SDXL CLIP-L) uses the embedder's own
    layer/layer_idx; 'skip' (SDXL with sdxl_clip_l_skip) takes hidden_states[-clip_skip]. open_clip uses its configured layer and ignores clip skip, as the WebUI does."""
    batch, count, length = tokens.shape
    device = next(enc.raw.parameters()).device
    flat = tokens.reshape(batch * count, length).to(device)
    pooled = None
    if enc.kind == "open_clip":
        out = enc.raw.encode_with_transformer(flat)
        if isinstance(out, dict):
            hidden, pooled = out[enc.raw.layer], out.get("pooled")
        else:
            hidden = out
    else:
        hidden = _hf_hidden(enc.raw, flat, clip_skip, hf_layer)
    hidden = hidden.reshape(batch, count * length, hidden.shape[-1])
    if pooled is not None:
        pooled = pooled.reshape(batch, count, -1)[:, 0]
    return hidden, pooled


def _hf_hidden(raw: nn.Module, flat: torch.Tensor, clip_skip: int, hf_layer: str | None) -> torch.Tensor:
    transformer = raw.transformer
    if hf_layer == "skip":      # SDXL CLIP-L with the WebUI's sdxl_clip_l_skip: no final layer norm
        out = transformer(input_ids=flat, output_hidden_states=True)
        return out.hidden_states[-max(1, clip_skip)]
    if hf_layer == "model":
        if getattr(raw, "layer", "last") == "last":
            return transformer(input_ids=flat).last_hidden_state
        out = transformer(input_ids=flat, output_hidden_states=True)
        return out.hidden_states[raw.layer_idx]
    if clip_skip <= 1:
        return transformer(input_ids=flat).last_hidden_state
    out = transformer(input_ids=flat, output_hidden_states=True)
    hidden = out.hidden_states[-clip_skip]
    # transformers 5 dropped the `text_model` level of CLIPTextModel
    return getattr(transformer, "text_model", transformer).final_layer_norm(hidden)
