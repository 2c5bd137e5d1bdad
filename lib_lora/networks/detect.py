"""What a LoRA/LyCORIS file holds: each module's algorithm, rank and alpha, read from tensor names and shapes.

The one reader behind `inspect`, headless rendering (which rebuilds a network to
load a file into, `network_config_for`) and ops (merge, resize). The rules are
the WebUI's loaders' (reference/webui-api.md 2.3): rank = rows of `lora_down`
(PEFT `lora_A`), of `hada_w1_b`, of `lokr_w2_b` else `lokr_w1_b`; a LoKr with
full w1 and w2 has no rank (None: the WebUI then scales by 1.0 and ignores
alpha). 'locon' is a LoRA module on a conv whose kernel is larger than 1x1.
LoHa and low-rank LoKr fold a conv's kernel into their input side, so their
shapes cannot tell a 3x3 conv from a linear layer: `network_config_for` takes
the model's 3x3 conv keys for that.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch

from ..config import NetworkConfig

# part name -> algorithm, for the types no loader of ours rebuilds
OTHER_PARTS = {"diff": "full", "oft_blocks": "oft", "oft_diag": "oft", "on_input": "ia3", "a1.weight": "glora",
               "w_norm": "norm", "b_norm": "norm"}


@dataclass(frozen=True)
class ModuleKind:
    algo: str                 # 'lora' | 'locon' | 'loha' | 'lokr' | 'full' | 'oft' | 'ia3' | 'glora' | 'norm' | 'unknown'
    rank: int | None          # None: no rank (full-matrix LoKr, full diff, unknown)
    alpha: float | None       # None: the file has no alpha for this module
    dora: bool = False        # has dora_scale
    conv3x3: bool | None = None   # a conv with a kernel > 1x1; None when the shapes do not tell
    tucker: bool = False      # a CP/Tucker core (lora_mid, hada_t1, lokr_t2)
    dora_per_input: bool = False  # dora_scale in the older per-input-column layout (1, in[, 1, 1])

    @property
    def label(self) -> str:
        """Shown by inspect: the algorithm, '+dora' when it has a DoRA magnitude ('+dora(per-input)' in
        the older layout that LyCORIS' default, peft and diffusers do not read)."""
        return self.algo + ("+dora(per-input)" if self.dora_per_input else "+dora" if self.dora else "")


def _has_kernel(tensor: torch.Tensor | None) -> bool:
    return tensor is not None and tensor.dim() == 4 and tuple(tensor.shape[2:]) != (1, 1)


def module_kind(parts: dict[str, torch.Tensor]) -> ModuleKind:
    """Algorithm, rank, alpha and shape facts of one module, from its tensors by part name
    ('lora_down.weight', 'hada_w1_b', 'alpha', ...)."""
    kind = _module_kind(parts)
    return replace(kind, dora_per_input=dora_is_per_input(parts.get("dora_scale")))


def dora_is_per_input(dora_scale: torch.Tensor | None) -> bool:
    """A magnitude of shape (1, in[, 1, 1]) with in > 1 is per input column (the WebUI v1.10.1 layout);
    (out, 1[, 1, 1]) is per output row (LyCORIS' default, peft, ComfyUI, Forge). A layer with one
    output row reads the same either way and counts as per row."""
    return dora_scale is not None and dora_scale.dim() >= 2 and dora_scale.shape[0] == 1 < dora_scale.shape[1]


def _module_kind(parts: dict[str, torch.Tensor]) -> ModuleKind:
    alpha = float(parts["alpha"].float().item()) if "alpha" in parts else None
    dora = "dora_scale" in parts
    down = parts.get("lora_down.weight", parts.get("lora_A.weight"))
    if down is not None and ("lora_up.weight" in parts or "lora_B.weight" in parts):
        mid = parts.get("lora_mid.weight")
        conv = _has_kernel(down) or _has_kernel(mid)
        return ModuleKind("locon" if conv else "lora", int(down.shape[0]), alpha, dora, conv, mid is not None)
    if "hada_w1_b" in parts or "hada_w1_a" in parts:
        tucker = "hada_t1" in parts
        rank = int(parts["hada_w1_b"].shape[0]) if "hada_w1_b" in parts else None
        return ModuleKind("loha", rank, alpha, dora, True if tucker else None, tucker)
    if any(p.startswith("lokr_") for p in parts):
        low = parts.get("lokr_w2_b", parts.get("lokr_w1_b"))
        tucker = "lokr_t2" in parts
        w2 = parts.get("lokr_w2")
        conv = True if tucker or _has_kernel(w2) else (False if w2 is not None else None)
        return ModuleKind("lokr", None if low is None else int(low.shape[0]), alpha, dora, conv, tucker)
    algo = next((name for part, name in OTHER_PARTS.items() if part in parts), "unknown")
    return ModuleKind(algo, None, alpha, dora)


def group_parts(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{module key: {part name: tensor}}; bundled textual-inversion embeddings are left out."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for full_key, tensor in tensors.items():
        if full_key.startswith("bundle_emb."):
            continue
        module, _, part = full_key.partition(".")
        grouped.setdefault(module, {})[part] = tensor
    return grouped


def network_config_for(tensors: dict[str, torch.Tensor], conv3x3_keys: set[str] | None = None) -> NetworkConfig:
    """A NetworkConfig whose network has the shapes of the file's modules (ours, sd-scripts' or
    LyCORIS'), so the file loads into it. conv3x3_keys: the model's 3x3 conv module keys, which
    LoHa/LoKr shapes cannot tell (without them such modules count as linear)."""
    grouped = group_parts(tensors)
    kinds = {key: module_kind(parts) for key, parts in grouped.items()}

    def is_conv(key: str) -> bool:
        known = kinds[key].conv3x3
        return known if known is not None else key in (conv3x3_keys or set())

    algos = {k.algo for k in kinds.values()}
    cfg = NetworkConfig()
    cfg.algo = "loha" if "loha" in algos else "lokr" if "lokr" in algos else "locon" if "locon" in algos else "lora"
    convs = {key for key in kinds if is_conv(key)}
    for keys_, dim_field, alpha_field in ((set(kinds) - convs, "dim", "alpha"), (convs, "conv_dim", "conv_alpha")):
        rank = _common_rank(cfg.algo, [kinds[k] for k in keys_], [grouped[k] for k in keys_])
        if rank is not None:
            setattr(cfg, dim_field, rank)
            alphas = Counter(kinds[k].alpha for k in keys_ if kinds[k].alpha is not None)
            # no alpha in the file: the WebUI scales by 1.0, which alpha = rank gives
            setattr(cfg, alpha_field, alphas.most_common(1)[0][0] if alphas else float(rank))
    cfg.targets = "attn_ff_conv" if convs else "attn_ff"
    cfg.train_text_encoder = any(k.startswith("lora_te") for k in kinds)
    cfg.train_unet = any(k.startswith("lora_unet") for k in kinds)
    cfg.dora = any(k.dora for k in kinds.values())
    if cfg.algo == "lokr":
        cfg.lokr_factor = _lokr_factor(list(grouped.values()))
    return cfg


def _common_rank(algo: str, kinds: list[ModuleKind], parts: list[dict[str, torch.Tensor]]) -> int | None:
    """The most common rank; for a LoKr whose w2 is full everywhere, a rank at which our LoKr
    module keeps w2 full too (rank >= half w2's larger side)."""
    ranks = Counter(k.rank for k in kinds if k.rank is not None)
    if ranks:
        return ranks.most_common(1)[0][0]
    if algo == "lokr":
        sides = [max(p["lokr_w2"].shape[:2]) for p in parts if "lokr_w2" in p]
        return max(sides) if sides else None
    return None


def _lokr_factor(modules: list[dict[str, torch.Tensor]]) -> int:
    """lokr_factor that splits every layer's output side as the file did: -1 (most square) when
    that fits, else the factor its largest w1 shows; -1 when neither fits every module."""
    from lycoris.functional.general import factorization

    splits = []
    for parts in modules:
        w1, w2 = parts.get("lokr_w1"), parts.get("lokr_w2", parts.get("lokr_w2_a"))
        if w1 is not None and w2 is not None:
            splits.append((int(w1.shape[0]), int(w1.shape[0]) * int(w2.shape[0])))
    if not splits:
        return -1
    for factor in (-1, max(rows for rows, _ in splits)):
        if all(factorization(out, factor)[0] == rows for rows, out in splits):
            return factor
    return -1


def conv3x3_keys(targets: list) -> set[str]:
    """File keys of the 3x3 (kernel > 1) convs of these NetworkTargets: what `network_config_for`
    needs to place a LoHa/LoKr file's conv modules."""
    from .network import select_layers

    probe = NetworkConfig(algo="locon", targets="attn_ff_conv")
    return {key for target in targets if target.kind == "unet"
            for key, _layer, conv3x3 in select_layers(target, probe) if conv3x3}
