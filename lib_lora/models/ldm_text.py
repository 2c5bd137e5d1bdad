"""Captions -> text-encoder hidden states the way the WebUI conditions generation, minus emphasis.

The WebUI splits a prompt into 75-token chunks (moving the words after the last
comma to the next chunk when the cut falls within 20 tokens of it), frames each
chunk as [BOS] + 75 tokens padded with EOS + [EOS] = 77 tokens, encodes the chunks
separately and concatenates them along the sequence. We follow that exactly so a
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

CHUNK_LENGTH = 75            # tokens per chunk between BOS and EOS
COMMA_BACKTRACK = 20         # WebUI's default opts.comma_padding_backtrack


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


def split_into_chunks(ids: list[int], comma_id: int | None, backtrack: int = COMMA_BACKTRACK) -> list[list[int]]:
    """Split token ids into chunks of at most 75, moving the words after the last comma to the
    next chunk when the cut falls within `backtrack` tokens of that comma (WebUI semantics)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    last_comma = -1
    for token in ids:
        if token == comma_id:
            last_comma = len(current)
        elif (backtrack and len(current) == CHUNK_LENGTH and last_comma != -1
              and len(current) - last_comma <= backtrack):
            cut = last_comma + 1
            chunks.append(current[:cut])
            current, last_comma = current[cut:], -1
        if len(current) == CHUNK_LENGTH:
            chunks.append(current)
            current, last_comma = [], -1
        current.append(token)
    if current or not chunks:
        chunks.append(current)
    return chunks


def frame_chunk(chunk: list[int], enc: TextEncoder) -> list[int]:
    """[BOS] + tokens + EOS padding + [EOS]; OpenCLIP then replaces everything after the first EOS by 0."""
    tokens = [enc.id_start] + chunk + [enc.id_end] * (CHUNK_LENGTH - len(chunk)) + [enc.id_end]
    if enc.id_pad != enc.id_end:
        first_end = tokens.index(enc.id_end)
        tokens = tokens[:first_end + 1] + [enc.id_pad] * (len(tokens) - first_end - 1)
    return tokens


def token_batch(captions: list[str], enc: TextEncoder, max_token_length: int) -> torch.Tensor:
    """(B, k, 77) token ids; k = the most chunks any caption needs, capped by max_token_length;
    shorter captions are padded with empty chunks as the WebUI does."""
    max_chunks = max(1, max_token_length // CHUNK_LENGTH)
    per_caption = [split_into_chunks(ids, enc.comma_id)[:max_chunks] for ids in enc.tokenize(captions)]
    count = max(len(chunks) for chunks in per_caption)
    framed = [[frame_chunk(c, enc) for c in chunks + [[]] * (count - len(chunks))] for chunks in per_caption]
    return torch.tensor(framed, dtype=torch.long)


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
