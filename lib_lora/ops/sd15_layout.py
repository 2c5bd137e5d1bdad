"""The parameter names and shapes of an SD1.x checkpoint (ldm layout), scalable down for tests.

With the defaults this is Stable Diffusion 1.5's UNet and CLIP ViT-L text encoder
(320/640/1280 channels, 768-wide context, 12 text layers; the VAE is left out:
nothing here reads it). Smaller numbers give a tiny checkpoint with the same
names, which the tests use. Used by the extraction benchmark to build a
random SD1.5-sized pair without downloading anything.
"""
from __future__ import annotations

UNET = "model.diffusion_model."
TE = "cond_stage_model.transformer.text_model."


def _res_block(prefix: str, c_in: int, c_out: int, emb: int) -> dict[str, tuple[int, ...]]:
    shapes = {
        f"{prefix}.in_layers.0.weight": (c_in,), f"{prefix}.in_layers.0.bias": (c_in,),
        f"{prefix}.in_layers.2.weight": (c_out, c_in, 3, 3), f"{prefix}.in_layers.2.bias": (c_out,),
        f"{prefix}.emb_layers.1.weight": (c_out, emb), f"{prefix}.emb_layers.1.bias": (c_out,),
        f"{prefix}.out_layers.0.weight": (c_out,), f"{prefix}.out_layers.0.bias": (c_out,),
        f"{prefix}.out_layers.3.weight": (c_out, c_out, 3, 3), f"{prefix}.out_layers.3.bias": (c_out,),
    }
    if c_in != c_out:
        shapes[f"{prefix}.skip_connection.weight"] = (c_out, c_in, 1, 1)
        shapes[f"{prefix}.skip_connection.bias"] = (c_out,)
    return shapes


def _transformer(prefix: str, c: int, context: int) -> dict[str, tuple[int, ...]]:
    block = f"{prefix}.transformer_blocks.0"
    shapes = {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
              f"{prefix}.proj_in.weight": (c, c, 1, 1), f"{prefix}.proj_in.bias": (c,),
              f"{prefix}.proj_out.weight": (c, c, 1, 1), f"{prefix}.proj_out.bias": (c,)}
    for attn, kv_dim in (("attn1", c), ("attn2", context)):
        shapes[f"{block}.{attn}.to_q.weight"] = (c, c)
        shapes[f"{block}.{attn}.to_k.weight"] = (c, kv_dim)
        shapes[f"{block}.{attn}.to_v.weight"] = (c, kv_dim)
        shapes[f"{block}.{attn}.to_out.0.weight"] = (c, c)
        shapes[f"{block}.{attn}.to_out.0.bias"] = (c,)
    for norm in ("norm1", "norm2", "norm3"):
        shapes[f"{block}.{norm}.weight"] = (c,)
        shapes[f"{block}.{norm}.bias"] = (c,)
    shapes.update({f"{block}.ff.net.0.proj.weight": (8 * c, c), f"{block}.ff.net.0.proj.bias": (8 * c,),
                   f"{block}.ff.net.2.weight": (c, 4 * c), f"{block}.ff.net.2.bias": (c,)})
    return shapes


def _input_side(ch: list[int], emb: int, context: int) -> tuple[dict, list[int]]:
    shapes = {f"{UNET}input_blocks.0.0.weight": (ch[0], 4, 3, 3), f"{UNET}input_blocks.0.0.bias": (ch[0],)}
    skips, c, index = [ch[0]], ch[0], 1
    for level, c_out in enumerate(ch + [ch[-1]]):
        has_attention = level < len(ch)
        for _ in range(2):
            shapes.update(_res_block(f"{UNET}input_blocks.{index}.0", c, c_out, emb))
            c = c_out
            if has_attention:
                shapes.update(_transformer(f"{UNET}input_blocks.{index}.1", c, context))
            skips.append(c)
            index += 1
        if level < len(ch):
            shapes[f"{UNET}input_blocks.{index}.0.op.weight"] = (c, c, 3, 3)
            shapes[f"{UNET}input_blocks.{index}.0.op.bias"] = (c,)
            skips.append(c)
            index += 1
    return shapes, skips


def _output_side(ch: list[int], skips: list[int], emb: int, context: int) -> dict:
    shapes, c, index = {}, ch[-1], 0
    for level, c_out in enumerate(reversed(ch + [ch[-1]])):
        has_attention = level > 0
        for layer in range(3):
            shapes.update(_res_block(f"{UNET}output_blocks.{index}.0", c + skips.pop(), c_out, emb))
            c = c_out
            if has_attention:
                shapes.update(_transformer(f"{UNET}output_blocks.{index}.1", c, context))
            if layer == 2 and level < len(ch):
                sub = 2 if has_attention else 1
                shapes[f"{UNET}output_blocks.{index}.{sub}.conv.weight"] = (c, c, 3, 3)
                shapes[f"{UNET}output_blocks.{index}.{sub}.conv.bias"] = (c,)
            index += 1
    return shapes


def unet_shapes(base: int = 320, context: int = 768) -> dict[str, tuple[int, ...]]:
    ch, emb = [base, 2 * base, 4 * base], 4 * base
    shapes = {f"{UNET}time_embed.0.weight": (emb, base), f"{UNET}time_embed.0.bias": (emb,),
              f"{UNET}time_embed.2.weight": (emb, emb), f"{UNET}time_embed.2.bias": (emb,)}
    inputs, skips = _input_side(ch, emb, context)
    shapes.update(inputs)
    shapes.update(_res_block(f"{UNET}middle_block.0", ch[-1], ch[-1], emb))
    shapes.update(_transformer(f"{UNET}middle_block.1", ch[-1], context))
    shapes.update(_res_block(f"{UNET}middle_block.2", ch[-1], ch[-1], emb))
    shapes.update(_output_side(ch, skips, emb, context))
    shapes.update({f"{UNET}out.0.weight": (base,), f"{UNET}out.0.bias": (base,),
                   f"{UNET}out.2.weight": (4, base, 3, 3), f"{UNET}out.2.bias": (4,)})
    return shapes


def text_encoder_shapes(width: int = 768, layers: int = 12, vocab: int = 49408) -> dict[str, tuple[int, ...]]:
    shapes = {f"{TE}embeddings.token_embedding.weight": (vocab, width),
              f"{TE}embeddings.position_embedding.weight": (77, width)}
    for n in range(layers):
        layer = f"{TE}encoder.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}.self_attn.{proj}.weight"] = (width, width)
            shapes[f"{layer}.self_attn.{proj}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}.{norm}.weight"] = (width,)
            shapes[f"{layer}.{norm}.bias"] = (width,)
        shapes.update({f"{layer}.mlp.fc1.weight": (4 * width, width), f"{layer}.mlp.fc1.bias": (4 * width,),
                       f"{layer}.mlp.fc2.weight": (width, 4 * width), f"{layer}.mlp.fc2.bias": (width,)})
    shapes[f"{TE}final_layer_norm.weight"] = (width,)
    shapes[f"{TE}final_layer_norm.bias"] = (width,)
    return shapes


def sd1_shapes(base: int = 320, context: int = 768, te_layers: int = 12,
               vocab: int = 49408) -> dict[str, tuple[int, ...]]:
    """Every UNet and text-encoder parameter of an SD1.x checkpoint (SD1.5 with the defaults)."""
    return {**text_encoder_shapes(context, te_layers, vocab), **unet_shapes(base, context)}


def attention_projection_names(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The UNet's attention projection weights (128 in SD1.5: 16 transformers x 8)."""
    return [n for n in shapes if n.startswith(UNET) and ".attn" in n and n.endswith(
        ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight"))]
