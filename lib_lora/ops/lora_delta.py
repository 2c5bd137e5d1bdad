"""A LoRA/LyCORIS file's modules and the weight change each one makes, scaled as the WebUI scales it.

`group_modules` splits a file's tensors by module key (the part before the first
'.'); `ModuleWeights.delta()` rebuilds dW with the WebUI's scale, alpha / dim
(reference/webui-api.md 2.3: dim from lora_down / hada_w1_b / lokr_w1_b|w2_b;
without alpha or dim the scale is `scale` or 1.0). LoRA/LoCon (also CP with
lora_mid, and PEFT lora_A/lora_B), LoHa, LoKr and full `diff` modules are
supported; the rebuild formulas of LoHa, LoKr and CP come from
lycoris.functional (imported only when such a module is met: it is slow to
import). DoRA and the rarer types (IA3, OFT, GLoRA, norm) are refused with a
message, because their change depends on the base weight or is not a sum.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import NetworkFileError
from ..networks.detect import module_kind
from ..networks.network_file import PEFT_TO_KOHYA


@dataclass
class ModuleWeights:
    """The tensors of one module of a LoRA file, e.g. key 'lora_unet_..._to_q' with parts
    {'lora_down.weight': (r, in), 'lora_up.weight': (out, r), 'alpha': ()}."""
    key: str
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def algo(self) -> str:
        """networks.detect's algorithm, with LoCon as 'lora' (the same up/down math on a conv)."""
        algo = module_kind(self.parts).algo
        return "lora" if algo == "locon" else algo

    def dim(self) -> int | None:
        return module_kind(self.parts).rank

    def scale(self) -> float:
        """alpha / dim when both exist, else the module's `scale`, else 1.0 (the WebUI's rule)."""
        alpha, dim = self.parts.get("alpha"), self.dim()
        if alpha is not None and dim:
            return float(alpha) / dim
        if "scale" in self.parts:
            return float(self.parts["scale"])
        return 1.0

    def is_plain_lora(self) -> bool:
        """Up/down factors only (no CP mid): the form concatenation and the fast SVD need."""
        return self.algo == "lora" and "lora_mid.weight" not in self.parts

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(up (out, r), down (r, in*kh*kw)) in fp32, unscaled; only for plain LoRA modules."""
        up, down = self.parts["lora_up.weight"], self.parts["lora_down.weight"]
        return up.float().reshape(up.shape[0], -1), down.float().reshape(down.shape[0], -1)

    def out_in_shape(self) -> tuple[int, ...]:
        """The shape of the layer weight the module changes, as far as the file tells it."""
        if self.is_plain_lora():
            up, down = self.parts["lora_up.weight"], self.parts["lora_down.weight"]
            return (up.shape[0], *down.shape[1:])
        return tuple(self.delta().shape)

    def delta(self, device: str = "cpu") -> torch.Tensor:
        """dW in fp32 with the WebUI's scale (alpha / dim), before the user's weight."""
        check_supported(self)
        try:
            return self._delta(device)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as err:      # factors whose shapes do not fit together (a damaged file)
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(self.parts.items()))
            raise NetworkFileError(f"Module {self.key}'s tensors do not fit together ({shapes})",
                                   fix="The file is damaged or was edited by hand; use the file as it was saved"
                                   ) from err

    def _delta(self, device: str) -> torch.Tensor:
        p = {k: v.to(device, torch.float32) for k, v in self.parts.items()}
        scale = self.scale()
        algo = self.algo
        if algo == "full":
            return p["diff"] * scale
        if algo == "lora":
            if "lora_mid.weight" not in p:
                up, down = p["lora_up.weight"], p["lora_down.weight"]
                product = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
                return product.reshape(up.shape[0], *down.shape[1:]) * scale
            from lycoris.functional import locon
            return locon.diff_weight(p["lora_down.weight"], p["lora_up.weight"], p["lora_mid.weight"],
                                     gamma=scale, backend="torch")
        if algo == "loha":
            from lycoris.functional import loha
            return loha.diff_weight(p["hada_w1_b"], p["hada_w1_a"], p["hada_w2_b"], p["hada_w2_a"],
                                    p.get("hada_t1"), p.get("hada_t2"), gamma=scale, backend="torch")
        from lycoris.functional import lokr
        return lokr.kron_weight(p.get("lokr_w1"), p.get("lokr_w1_a"), p.get("lokr_w1_b"), p.get("lokr_w2"),
                                p.get("lokr_w2_a"), p.get("lokr_w2_b"), p.get("lokr_t2"), scale=scale,
                                backend="torch")


def check_supported(module: ModuleWeights) -> None:
    algo = module.algo
    if "dora_scale" in module.parts:  # either layout: per output row, or the older per input column
        layout = "per input column" if module_kind(module.parts).dora_per_input else "per output row"
        raise NetworkFileError(f"Module {module.key} is DoRA (magnitude {layout}), whose change depends on "
                               "the base weight",
                               where=module.key, fix="Merge DoRA files in the WebUI at generation time, "
                               "or train/extract a plain LoRA")
    if algo not in ("lora", "loha", "lokr", "full"):
        parts = ", ".join(sorted(module.parts))
        raise NetworkFileError(f"Module {module.key} is of type {algo} ({parts}), which this tool cannot merge",
                               where=module.key, fix="Use LoRA, LoCon, LoHa, LoKr or full-diff files")


def group_modules(tensors: dict[str, torch.Tensor], where: str = "") -> dict[str, ModuleWeights]:
    """{module key: ModuleWeights} from a file's flat tensors; PEFT names become lora_down/lora_up."""
    modules: dict[str, ModuleWeights] = {}
    for name, tensor in tensors.items():
        if name.startswith("bundle_emb."):
            continue  # bundled textual-inversion embeddings are no weight change
        key, _, part = name.partition(".")
        if not part:
            raise NetworkFileError(f"Tensor {name!r} has no module part (expected '<module>.<part>')", where=where,
                                   fix="This does not look like a LoRA file; check that the right file was given")
        part = PEFT_TO_KOHYA.get(part, part)
        modules.setdefault(key, ModuleWeights(key)).parts[part] = tensor
    for module in modules.values():
        check_module_tensors(module, where)
    return modules


def check_module_tensors(module: ModuleWeights, where: str = "") -> None:
    """Values a merge or resize can use: finite numbers (a LoRA whose training diverged holds NaN,
    and an SVD of it fails deep in torch) and up/down factors whose ranks agree."""
    for part, tensor in module.parts.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NetworkFileError(f"Module {module.key} holds NaN or infinite values in {part}", where=where,
                                   fix="The file is damaged (often a run whose loss became NaN); use an earlier "
                                       "epoch's file")
    up, down = module.parts.get("lora_up.weight"), module.parts.get("lora_down.weight")
    if up is not None and down is not None and "lora_mid.weight" not in module.parts \
            and (up.dim() < 2 or up.shape[1] != down.shape[0]):
        raise NetworkFileError(f"Module {module.key} has lora_up of shape {tuple(up.shape)} and lora_down of shape "
                               f"{tuple(down.shape)}, whose ranks differ", where=where,
                               fix="The file is damaged or was edited by hand; use the file as it was saved")
