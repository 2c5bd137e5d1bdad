"""The tab's runner inside the WebUI: lib_lora.webui.jobs runs, plus what the tab shows live.

jobs.RunManager queues a run behind txt2img, borrows the loaded model and
reports through shared.state. The tab also wants the loss/LR history, sample
images, pause and save-now, and the WebUI's progress protocol (a task id that
/internal/progress knows, so requestProgress draws the progress bar). This
adapter passes exactly that to jobs.RunManager.start (extra hooks, sampler, task
id), so a tab run takes the same path as an API run, VRAM check included; runs
it starts are also listed by the HTTP API, which reads jobs.manager.
"""
from __future__ import annotations

from typing import Any

from lib_lora.webui.jobs import RunManager, manager as api_manager
from lib_lora.webui.runs import RunHistory, RunView


class TabRunManager(RunManager):
    """jobs.RunManager plus each run's history (loss/LR, samples, pause, save-now)."""

    def __init__(self):
        super().__init__()
        self.histories: dict[str, RunHistory] = {}


class WebUIRunner:
    """Same methods as runs.LocalRunner, over TabRunManager."""

    def __init__(self):
        self.manager = TabRunManager()

    @property
    def runs(self) -> dict[str, RunView]:
        return {run_id: self._view(run_id) for run_id in self.manager.runs}

    def start(self, cfg: Any, task_id: str = "") -> RunView:
        from lib_lora.evaluation.samples import make_sampler
        history = RunHistory(cfg.output.output_dir, cfg.output.output_name)

        def sampler(model):   # called inside the run, after output_dir became the Lora folder
            return make_sampler(model, cfg.output.output_dir, cfg.output.output_name, cfg.model.clip_skip,
                                cfg.dataset.max_token_length, on_images=history.add_samples)

        record = self.manager.start(cfg, extra_hooks=[history], sampler=sampler, task_id=task_id)
        self.manager.histories[record.run_id] = history
        api_manager.runs[record.run_id] = record
        return self._view(record.run_id)

    def _view(self, run_id: str) -> RunView:
        record = self.manager.get(run_id)
        history = self.manager.histories.get(run_id) or RunHistory()
        state = "paused" if record.state == "running" and history.pause else record.state
        return RunView(run_id, record.output_name, history.output_dir, state, record.error,
                       list(record.files), history)

    def get(self, run_id: str) -> RunView:
        return self._view(run_id)

    def cancel(self, run_id: str) -> RunView:
        self.manager.cancel(run_id)
        self.manager.histories[run_id].pause = False
        return self._view(run_id)

    def set_paused(self, run_id: str, paused: bool) -> RunView:
        self.manager.get(run_id)
        self.manager.histories[run_id].pause = paused
        return self._view(run_id)

    def save_now(self, run_id: str) -> RunView:
        self.manager.get(run_id)
        self.manager.histories[run_id].save_now = True
        return self._view(run_id)
