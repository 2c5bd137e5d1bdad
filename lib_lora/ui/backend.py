"""Where the tab's actions go: the WebUI (its model, queue, Lora folder) or a standalone process.

The tab talks only to a `TabBackend`, which says what its host offers by capability: folders,
the process's one job registry (shared with the HTTP API inside the WebUI), the training host
(lib_lora/train_job.py: where a run's files go, the model it borrows, how it pauses), a grid
renderer, and optional extras (captioners, upscalers, the WebUI's paste into txt2img).
`standalone_backend` trains the tiny or a diffusers model in this process, on a registry of its
own; the WebUI's backend (lib_lora/webui/backend.py) runs jobs under the WebUI's queue lock and
renders grids with the WebUI's txt2img.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from lib_lora.config import SampleConfig, TrainConfig
from lib_lora.jobs import Job, Jobs, LocalHost
from lib_lora.path_policy import PathPolicy
from lib_lora.train_job import Borrowed, TrainHost, TrainRun, WaitInPlace

GridFn = Callable[[list[Path], SampleConfig, Path, Any], Path]


@dataclass
class TabBackend:
    data_dir: Path                # settings, presets, grids, uploaded datasets
    lora_dir: Path                # where runs write their files
    tagger_models_dir: Path
    training: TrainHost           # the Lora folder, the model and the pause of a training run here
    render_grid: GridFn           # the caller holds the host (an exclusive job)
    jobs: Callable[[], Jobs]      # the process's one job registry
    path_policy: PathPolicy | None = None                       # the standalone server's (None: not confined)
    policy_source: Callable[[], PathPolicy] | None = None       # the host's live policy (the WebUI's settings)
    paste_to_txt2img: Callable[[Any, Any], bool] | None = None  # (button, infotext): the WebUI's "Send to txt2img"
    # What the host offers beyond the defaults (None: WD14 only, Lanczos only)
    captioners: Callable[[], list[str]] | None = None           # TaggingConfig.captioner names, e.g. blip
    make_captioner: Callable[[str], Any] | None = None          # name -> a tagging Captioner (None: WD14)
    upscalers: Callable[[], list[str]] | None = None            # PrepConfig.upscaler choices
    upscale_hook: Callable[[str], Any] | None = None            # name -> run_prep's upscaler (None: Lanczos)
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


class LocalTrainHost:
    """Training in this process (the standalone server): the shared model; a pause waits in place.
    Files go to the config's folder, or to the server's Lora folder when the form left the default."""
    pause_frees_model = False

    def __init__(self, lora_dir: Path, model: SharedModel):
        self.lora_dir, self.model = lora_dir, model
        self.last_config: TrainConfig | None = None     # grids render on the model the last run trained on

    def lora_folder(self, cfg: TrainConfig) -> str:
        chosen = cfg.output.output_dir
        folder = Path(chosen if chosen and chosen != "output" else self.lora_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    @contextlib.contextmanager
    def borrow(self, job: Job, run: TrainRun) -> Iterator[Borrowed]:
        self.last_config = run.cfg
        yield Borrowed(self.model.get(run.cfg), WaitInPlace(job, run))


def standalone_backend(data_dir: str | Path) -> TabBackend:
    """The standalone server's backend: one registry on a plain lock (runs and grids take turns on the model)."""
    from lib_lora.evaluation.render_diffusers import render_epoch_weight_grid

    data_dir = Path(data_dir).resolve()
    shared = SharedModel()
    training = LocalTrainHost(data_dir / "lora", shared)
    registry = Jobs(LocalHost())

    def render_grid(files: list[Path], sample: SampleConfig, out: Path, progress=None) -> Path:
        model = shared.get(training.last_config or TrainConfig())
        return render_epoch_weight_grid(model, files, sample, out, progress)

    return TabBackend(data_dir, data_dir / "lora", data_dir / "models" / "wd14_tagger", training, render_grid,
                      jobs=lambda: registry)
