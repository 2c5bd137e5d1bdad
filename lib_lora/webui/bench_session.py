"""The bench's WebUI path: SD1.5 as the WebUI holds it (a real `ldm` LatentDiffusion, the WebUI's text-encoder
wrapper), trained through model_bridge.training_session inside the WebUI stand-in (tests/webui_stub).

The model: the stand-in's tiny SD1 LatentDiffusion as the shell (its noise schedule, its
FrozenCLIPEmbedder look-alike and tokenizer), its UNet, VAE and text transformer replaced by
real-size ones with random weights in half precision that the bench builds and passes in
(bench/models.py: ldm's UNetModel and AutoencoderKL from v1-inference.yaml, the ViT-L/14
text transformer), loaded the way the stand-in's sd_models.load_model does (to the device,
hijacked, set as shared.sd_model). The memory tracker is active from before the session is
entered, so a copy of the base weights made by the bridge shows in the figures. SDXL: sgm has
no package and the PyPI ldm's UNetModel takes one transformer depth for every level (SDXL's
are 0, 2 and 10), so SDXL has no WebUI-path figure; the headless SDXL figure stands in for it.
This is the door's half of the bench: it imports the bench back in no way (the builders and
the measurement come in as callables) and the repository's tests/ not as a module; the
stand-in is found on disk at run time, so this path needs a repository checkout.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

# (dtype, fake mode or None) -> (ldm UNetModel, ldm AutoencoderKL, CLIP text transformer), the bench's builder
BuildParts = Callable[[torch.dtype, Any], "tuple[torch.nn.Module, ...]"]

REPO_ROOT = Path(__file__).resolve().parents[2]
STUB_DIR = REPO_ROOT / "tests" / "webui_stub"


@contextlib.contextmanager
def stand_in_webui():
    """The stand-in's `modules` importable (as tests/webui/conftest.py sets it up), removed afterwards."""
    saved_path, saved_env = list(sys.path), os.environ.get("TRAIN_LORA_STUB_ROOT")
    os.environ["TRAIN_LORA_STUB_ROOT"] = tempfile.mkdtemp(prefix="lib_lora_bench_webui_")
    sys.path[:0] = [str(STUB_DIR), str(REPO_ROOT)]
    try:
        from modules import shared   # noqa: F401  (the stand-in)
        yield
    finally:
        from modules import sd_hijack
        sd_hijack.undo_optimizations()
        for name in [n for n, m in sys.modules.items() if n.split(".")[0] in ("modules", "launch", "networks")
                     and str(getattr(m, "__file__", "") or "").startswith(str(STUB_DIR))]:
            del sys.modules[name]
        sys.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("TRAIN_LORA_STUB_ROOT", None)
        else:
            os.environ["TRAIN_LORA_STUB_ROOT"] = saved_env


def build_sd15_ldm(dtype: torch.dtype, fake_mode, build_parts: BuildParts) -> torch.nn.Module:
    """An SD1.5-size LatentDiffusion: the stand-in's tiny SD1 model as the shell (its schedule buffers,
    its text-encoder wrapper and tokenizer), its UNet, VAE and text transformer replaced by the
    real-size ones `build_parts(dtype, fake_mode)` returns."""
    from modules import sd_models

    shell = sd_models.build_tiny_model("sd1")
    unet, vae, text_transformer = build_parts(dtype, fake_mode)
    shell.model.diffusion_model, shell.first_stage_model = unet, vae
    shell.cond_stage_model.transformer = text_transformer
    shell.eval()
    shell.requires_grad_(False)
    return shell


def load_as_webui(sd_model: torch.nn.Module) -> None:
    """What the stand-in's sd_models.load_model does after building a model."""
    from modules import script_callbacks, sd_hijack, sd_models

    sd_model.sd_checkpoint_info = sd_models.select_checkpoint()
    sd_model.sd_model_checkpoint = sd_model.sd_checkpoint_info.filename
    sd_model.sd_model_hash = sd_model.sd_checkpoint_info.shorthash
    sd_model.model_type = sd_models.ModelType.SD1
    sd_model.alphas_cumprod_original = None
    sd_models.send_model_to_device(sd_model)
    sd_hijack.model_hijack.hijack(sd_model)
    sd_models.model_data.set_sd_model(sd_model)
    sd_models.model_data.was_loaded_at_least_once = True
    script_callbacks.model_loaded_callback(sd_model)


def webui_run(model_name: str, cfg: Any, dtype: torch.dtype, mode: Any, tracker: Any, measure: Any,
              build_parts: BuildParts):
    """Train `cfg` on an SD1.5-size ldm model (weights in `dtype`, parts from `build_parts`) through the
    model bridge; `measure(model)` is the bench's own run-and-measure over the borrowed model. Both are
    passed in, so this door module does not import the bench back."""
    from lib_lora.errors import LoraError

    if model_name != "sd15":
        raise LoraError(f"The WebUI path has no {model_name} model: sgm is not installable and the PyPI ldm "
                        "UNet cannot take SDXL's per-level transformer depths", where="bench --path webui",
                        fix="Use --path headless for SDXL (the same UNet shapes)")
    with stand_in_webui():
        from modules import shared
        from lib_lora.webui.model_bridge import training_session

        sd_model = build_sd15_ldm(dtype, mode, build_parts)
        with (mode or contextlib.nullcontext()):
            load_as_webui(sd_model)
        tracker.add_base([sd_model])
        with (mode or contextlib.nullcontext()), tracker, training_session(shared.sd_model, shared.opts, cfg) as model:
            if mode is not None:
                model.vae_fingerprint = lambda: "fake"   # hashes weight bytes, which fake weights do not have
            return measure(model)
