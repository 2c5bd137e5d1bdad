"""Where the tab's actions go: the WebUI (its model, queue, Lora folder) or a standalone process.

The tab talks only to a `TabBackend`: folders, a runner with start / get /
cancel / set_paused / save_now, and a grid renderer. `standalone_backend`
trains the tiny or a diffusers model in this process; the WebUI's backend
(lib_lora/webui/backend.py) runs jobs under the WebUI's queue lock and renders
grids with the WebUI's txt2img.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lib_lora.config import SampleConfig, TrainConfig
from lib_lora.errors import LoraError
from lib_lora.path_policy import PathPolicy

GridFn = Callable[[list[Path], SampleConfig, Path, Any], Path]


@dataclass
class TabBackend:
    kind: str                     # "standalone" | "webui"
    data_dir: Path                # settings, presets, grids, uploaded datasets
    lora_dir: Path                # where runs write their files
    tagger_models_dir: Path
    runner: Any
    render_grid: GridFn
    path_policy: PathPolicy | None = None                       # the standalone server's (None: not confined)
    policy_source: Callable[[], PathPolicy] | None = None       # the host's live policy (the WebUI's settings)
    paste_to_txt2img: Callable[[Any, Any], bool] | None = None  # (button, infotext): the WebUI's "Send to txt2img"
    # What the host offers beyond the defaults (None: WD14 only, Lanczos only, a registry of the tab's own)
    captioners: Callable[[], list[str]] | None = None           # TaggingConfig.captioner names, e.g. blip
    make_captioner: Callable[[str], Any] | None = None          # name -> a tagging Captioner (None: WD14)
    upscalers: Callable[[], list[str]] | None = None            # PrepConfig.upscaler choices
    upscale_hook: Callable[[str], Any] | None = None            # name -> run_prep's upscaler (None: Lanczos)
    jobs: Callable[[], Any] | None = None                       # the process's lib_lora.jobs.Jobs registry
    host: str = "standalone"      # options.HOSTS: which options the forms show (the WebUI overrides some)

    def current_path_policy(self) -> PathPolicy:
        """Which folders the tab's fields may name now."""
        if self.policy_source is not None:
            return self.policy_source()
        return self.path_policy or PathPolicy((), False)

    @property
    def datasets_root(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def grids_dir(self) -> Path:
        return self.data_dir / "grids"

    @property
    def presets_dir(self) -> Path:
        return self.data_dir / "presets"

    @property
    def form_file(self) -> Path:
        return self.data_dir / "last_form.json"

    def prepare(self, cfg: TrainConfig) -> TrainConfig:
        """Settings the backend decides: inside the WebUI, files go to its Lora folder."""
        if self.kind == "webui" or not cfg.output.output_dir or cfg.output.output_dir == "output":
            cfg.output.output_dir = str(self.lora_dir)
        return cfg

    def tagger_choices(self) -> list[str]:
        """Local tagger folders (model.onnx + selected_tags.csv) first, then the usual hub models."""
        local = []
        if self.tagger_models_dir.is_dir():
            local = sorted(str(p.parent) for p in self.tagger_models_dir.glob("*/model.onnx"))
        return local + ["SmilingWolf/wd-v1-4-convnext-tagger-v2", "SmilingWolf/wd-v1-4-moat-tagger-v2",
                        "SmilingWolf/wd-swinv2-tagger-v3"]


class SharedModel:
    """One model for training, sampling and grids in the standalone server, built on first use."""

    def __init__(self):
        self._model = None
        self._key = None
        self.busy = threading.Lock()     # training and grids take turns on the same weights

    def get(self, cfg: TrainConfig):
        """The model of `cfg` ([model] and the training device/precision), loaded again only when those change."""
        from lib_lora.models.base_model import load_base_model, resolve_device
        m, t = cfg.model, cfg.training
        key = (m.pretrained or "tiny", m.config_dir, m.v_parameterization, resolve_device(t.device), t.mixed_precision)
        if self._model is None or self._key != key:
            self._model = None          # free the old one before loading the next
            self._model = load_base_model(m, key[3], t.mixed_precision)
            self._key = key
        return self._model


def standalone_backend(data_dir: str | Path) -> TabBackend:
    from lib_lora.evaluation.render_diffusers import render_epoch_weight_grid
    from lib_lora.evaluation.samples import make_sampler
    from lib_lora.ui.runs import LocalRunner

    data_dir = Path(data_dir).resolve()
    shared = SharedModel()

    def model_for(cfg: TrainConfig):
        runner.last_config = cfg     # grids render on the model the run trained on
        return shared.get(cfg)

    def sampler_for(model, cfg: TrainConfig, history):
        return make_sampler(model, cfg.output.output_dir, cfg.output.output_name, cfg.model.clip_skip,
                            cfg.dataset.max_token_length, on_images=history.add_samples)

    runner = LocalRunner(model_for, sampler_for)

    def render_grid(files: list[Path], sample: SampleConfig, out: Path, progress=None) -> Path:
        if any(r.active for r in runner.runs.values()):
            raise LoraError("A training run is using the model", where="Evaluate",
                            fix="Draw the grid when the run has finished (or cancel it)")
        model = shared.get(getattr(runner, "last_config", None) or TrainConfig())
        return render_epoch_weight_grid(model, files, sample, out, progress)

    return TabBackend("standalone", data_dir, data_dir / "lora", data_dir / "models" / "wd14_tagger",
                      runner, render_grid)
