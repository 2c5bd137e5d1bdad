"""Write a random-weight SD1.5 (~2 GB) or SDXL-base (~7 GB) checkpoint (ldm/sgm layout, fp16
safetensors) for a genuine WebUI.

Runs in the WebUI's venv: the UNet and VAE are the WebUI's own ldm classes built from its
configs/v1-inference.yaml, the text encoder is transformers' CLIPTextModel with the ViT-L/14
config. ldm starts some output projections at zero (zero_module: every ResBlock's last conv,
every SpatialTransformer's proj_out, the UNet's final conv); left at zero the UNet always
predicts zero and no LoRA could change an image, so those are re-initialised like any conv.
The key names and shapes are checked against our own SD1.5 table (lib_lora/ops/sd15_layout.py).
SDXL is built by sdxl_checkpoint.py (meta device, one tensor at a time) and checked by our
single-file loader's layout detection (lib_lora/models/checkpoint_layout.py).

    python tools/genuine_webui/make_checkpoint.py --webui /path/to/webui --out /path/to/model.safetensors \
        [--family sd15|sdxl]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def build_state_dict(webui: Path, seed: int) -> dict[str, torch.Tensor]:
    from omegaconf import OmegaConf
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(webui / "repositories" / "stable-diffusion-stability-ai"))
    from ldm.util import instantiate_from_config

    params = OmegaConf.load(webui / "configs" / "v1-inference.yaml").model.params
    torch.manual_seed(seed)
    parts = {"model.diffusion_model.": instantiate_from_config(params.unet_config),
             "first_stage_model.": instantiate_from_config(params.first_stage_config),
             "cond_stage_model.transformer.": CLIPTextModel(CLIPTextConfig(
                 hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                 max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu", vocab_size=49408))}
    state = {}
    for prefix, module in parts.items():
        reinit_zero_weights(module)
        state.update({prefix + k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()
                      if v.is_floating_point()})
        state.update({prefix + k: v.contiguous() for k, v in module.state_dict().items() if not v.is_floating_point()})
    return state


def reinit_zero_weights(module: torch.nn.Module) -> int:
    """Give all-zero Linear/Conv weights PyTorch's default init; returns how many were re-initialised."""
    count = 0
    for layer in module.modules():
        weight = getattr(layer, "weight", None)
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) and weight is not None and not weight.any():
            torch.nn.init.kaiming_uniform_(weight.data, a=math.sqrt(5))
            count += 1
    return count


def check_against_our_layout(state: dict[str, torch.Tensor]) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from lib_lora.ops.sd15_layout import sd1_shapes

    for name, shape in sd1_shapes().items():
        if name not in state:
            raise SystemExit(f"our SD1.5 table names {name}, the WebUI's ldm model has no such key")
        if tuple(state[name].shape) != shape:
            raise SystemExit(f"{name}: our table says {shape}, ldm has {tuple(state[name].shape)}")


def check_sdxl_layout(state: dict[str, torch.Tensor]) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from lib_lora.models.checkpoint_layout import detect_layout

    layout = detect_layout(state)
    if layout.family != "sdxl":
        raise SystemExit(f"the SDXL builder wrote a {layout.family} layout")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webui", type=Path, required=True, help="the WebUI folder (with repositories/)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the .safetensors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    args = parser.parse_args()
    from safetensors.torch import save_file

    if args.family == "sdxl":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from sdxl_checkpoint import build_sdxl_state_dict

        state = build_sdxl_state_dict(args.webui, args.seed)
        check_sdxl_layout(state)
    else:
        state = build_state_dict(args.webui, args.seed)
        check_against_our_layout(state)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(args.out)
    print(f"{args.out}: {len(state)} tensors, {args.out.stat().st_size / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
