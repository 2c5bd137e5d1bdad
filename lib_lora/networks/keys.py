"""Module names <-> LoRA file keys, as sd-scripts writes them, for every model naming.

Pure string functions: no torch, no model objects. A model's module names come
in five spellings (diffusers, ldm for SD1/SD2, sgm for SDXL, transformers CLIP
v4 or v5, OpenCLIP); the file always uses sd-scripts' keys so that the WebUI,
Forge, ComfyUI, diffusers and sd-scripts all read it:

- SD1/SD2 UNet: diffusers-style  `lora_unet_down_blocks_0_attentions_0_proj_in`
  (an ldm name is first mapped to its diffusers twin);
- SDXL UNet: compvis-style  `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`
  (a diffusers name is first mapped to its sgm twin);
- text encoders: `<prefix>_text_model_encoder_layers_N_self_attn_q_proj` (HF
  names; OpenCLIP's `resblocks.N.attn` becomes q/k/v/out_proj, `mlp.c_fc` fc1).

The ldm <-> diffusers block arithmetic is the WebUI's convert_diffusers_name_to_compvis
table (reference/webui-api.md 2.3) generalised to any `layers_per_block`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

UNET_PREFIX = "lora_unet"
TE_PREFIXES = ("lora_te", "lora_te1", "lora_te2")

# ldm ResBlock child -> diffusers ResnetBlock2D child.
RESNET_LDM_TO_DIFFUSERS = {
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}
RESNET_DIFFUSERS_TO_LDM = {v: k for k, v in RESNET_LDM_TO_DIFFUSERS.items()}
# Top-level ldm modules outside the blocks (only for completeness of the maps).
TOP_LDM_TO_DIFFUSERS = {
    "input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2", "out.0": "conv_norm_out", "out.2": "conv_out",
    "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
}
TOP_DIFFUSERS_TO_LDM = {v: k for k, v in TOP_LDM_TO_DIFFUSERS.items()}

# Which UNet modules sd-scripts trains, on diffusers-style names (see selection in network.py).
UNET_ATTN_RE = re.compile(r"(^|\.)attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\.attn[12]\."
                          r"(to_q|to_k|to_v|to_out\.0))$")
UNET_FF_RE = re.compile(r"(^|\.)attentions\.\d+\.transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)$")
UNET_CONV_BLOCK_RE = re.compile(r"(^|\.)(resnets\.\d+\.(conv1|conv2|time_emb_proj|conv_shortcut)"
                                r"|downsamplers\.0\.conv|upsamplers\.0\.conv)$")
TE_LINEAR_RE = re.compile(r"^text_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")

# Multi-word identifiers that survive the '.' -> '_' flattening; used to undo it.
_COMPOUND_WORDS = {
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out",
    "proj_in", "proj_out", "time_emb_proj", "conv_shortcut", "conv_in", "conv_out", "conv_norm_out",
    "input_blocks", "output_blocks", "middle_block", "in_layers", "out_layers", "emb_layers",
    "skip_connection", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj",
    "final_layer_norm", "layer_norm1", "layer_norm2", "time_embedding", "linear_1", "linear_2",
    "add_embedding", "label_emb", "time_embed", "in_proj",
}


@dataclass(frozen=True)
class UNetLayout:
    """What the block arithmetic needs to know about a UNet.

    layers_per_block: resnets per down level (ldm num_res_blocks); 2 for every released SD.
    up_attention_levels: diffusers up_blocks indexes that hold attentions (decides
        whether an ldm upsampler sits at output_blocks.K.1 or .K.2).
    compvis_keys: files use compvis-style UNet keys (SDXL) instead of diffusers-style.
    """
    layers_per_block: int = 2
    up_attention_levels: frozenset[int] = field(default_factory=lambda: frozenset({1, 2, 3}))
    compvis_keys: bool = False

    @classmethod
    def for_family(cls, family: str, layers_per_block: int = 2) -> "UNetLayout":
        if family == "sdxl":
            return cls(layers_per_block, frozenset({0, 1}), True)
        return cls(layers_per_block, frozenset({1, 2, 3}), False)

    @classmethod
    def from_module_names(cls, names: Iterable[str], naming: str) -> "UNetLayout":
        """Infer the layout from a UNet's named_modules() names (any prefix before the blocks)."""
        names = [strip_unet_prefix(n) for n in names]
        if naming == "diffusers":
            per_block = {int(m.group(1)) for n in names if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)$", n))}
            layers = max(per_block) + 1 if per_block else 2
            up_attn = {int(m.group(1)) for n in names if (m := re.match(r"up_blocks\.(\d+)\.attentions\.\d+$", n))}
            sdxl = any(n.startswith("add_embedding") for n in names)
            return cls(layers, frozenset(up_attn), sdxl)
        downs = sorted(int(m.group(1)) for n in names if (m := re.match(r"input_blocks\.(\d+)\.0\.op$", n)))
        if downs:
            layers = downs[0] - 1
        else:  # a single level has no downsampler: every input block after conv_in is one layer
            layers = len({n.split(".")[1] for n in names if re.match(r"input_blocks\.\d+\.", n)}) - 1
        layers = max(layers, 1)
        up_attn = set()
        for n in names:
            m = re.match(r"output_blocks\.(\d+)\.1\.(proj_in|transformer_blocks)", n)
            if m:
                up_attn.add(int(m.group(1)) // (layers + 1))
        return cls(layers, frozenset(up_attn), naming == "sgm")


def strip_unet_prefix(name: str) -> str:
    """Drop wrappers before the UNet's own names ('model.diffusion_model.', 'unet.')."""
    for prefix in ("model.diffusion_model.", "diffusion_model.", "unet."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def ldm_to_diffusers_name(name: str, layers_per_block: int = 2) -> str | None:
    """ldm/sgm UNet module name -> diffusers name; None if it has no diffusers twin.

    e.g. 'input_blocks.1.1.proj_in' -> 'down_blocks.0.attentions.0.proj_in' (layers_per_block 2)."""
    name = strip_unet_prefix(name)
    for ldm, diff in TOP_LDM_TO_DIFFUSERS.items():
        if name == ldm or name.startswith(ldm + "."):
            return diff + name[len(ldm):]
    parts = name.split(".")
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    block, index, sub, rest = parts[0], int(parts[1]), (parts[2:3] or [""])[0], ".".join(parts[3:])
    per_level = layers_per_block + 1
    if block == "input_blocks":
        level, layer = divmod(index - 1, per_level)
        if layer == layers_per_block:  # the level's last input block is its downsampler
            return _join(f"down_blocks.{level}.downsamplers.0.conv", rest[len("op"):]) if rest.startswith("op") else None
        return _block_child(f"down_blocks.{level}", layer, sub, rest)
    if block == "middle_block":  # middle_block.<0 resnet | 1 attention | 2 resnet>.<child>
        rest = ".".join(parts[2:])
        if index == 1:
            return _join("mid_block.attentions.0", rest)
        return _resnet_child(f"mid_block.resnets.{index // 2}", rest)
    if block == "output_blocks":
        level, layer = divmod(index, per_level)
        if sub in ("1", "2") and (rest == "conv" or rest.startswith("conv.")):  # Upsample: its only child is conv
            return _join(f"up_blocks.{level}.upsamplers.0.conv", rest[len("conv"):])
        return _block_child(f"up_blocks.{level}", layer, sub, rest)
    return None


def _join(head: str, tail: str) -> str:
    tail = tail.lstrip(".")
    return f"{head}.{tail}" if tail else head


def _block_child(head: str, layer: int, sub: str, rest: str) -> str | None:
    if sub == "0":
        return _resnet_child(f"{head}.resnets.{layer}", rest)
    if sub == "1":
        return _join(f"{head}.attentions.{layer}", rest)
    return None


def _resnet_child(head: str, rest: str) -> str | None:
    if not rest:
        return head
    for ldm, diff in RESNET_LDM_TO_DIFFUSERS.items():
        if rest == ldm or rest.startswith(ldm + "."):
            return _join(f"{head}.{diff}", rest[len(ldm):])
    return None


def diffusers_to_ldm_name(name: str, layout: UNetLayout) -> str | None:
    """diffusers UNet module name -> ldm/sgm name; None if it has no ldm twin.

    e.g. 'up_blocks.0.upsamplers.0.conv' -> 'output_blocks.2.2.conv' (SDXL layout)."""
    name = strip_unet_prefix(name)
    for diff, ldm in TOP_DIFFUSERS_TO_LDM.items():
        if name == diff or name.startswith(diff + "."):
            return ldm + name[len(diff):]
    per_level = layout.layers_per_block + 1
    m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(\..+)?$", name)
    if m:
        kind, level, child, layer, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5) or ""
        if child == "downsamplers":
            return f"input_blocks.{(level + 1) * per_level}.0.op" + rest[len(".conv"):] if rest.startswith(".conv") else None
        if child == "upsamplers":
            sub = 2 if level in layout.up_attention_levels else 1
            return f"output_blocks.{level * per_level + layout.layers_per_block}.{sub}" + rest
        index = 1 + level * per_level + layer if kind == "down_blocks" else level * per_level + layer
        block = "input_blocks" if kind == "down_blocks" else "output_blocks"
        return _ldm_child(f"{block}.{index}", child, rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)(\..+)?$", name)
    if m:
        child, layer, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        index = 1 if child == "attentions" else 2 * layer
        return _ldm_child(f"middle_block", child, rest, index)
    return None


def _ldm_child(head: str, child: str, rest: str, sub: int | None = None) -> str | None:
    """`sub` is the middle block's index (its children sit one level higher than in input/output blocks)."""
    if child == "attentions":
        return f"{head}.{1 if sub is None else sub}{rest}"
    head = f"{head}.{0 if sub is None else sub}"
    if not rest:
        return head
    first, _, tail = rest[1:].partition(".")
    ldm = RESNET_DIFFUSERS_TO_LDM.get(first)
    return None if ldm is None else _join(f"{head}.{ldm}", tail)


def unet_key(module_name: str, naming: str, layout: UNetLayout) -> str | None:
    """UNet module name (naming 'diffusers', 'ldm' or 'sgm') -> sd-scripts file key."""
    name = strip_unet_prefix(module_name)
    if layout.compvis_keys:
        body = name if naming in ("ldm", "sgm") else diffusers_to_ldm_name(name, layout)
    else:
        body = name if naming == "diffusers" else ldm_to_diffusers_name(name, layout.layers_per_block)
    return None if body is None else f"{UNET_PREFIX}_{body.replace('.', '_')}"


def hf_clip_canonical_name(module_name: str) -> str | None:
    """transformers CLIP module name (v4 'text_model.encoder...' or v5 'encoder...') -> the v4 name."""
    m = re.search(r"(?:^|\.)encoder\.layers\.(\d+)\.(.+)$", module_name)
    return None if m is None else f"text_model.encoder.layers.{m.group(1)}.{m.group(2)}"


_OPEN_CLIP_TO_HF = {"attn.out_proj": "self_attn.out_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                    "ln_1": "layer_norm1", "ln_2": "layer_norm2"}


def open_clip_canonical_names(module_name: str) -> list[str]:
    """OpenCLIP resblock module name -> HF-style names: four for the attention
    (q, k, v, out: the WebUI needs all four for a MultiheadAttention), else one."""
    m = re.search(r"(?:^|\.)resblocks\.(\d+)\.(.+)$", module_name)
    if m is None:
        return []
    head, rest = f"text_model.encoder.layers.{m.group(1)}", m.group(2)
    if rest == "attn":
        return [f"{head}.self_attn.{p}_proj" for p in ("q", "k", "v", "out")]
    return [f"{head}.{_OPEN_CLIP_TO_HF[rest]}"] if rest in _OPEN_CLIP_TO_HF else []


def te_key(prefix: str, naming: str, module_name: str) -> str | None:
    """Text-encoder module name -> file key; for an OpenCLIP attention use open_clip_mha_keys."""
    if naming == "hf_clip":
        canonical = hf_clip_canonical_name(module_name)
    else:
        names = open_clip_canonical_names(module_name)
        canonical = names[0] if len(names) == 1 else None
    return None if canonical is None else f"{prefix}_{canonical.replace('.', '_')}"


def open_clip_mha_keys(prefix: str, module_name: str) -> list[str]:
    """Keys q, k, v, out of an OpenCLIP `resblocks.N.attn` (nn.MultiheadAttention); [] otherwise."""
    names = open_clip_canonical_names(module_name)
    return [f"{prefix}_{n.replace('.', '_')}" for n in names] if len(names) == 4 else []


def undo_flattening(body: str) -> str:
    """'down_blocks_0_attentions_0_proj_in' -> 'down_blocks.0.attentions.0.proj_in'."""
    tokens, out, i = body.split("_"), [], 0
    while i < len(tokens):
        for width in (3, 2, 1):
            word = "_".join(tokens[i:i + width])
            if width == 1 or word in _COMPOUND_WORDS:
                out.append(word)
                i += width
                break
    return ".".join(out)


def file_key_to_module_name(key: str, naming: str, layout: UNetLayout | None = None) -> str | None:
    """File key (module part, before the first '.') -> module name in `naming`.

    UNet names come back without a wrapper prefix; hf_clip names in v4 form
    ('text_model.encoder...'); open_clip names as 'transformer.resblocks.N.<attn|mlp.c_fc|...>'."""
    layout = layout or UNetLayout()
    prefix, _, body = key.partition("_")
    head, _, body = body.partition("_")
    prefix = f"{prefix}_{head}"
    dotted = undo_flattening(body)
    if prefix == UNET_PREFIX:
        is_ldm = dotted.split(".")[0] in ("input_blocks", "middle_block", "output_blocks")
        if naming == "diffusers":
            return ldm_to_diffusers_name(dotted, layout.layers_per_block) if is_ldm else dotted
        return dotted if is_ldm else diffusers_to_ldm_name(dotted, layout)
    if prefix not in TE_PREFIXES:
        return None
    if naming == "hf_clip":
        return hf_clip_canonical_name(dotted)
    m = re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)$", dotted)
    if m is None:
        return None
    rest = {v: k for k, v in _OPEN_CLIP_TO_HF.items()}.get(m.group(2))
    if rest is None and re.fullmatch(r"self_attn\.[qkv]_proj", m.group(2)):
        rest = "attn"
    return None if rest is None else f"transformer.resblocks.{m.group(1)}.{rest}"


def is_unet_target(diffusers_name: str, targets: str = "attn_ff_conv") -> bool:
    """Whether sd-scripts trains this UNet module (diffusers-style name) under `targets`
    ('attn' | 'attn_ff' | 'attn_ff_conv'); whether a conv block's 3x3 convs count is the caller's choice."""
    name = strip_unet_prefix(diffusers_name)
    if UNET_ATTN_RE.search(name):
        return True
    if UNET_FF_RE.search(name):
        return targets != "attn"
    return targets == "attn_ff_conv" and UNET_CONV_BLOCK_RE.search(name) is not None


# Checkpoint state-dict prefixes of the text encoders: (family, prefix) -> (file prefix, naming).
_CHECKPOINT_TE = {
    ("sd1", "cond_stage_model.transformer."): ("lora_te", "hf_clip"),
    ("sd2", "cond_stage_model.model."): ("lora_te", "open_clip"),
    ("sdxl", "conditioner.embedders.0.transformer."): ("lora_te1", "hf_clip"),
    ("sdxl", "conditioner.embedders.1.model."): ("lora_te2", "open_clip"),
}


def checkpoint_param_to_lora_key(param_name: str, family: str, layers_per_block: int = 2) -> str | None:
    """Full-checkpoint (ldm/sgm) parameter name -> the LoRA module key sd-scripts uses for the
    module that owns it, or None if that module is no LoRA target (norms, embeddings, conv_in...).

    Args:
        param_name: e.g. 'model.diffusion_model.input_blocks.1.1.proj_in.weight' or
            'cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight'.
        family: 'sd1' | 'sd2' | 'sdxl'.
        layers_per_block: ldm num_res_blocks (2 for every released model; tiny test models differ).
    Returns:
        e.g. 'lora_unet_down_blocks_0_attentions_0_proj_in'. UNet 3x3 convs of ResBlocks and
        down/upsamplers are included (LoCon targets). An OpenCLIP fused `attn.in_proj_weight`
        holds three targets: it gives None here; use `checkpoint_in_proj_keys`.
    """
    module, _, leaf = param_name.rpartition(".")
    if leaf not in ("weight", "bias"):
        return None
    if module.startswith("model.diffusion_model."):
        layout = UNetLayout.for_family(family, layers_per_block)
        diffusers = ldm_to_diffusers_name(module, layers_per_block)
        if diffusers is None or not is_unet_target(diffusers):
            return None
        return unet_key(module, "sgm" if family == "sdxl" else "ldm", layout)
    for (fam, prefix), (file_prefix, naming) in _CHECKPOINT_TE.items():
        if fam == family and module.startswith(prefix):
            key = te_key(file_prefix, naming, module[len(prefix):])
            body = key and key[len(file_prefix) + 1:]
            return key if body and TE_LINEAR_RE.match(undo_flattening(body)) else None
    return None


def checkpoint_in_proj_keys(param_name: str, family: str) -> list[str]:
    """OpenCLIP 'attn.in_proj_weight'/'in_proj_bias' -> the q, k, v keys of its three row chunks
    (in that order, each embed_dim rows); [] for any other parameter."""
    module, _, leaf = param_name.rpartition(".")
    if leaf not in ("in_proj_weight", "in_proj_bias"):
        return []
    for (fam, prefix), (file_prefix, naming) in _CHECKPOINT_TE.items():
        if fam == family and naming == "open_clip" and module.startswith(prefix):
            return open_clip_mha_keys(file_prefix, module[len(prefix):])[:3]
    return []
