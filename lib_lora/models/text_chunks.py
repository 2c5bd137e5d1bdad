"""Captions -> token chunks the way the WebUI feeds its text encoders, minus emphasis parsing.

The WebUI splits a prompt into 75-token pieces and encodes each as its own
77-token chunk ([BOS] + 75 tokens padded + [EOS]), then concatenates the hidden
states (sd_hijack_clip.py). We do the same so a LoRA sees at training time what
the WebUI gives it at generation time. Unlike the WebUI we never parse `(a:1.2)`
emphasis: booru tags such as `shimakaze (azur lane)` are text, not syntax.
Every caption of a batch gets `max_token_length / 75` chunks so they stack.
"""
from __future__ import annotations

import torch

CHUNK = 75
_CACHE_LIMIT = 100_000  # captions remembered per tokenizer (shuffled captions repeat across epochs)


def _token_ids(tokenizer, caption: str) -> list[int]:
    """Token ids of one caption without specials, memoised per tokenizer: BPE in Python costs
    about a millisecond per caption, which is noticeable next to a small model's step."""
    cache = tokenizer.__dict__.setdefault("_lib_lora_token_ids", {})
    ids = cache.get(caption)
    if ids is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        ids = cache[caption] = tokenizer(caption, add_special_tokens=False, truncation=False,
                                         verbose=False)["input_ids"]
    return ids


def chunk_token_ids(tokenizer, captions: list[str], max_token_length: int,
                    pad_id: int | None = None) -> torch.Tensor:
    """Returns (B, n_chunks, 77) token ids; captions longer than max_token_length are cut."""
    n_chunks = max(1, max_token_length // CHUNK)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = eos if pad_id is None else pad_id
    rows = []
    for caption in captions:
        ids = _token_ids(tokenizer, caption)[: n_chunks * CHUNK]
        chunks = []
        for c in range(n_chunks):
            piece = ids[c * CHUNK:(c + 1) * CHUNK]
            # After the caption's EOS the WebUI pads with EOS (SD1) or id_pad (OpenCLIP).
            body = piece + [eos] if len(piece) < CHUNK else piece
            body = body + [pad] * (CHUNK - len(body))
            chunks.append([bos] + body[:CHUNK] + [eos])
        rows.append(chunks)
    return torch.tensor(rows, dtype=torch.long)


def encode_hf_clip(text_encoder, ids: torch.Tensor, clip_skip: int, *, final_norm: bool = True,
                   hidden_layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode (B, n, 77) ids with a transformers CLIP text model; returns ((B, 77n, C), pooled of chunk 0).

    clip_skip follows the WebUI: 1 = last layer; N > 1 = hidden_states[-N] then the final layer norm.
    `hidden_layer` picks a fixed layer instead (SDXL: penultimate, no final norm)."""
    b, n, t = ids.shape
    flat = ids.reshape(b * n, t).to(text_encoder.device)
    out = text_encoder(input_ids=flat, output_hidden_states=True)
    if hidden_layer is not None:
        hidden = out.hidden_states[hidden_layer]
    elif clip_skip > 1:
        hidden = out.hidden_states[-clip_skip]
        if final_norm:
            hidden = _final_layer_norm(text_encoder)(hidden)
    else:
        hidden = out.last_hidden_state
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    pooled = pooled.reshape(b, n, -1)[:, 0]
    return hidden.reshape(b, n * t, -1), pooled


def _final_layer_norm(text_encoder):
    # transformers 4 keeps it under .text_model; transformers 5 puts it on the model itself.
    inner = getattr(text_encoder, "text_model", text_encoder)
    return inner.final_layer_norm
