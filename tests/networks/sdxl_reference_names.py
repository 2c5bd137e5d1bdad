"""What outside readers see of a full-size SDXL base, written from their sources (not from lib_lora):

- `sgm_unet_layers()`: every Linear/Conv2d of sgm's SDXL UNet (generative-models
  configs/inference/sd_xl_base.yaml: model_channels 320, channel_mult [1, 2, 4], num_res_blocks 2,
  attention_resolutions [4, 2], transformer_depth [1, 2, 10] (middle 10), context_dim 2048,
  adm_in_channels 2816, use_linear_in_transformer) with its weight shape; the WebUI and ComfyUI
  hold the UNet under these names (diffusion_model.<name>).
- `webui_te_modules()`: the WebUI's network_layer_mapping names of SDXL's two text encoders
  (`0_` + sgm's FrozenCLIPEmbedder's transformer, `1_` + FrozenOpenCLIPEmbedder2's open_clip
  model, whose attention is one nn.MultiheadAttention per block), with weight shapes.
- `comfyui_key_map()`: comfy/lora.py's model_lora_keys_unet (lora_unet_ + the UNet's state-dict
  key with '.' -> '_') and model_lora_keys_clip (lora_te1_/lora_te2_text_model_encoder_layers_
  {b}_{mlp_fc1|mlp_fc2|self_attn_q_proj|k_proj|v_proj|out_proj} for clip_l and clip_g).
"""
from __future__ import annotations

CONTEXT, TIME_EMBED, ADM = 2048, 1280, 2816
CLIP_L_LAYERS, CLIP_L_WIDTH = 12, 768
CLIP_G_LAYERS, CLIP_G_WIDTH = 32, 1280


def _resblock(name: str, c_in: int, c_out: int) -> dict[str, tuple[int, ...]]:
    layers = {f"{name}.in_layers.2": (c_out, c_in, 3, 3), f"{name}.emb_layers.1": (c_out, TIME_EMBED),
              f"{name}.out_layers.3": (c_out, c_out, 3, 3)}
    if c_in != c_out:
        layers[f"{name}.skip_connection"] = (c_out, c_in, 1, 1)
    return layers


def _transformer(name: str, ch: int, depth: int) -> dict[str, tuple[int, ...]]:
    layers = {f"{name}.proj_in": (ch, ch), f"{name}.proj_out": (ch, ch)}
    for d in range(depth):
        block = f"{name}.transformer_blocks.{d}"
        for attn, kv in (("attn1", ch), ("attn2", CONTEXT)):
            layers.update({f"{block}.{attn}.to_q": (ch, ch), f"{block}.{attn}.to_k": (ch, kv),
                           f"{block}.{attn}.to_v": (ch, kv), f"{block}.{attn}.to_out.0": (ch, ch)})
        layers.update({f"{block}.ff.net.0.proj": (8 * ch, ch), f"{block}.ff.net.2": (ch, 4 * ch)})
    return layers


def sgm_unet_layers() -> dict[str, tuple[int, ...]]:
    mult, depth, base = (1, 2, 4), (0, 2, 10), 320   # level 0 has no attention (attention_resolutions [4, 2])
    layers = {"time_embed.0": (TIME_EMBED, base), "time_embed.2": (TIME_EMBED, TIME_EMBED),
              "label_emb.0.0": (TIME_EMBED, ADM), "label_emb.0.2": (TIME_EMBED, TIME_EMBED),
              "input_blocks.0.0": (base, 4, 3, 3), "out.2": (4, base, 3, 3)}
    skips, ch, index = [base], base, 1
    for level, m in enumerate(mult):
        for _ in range(2):
            layers.update(_resblock(f"input_blocks.{index}.0", ch, base * m))
            ch = base * m
            if depth[level]:
                layers.update(_transformer(f"input_blocks.{index}.1", ch, depth[level]))
            skips.append(ch)
            index += 1
        if level < len(mult) - 1:
            layers[f"input_blocks.{index}.0.op"] = (ch, ch, 3, 3)
            skips.append(ch)
            index += 1
    layers.update(_resblock("middle_block.0", ch, ch))
    layers.update(_transformer("middle_block.1", ch, 10))
    layers.update(_resblock("middle_block.2", ch, ch))
    index = 0
    for level in reversed(range(len(mult))):
        for i in range(3):
            layers.update(_resblock(f"output_blocks.{index}.0", ch + skips.pop(), base * mult[level]))
            ch = base * mult[level]
            sub = 1
            if depth[level]:
                layers.update(_transformer(f"output_blocks.{index}.1", ch, depth[level]))
                sub = 2
            if level and i == 2:
                layers[f"output_blocks.{index}.{sub}.conv"] = (ch, ch, 3, 3)
            index += 1
    return layers


def webui_te_modules() -> dict[str, tuple[int, ...]]:
    """network_layer_mapping keys of the text encoders -> weight shape (MHA: out_proj's)."""
    out = {}
    for n in range(CLIP_L_LAYERS):
        head, w = f"0_transformer_text_model_encoder_layers_{n}", CLIP_L_WIDTH
        out.update({f"{head}_self_attn_{p}_proj": (w, w) for p in "qkv"})
        out.update({f"{head}_self_attn_out_proj": (w, w), f"{head}_mlp_fc1": (4 * w, w), f"{head}_mlp_fc2": (w, 4 * w)})
    for n in range(CLIP_G_LAYERS):
        head, w = f"1_model_transformer_resblocks_{n}", CLIP_G_WIDTH
        out.update({f"{head}_attn": (w, w), f"{head}_attn_out_proj": (w, w), f"{head}_mlp_c_fc": (4 * w, w),
                    f"{head}_mlp_c_proj": (w, 4 * w)})
    return out


LORA_CLIP_PARTS = ("mlp_fc1", "mlp_fc2", "self_attn_k_proj", "self_attn_q_proj", "self_attn_v_proj",
                   "self_attn_out_proj")


def comfyui_key_map() -> set[str]:
    keys = {"lora_unet_" + name.replace(".", "_") for name in sgm_unet_layers()}
    for prefix, count in (("lora_te1", CLIP_L_LAYERS), ("lora_te2", CLIP_G_LAYERS)):
        keys |= {f"{prefix}_text_model_encoder_layers_{b}_{c}" for b in range(count) for c in LORA_CLIP_PARTS}
    return keys
