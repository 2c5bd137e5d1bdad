"""`python -m lib_lora inspect FILE [--base MODEL]`: what a LoRA file holds and whether it fits a model.

`inspect_file(path, base_keys)` is pure (no printing): it reads the file, sums up
algorithm, ranks, alphas, targets and metadata per module, and, given the set of
LoRA keys a base model offers, splits the file's modules into matched and
unmatched. `format_report()` turns that into text. `base_keys_*` build the key
set from a diffusers folder (configs only, no weights loaded), an ldm/sgm
checkpoint (tensor names only) or live NetworkTargets.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from ..checkpoint_io import detect_family
from ..config import NetworkConfig
from ..errors import ModelError
from . import keys
from .detect import group_parts, module_kind
from .network_file import load_network_file
from .target import NetworkTarget


@dataclass
class ModuleSummary:
    key: str            # module part of the file keys, e.g. 'lora_unet_..._to_q'
    algo: str           # detect.ModuleKind.label: 'lora' | 'locon' | 'loha' | 'lokr' | ... (+ '+dora')
    rank: int | None    # None: full-matrix LoKr (no rank; the WebUI then ignores alpha)
    alpha: float | None


@dataclass
class InspectReport:
    path: str
    modules: list[ModuleSummary]
    metadata: dict[str, str]
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    base_checked: bool = False
    dtypes: list[str] = field(default_factory=list)
    num_tensors: int = 0

    @property
    def algorithms(self) -> dict[str, int]:
        return dict(Counter(m.algo for m in self.modules))

    @property
    def parts(self) -> dict[str, int]:
        return dict(Counter(m.key.split("_")[1] for m in self.modules))


def summarise_module(key: str, parts: dict[str, torch.Tensor]) -> ModuleSummary:
    """Algorithm, rank and alpha of one module from its tensors (by weight-part name)."""
    kind = module_kind(parts)
    return ModuleSummary(key, kind.label, kind.rank, kind.alpha)


def inspect_file(path: str | Path, base_keys: Iterable[str] | None = None) -> InspectReport:
    """Read `path` and describe it; with `base_keys` (every LoRA key the base model offers), also
    list which of the file's modules match the model and which do not."""
    tensors, metadata = load_network_file(path)
    grouped = group_parts(tensors)
    modules = [summarise_module(k, grouped[k]) for k in sorted(grouped)]
    report = InspectReport(str(path), modules, metadata, num_tensors=len(tensors),
                           dtypes=sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()}))
    if base_keys is not None:
        offered = set(base_keys)
        report.base_checked = True
        report.matched = [m.key for m in modules if m.key in offered]
        report.unmatched = [m.key for m in modules if m.key not in offered]
    return report


def _rank_text(modules: list[ModuleSummary]) -> str:
    pairs = Counter((m.rank, m.alpha) for m in modules)
    return ", ".join(f"rank {'full' if r is None else r} / alpha {a:g}: {n}" if a is not None else
                     f"rank {'full' if r is None else r}: {n}" for (r, a), n in sorted(pairs.items(), key=str))


def format_report(report: InspectReport, max_listed: int = 20) -> str:
    """Plain-text report: file, algorithm, ranks, targets, metadata, base-model match."""
    lines = [f"File: {report.path}",
             f"Tensors: {report.num_tensors} ({', '.join(report.dtypes)}); modules: {len(report.modules)}",
             "Algorithm: " + ", ".join(f"{a} ({n})" for a, n in sorted(report.algorithms.items())),
             "Targets: " + ", ".join(f"{p} ({n})" for p, n in sorted(report.parts.items())),
             "Ranks: " + _rank_text(report.modules)]
    if report.metadata:
        lines.append("Metadata:")
        for key in sorted(report.metadata):
            value = report.metadata[key]
            if key in ("ss_tag_frequency", "ss_dataset_dirs", "ss_bucket_info") and len(value) > 120:
                value = _summarise_json(value)
            lines.append(f"  {key}: {value if len(value) <= 200 else value[:197] + '...'}")
    else:
        lines.append("Metadata: none")
    if report.base_checked:
        lines.append(f"Base model: {len(report.matched)} of {len(report.modules)} modules match")
        if report.unmatched:
            lines.append(f"Unmatched ({len(report.unmatched)}; the WebUI ignores these):")
            lines += [f"  {k}" for k in report.unmatched[:max_listed]]
            if len(report.unmatched) > max_listed:
                lines.append(f"  ... and {len(report.unmatched) - max_listed} more")
    return "\n".join(lines)


