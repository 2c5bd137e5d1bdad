"""Captions -> token chunks the way the WebUI feeds its text encoders, minus emphasis parsing.

One implementation for both backends (diffusers_adapter and ldm_text), following
the WebUI's sd_hijack_clip: token ids are cut into pieces of at most 75; when a
cut falls within 20 tokens after a comma, the words after that comma move to the
next piece (the WebUI's comma_padding_backtrack), so a tag is not split across
chunks. Each piece is framed as [BOS] + tokens + EOS padding + [EOS] = 77 ids;
encoders whose pad id differs (OpenCLIP pads with 0) get it after the first EOS.
A batch gets as many chunks as its longest caption needs, capped by
max_token_length / 75; shorter captions get empty chunks, as in the WebUI.
Unlike the WebUI we never parse `(a:1.2)` emphasis or BREAK: booru tags such as
`shimakaze (azur lane)` are text, not syntax.
"""
from __future__ import annotations

import torch

CHUNK = 75                   # tokens per chunk between BOS and EOS
COMMA_BACKTRACK = 20         # the WebUI's default opts.comma_padding_backtrack


def split_into_chunks(ids: list[int], comma_id: int | None, backtrack: int = COMMA_BACKTRACK) -> list[list[int]]:
    """Split token ids into chunks of at most 75, moving the words after the last comma to the
    next chunk when the cut falls within `backtrack` tokens of that comma (WebUI semantics)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    last_comma = -1
    for token in ids:
        if comma_id is not None and token == comma_id:
            last_comma = len(current)
        elif (backtrack and len(current) == CHUNK and last_comma != -1
              and len(current) - last_comma <= backtrack):
            cut = last_comma + 1
            chunks.append(current[:cut])
            current, last_comma = current[cut:], -1
        if len(current) == CHUNK:
            chunks.append(current)
            current, last_comma = [], -1
        current.append(token)
    if current or not chunks:
        chunks.append(current)
    return chunks


def frame_chunk(chunk: list[int], bos: int, eos: int, pad: int | None = None) -> list[int]:
    """[BOS] + tokens + EOS padding + [EOS]; with a pad id other than EOS (OpenCLIP: 0) every
    id after the first EOS becomes that pad id, as the WebUI does."""
    tokens = [bos] + chunk + [eos] * (CHUNK - len(chunk)) + [eos]
    if pad is not None and pad != eos:
        first_end = tokens.index(eos)
        tokens = tokens[:first_end + 1] + [pad] * (len(tokens) - first_end - 1)
    return tokens


def chunk_id_lists(id_lists: list[list[int]], max_token_length: int, *, bos: int, eos: int,
                   pad: int | None = None, comma_id: int | None = None) -> torch.Tensor:
    """Token ids per caption (no special tokens) -> (B, k, 77); k = the most chunks any caption
    needs, at most max_token_length / 75. Captions beyond the cap are cut."""
    max_chunks = max(1, max_token_length // CHUNK)
    per_caption = [split_into_chunks(ids, comma_id)[:max_chunks] for ids in id_lists]
    count = max(len(chunks) for chunks in per_caption)
    framed = [[frame_chunk(c, bos, eos, pad) for c in chunks + [[]] * (count - len(chunks))]
              for chunks in per_caption]
    return torch.tensor(framed, dtype=torch.long)


def comma_id_of(tokenizer) -> int | None:
    """The CLIP BPE id of a comma ending a word, or None for a tokenizer without one."""
    token_id = tokenizer.convert_tokens_to_ids(",</w>")   # get_vocab() would copy the whole vocabulary
    return None if token_id is None or token_id == tokenizer.unk_token_id else token_id


def chunk_token_ids(tokenizer, captions: list[str], max_token_length: int,
                    pad_id: int | None = None) -> torch.Tensor:
    """Returns (B, n_chunks, 77) token ids for a transformers CLIP tokenizer; see chunk_id_lists."""
    ids = tokenizer(list(captions), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return chunk_id_lists(ids, max_token_length, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                          pad=pad_id, comma_id=comma_id_of(tokenizer))


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
