"""A pause saves the run's state even when the user turned output.save_state off (a paused run must
stay resumable); that pause-only file is the run's own and goes when the run ends finished, cancelled
or failed, but stays while the run ended paused (it resumes from it) and whenever save_state is on."""
from __future__ import annotations

import pytest

from lib_lora.training import train
from lib_lora.training.hooks import PauseGate
from lib_lora.training.saving import state_file
from test_training_pause import PauseOnce, _config


class EndsThePause(PauseGate):
    """Ends the run during the pause: cancelled (the user stops it), paused (the host lets it end in
    memory, to resume from the file later) or failed (an error in the pause)."""

    def __init__(self, hooks: PauseOnce, how: str):
        super().__init__()
        self.hooks, self.how = hooks, how

    def hold(self, point):
        if self.how == "failed":
            raise RuntimeError("the pause broke")
        self.hooks.stopping = self.how == "cancelled"
        return False


class StoppablePause(PauseOnce):
    stopping = False

    def should_stop(self):
        return self.stopping


def _run(model, dataset, out, save_state: bool, how: str):
    cfg = _config(dataset, out)
    cfg.output.save_state = save_state
    hooks = StoppablePause(resume_when_paused=how == "finished")
    gate = PauseGate() if how == "finished" else EndsThePause(hooks, how)
    if how == "failed":
        with pytest.raises(RuntimeError):
            train(cfg, model, [hooks], pause_gate=gate)
        return None
    return train(cfg, model, [hooks], pause_gate=gate)


@pytest.mark.parametrize("how", ["finished", "cancelled", "failed"])
def test_the_pause_only_state_file_goes_when_the_run_ends(tiny_model, dataset, tmp_path, how):
    result = _run(tiny_model, dataset, tmp_path, save_state=False, how=how)
    if result is not None:
        assert result.stopped_reason == ("" if how == "finished" else how)
    assert not state_file(tmp_path, "t").exists()


def test_a_run_that_ends_paused_keeps_its_state_file(tiny_model, dataset, tmp_path):
    assert _run(tiny_model, dataset, tmp_path, save_state=False, how="paused").stopped_reason == "paused"
    assert state_file(tmp_path, "t").is_file()


@pytest.mark.parametrize("how", ["finished", "cancelled"])
def test_a_state_file_the_user_asked_for_stays(tiny_model, dataset, tmp_path, how):
    _run(tiny_model, dataset, tmp_path, save_state=True, how=how)
    assert state_file(tmp_path, "t").is_file()


def test_the_run_resumed_from_its_pause_file_removes_it_when_it_finishes(tiny_model, dataset, tmp_path):
    """The WebUI's run that ended paused goes on later from the pause's file (a new attempt of the same
    run): that attempt ends the run, so the file goes then; a file the user asked for stays."""
    assert _run(tiny_model, dataset, tmp_path, save_state=False, how="paused").stopped_reason == "paused"
    cfg = _config(dataset, tmp_path)
    cfg.output.save_state = False
    assert train(cfg, tiny_model, resume_dir=tmp_path).stopped_reason == ""
    assert not state_file(tmp_path, "t").exists()


def test_a_run_resumed_from_a_state_file_the_user_asked_for_keeps_it(tiny_model, dataset, tmp_path):
    assert _run(tiny_model, dataset, tmp_path, save_state=True, how="paused").stopped_reason == "paused"
    cfg = _config(dataset, tmp_path)
    cfg.output.save_state = False
    assert train(cfg, tiny_model, resume_dir=tmp_path).stopped_reason == ""
    assert state_file(tmp_path, "t").is_file()