def _summarise_json(value: str) -> str:
    try:
        data = json.loads(value)
    except ValueError:
        return value
    return f"{{{len(data)} entries: {', '.join(list(map(str, data))[:5])}{', ...' if len(data) > 5 else ''}}}"


def base_keys_from_targets(targets: list[Any]) -> set[str]:
    """Every key a network could have on these NetworkTargets (all UNet blocks incl. convs, all TEs)."""
    from .network import select_layers

    cfg = NetworkConfig(algo="locon", targets="attn_ff_conv")
    found: set[str] = set()
    for target in targets:
        for key, layer, _ in select_layers(target, cfg):
            is_mha = isinstance(layer, torch.nn.MultiheadAttention)  # its key is the q/k/v/out stem
            found.update([f"{key}_{p}_proj" for p in ("q", "k", "v", "out")] if is_mha else [key])
    return found


def base_keys_from_checkpoint(path: str | Path) -> set[str]:
    """Keys offered by a single-file ldm/sgm checkpoint (.safetensors), from tensor names only; its
    family by checkpoint_io.detect_family, as extract and merge read it (a file with no known
    text-encoder keys is refused, not taken for SD1)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"The base checkpoint is not a readable safetensors file ({err})", where=str(path),
                         fix="Pass a single-file .safetensors checkpoint (or a diffusers folder) as --base") from None
    family = detect_family(names, str(path))
    downs = sorted(int(n.split(".")[3]) for n in names
                   if n.startswith("model.diffusion_model.input_blocks.") and ".0.op." in n)
    layers = downs[0] - 1 if downs else 2
    found: set[str] = set()
    for name in names:
        key = keys.checkpoint_param_to_lora_key(name, family, layers)
        found.update([key] if key else keys.checkpoint_in_proj_keys(name, family))
    for name in names:  # an OpenCLIP attention's out_proj completes its q/k/v set
        if name.endswith("attn.out_proj.weight"):
            key = keys.checkpoint_param_to_lora_key(name, family, layers)
            found.update([key] if key else [])
    return found


def base_keys_from_diffusers_dir(model_dir: str | Path) -> set[str]:
    """Keys offered by a diffusers model folder; models are built from their configs on the
    meta device, so no weights are read."""
    model_dir = Path(model_dir)
    if not (model_dir / "unet" / "config.json").is_file():
        raise ModelError("Not a diffusers model folder (no unet/config.json)", where=str(model_dir),
                         fix="Pass the folder that holds model_index.json, or a .safetensors checkpoint")
    import diffusers
    import transformers

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(model_dir / "unet"))
        targets = [NetworkTarget("lora_unet", unet, "diffusers", "unet")]
        encoders = [d for d in ("text_encoder", "text_encoder_2") if (model_dir / d / "config.json").is_file()]
        for index, folder in enumerate(encoders):
            config = transformers.CLIPTextConfig.from_pretrained(model_dir / folder)
            model = transformers.CLIPTextModel(config)
            prefix = "lora_te" if len(encoders) == 1 else f"lora_te{index + 1}"
            targets.append(NetworkTarget(prefix, model, "hf_clip", "text_encoder"))
    return base_keys_from_targets(targets)


def add_inspect_args(parser: Any) -> None:
    """Options of `python -m lib_lora inspect` (lib_lora/cli.py wires this in)."""
    parser.add_argument("file", help="LoRA/LyCORIS file (.safetensors, or a legacy tensor-only .pt/.ckpt)")
    parser.add_argument("--base", default=None,
                        help="Base model to match the keys against: a diffusers folder or a .safetensors "
                             "checkpoint; exit code 1 when some modules do not match it")


def run_inspect(args: Any) -> int:
    """CLI run function; the same as inspect_command (kept as the name the CLI table expects)."""
    return inspect_command(args)


def inspect_command(args: Any) -> int:
    """CLI entry: `args.file` (LoRA file), optional `args.base` (diffusers folder or checkpoint).
    Prints the report; returns 0, or 1 when a base was given and some modules do not match it."""
    base_keys = None
    base = getattr(args, "base", None)
    if base:
        base_path = Path(base)
        if not base_path.is_dir() and not (base_path.is_file() and base_path.suffix.lower() == ".safetensors"):
            raise ModelError("The base model is neither a diffusers folder nor a .safetensors checkpoint",
                             where=str(base_path), fix="Check the --base path (a .ckpt is not read: convert it)")
        base_keys = (base_keys_from_diffusers_dir(base_path) if base_path.is_dir()
                     else base_keys_from_checkpoint(base_path))
    report = inspect_file(args.file, base_keys)
    print(format_report(report))
    return 1 if report.base_checked and report.unmatched else 0
