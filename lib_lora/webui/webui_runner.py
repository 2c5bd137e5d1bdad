"""The tab's runner inside the WebUI: lib_lora.webui.jobs runs, plus what the tab shows live.

jobs.RunManager queues a run behind txt2img, borrows the loaded model and
reports through shared.state. The tab also wants the loss/LR history, sample
images, pause and save-now, and the WebUI's progress protocol (a task id that
/internal/progress knows, so requestProgress draws the progress bar). This
adapter adds exactly that by extending the run's hooks; runs it starts are also
listed by the HTTP API, which reads jobs.manager.
"""
from __future__ import annotations

import os
from typing import Any

from lib_lora.webui.jobs import RunManager, RunRecord, manager as api_manager
from lib_lora.webui.runs import RunHistory, RunView


class TabRunManager(RunManager):
    def __init__(self):
        super().__init__()
        self.histories: dict[str, RunHistory] = {}
        self.task_ids: dict[str, str] = {}

    def _train(self, cfg: Any, record: RunRecord, shared: Any) -> None:
        from modules import progress

        from lib_lora.evaluation.samples import make_sampler
        from lib_lora.training import train
        from lib_lora.webui.model_bridge import training_session
        from lib_lora.webui.progress import WebUIProgress
        task_id = self.task_ids.get(record.run_id)
        if task_id:
            progress.start_task(task_id)
        history = self.histories[record.run_id]
        cfg.output.output_dir = shared.cmd_opts.lora_dir
        os.makedirs(cfg.output.output_dir, exist_ok=True)
        try:
            with training_session(shared.sd_model, shared.opts, cfg) as model:
                sampler = make_sampler(model, cfg.output.output_dir, cfg.output.output_name, cfg.model.clip_skip,
                                       cfg.dataset.max_token_length, on_images=history.add_samples)
                result = train(cfg, model, [WebUIProgress(shared.state, record), history], sampler=sampler)
        finally:
            if task_id:
                progress.finish_task(task_id)
        record.files = [str(f) for f in result.files]
        record.stopped_reason, record.loss = result.stopped_reason, result.final_loss
        record.state = "cancelled" if result.stopped_reason == "cancelled" else "finished"
        if result.stopped_reason == "nan":
            record.state, record.error = "failed", "The loss became NaN; the last good epoch was kept"


class WebUIRunner:
    """Same methods as runs.LocalRunner, over TabRunManager."""

    def __init__(self):
        self.manager = TabRunManager()

    @property
    def runs(self) -> dict[str, RunView]:
        return {run_id: self._view(run_id) for run_id in self.manager.runs}

    def start(self, cfg: Any, task_id: str = "") -> RunView:
        from modules import progress
        record = self.manager.new_record(cfg)
        self.manager.histories[record.run_id] = RunHistory(cfg.output.output_dir, cfg.output.output_name)
        if task_id:
            self.manager.task_ids[record.run_id] = task_id
            progress.add_task_to_queue(task_id)
        api_manager.runs[record.run_id] = record
        import threading
        threading.Thread(target=self.manager.run_sync, args=(cfg, record), name=f"train-lora-{record.run_id}",
                         daemon=True).start()
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
