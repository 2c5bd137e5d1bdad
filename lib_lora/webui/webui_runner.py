"""The tab's runner inside the WebUI: lib_lora.webui.jobs runs, plus what the tab shows live.

jobs.RunManager queues a run behind txt2img, borrows the loaded model and
reports through shared.state. The tab also wants the loss/LR history, sample
images, save-now, and the WebUI's progress protocol (a task id that
/internal/progress knows, so requestProgress draws the progress bar). This
adapter passes exactly that to jobs.RunManager.start (extra hooks, sampler, task
id), so a tab run takes the same path as an API run, VRAM check included. It uses
the one manager the HTTP API reads, so a run is one record whoever started it, and
pause, resume and cancel act on it the same way from the tab and the API.
"""
from __future__ import annotations

from typing import Any

from lib_lora.webui.jobs import RunManager
from lib_lora.ui.runs import RunHistory, RunView


class WebUIRunner:
    """Same methods as runs.LocalRunner, over a jobs.RunManager (the HTTP API's by default)."""

    def __init__(self, manager: RunManager | None = None):
        if manager is None:
            from lib_lora.webui.jobs import manager
        self.manager = manager
        self.histories: dict[str, RunHistory] = {}

    @property
    def runs(self) -> dict[str, RunView]:
        return {run_id: self._view(run_id) for run_id in list(self.manager.runs)}

    def start(self, cfg: Any, task_id: str = "") -> RunView:
        from lib_lora.evaluation.samples import make_sampler
        history = RunHistory(cfg.output.output_dir, cfg.output.output_name)

        def sampler(model):   # called inside the run, after output_dir became the Lora folder
            return make_sampler(model, cfg.output.output_dir, cfg.output.output_name, cfg.model.clip_skip,
                                cfg.dataset.max_token_length, on_images=history.add_samples)

        record = self.manager.start(cfg, extra_hooks=[history], sampler=sampler, task_id=task_id)
        self.histories[record.run_id] = history
        return self._view(record.run_id)

    def _view(self, run_id: str) -> RunView:
        record = self.manager.get(run_id)
        history = self.histories.get(run_id) or RunHistory(output_name=record.output_name)
        return RunView(run_id, record.output_name, history.output_dir, record.state, record.error,
                       list(record.files), history, record.notice)

    def get(self, run_id: str) -> RunView:
        return self._view(run_id)

    def run_config(self, run_id: str) -> Any:
        """The config the run trains with (its samples, output name, trigger word)."""
        self.manager.get(run_id)
        return self.manager.specs[run_id].cfg

    def cancel(self, run_id: str) -> RunView:
        self.manager.cancel(run_id)
        return self._view(run_id)

    def set_paused(self, run_id: str, paused: bool) -> RunView:
        if paused:
            self.manager.pause(run_id)
        else:
            self.manager.resume(run_id)
        return self._view(run_id)

    def save_now(self, run_id: str) -> RunView:
        self.manager.save_now(run_id)
        return self._view(run_id)
