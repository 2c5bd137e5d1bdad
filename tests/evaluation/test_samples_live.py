"""Sample images every N epochs: in the tab while the run still trains, and kept beside the run.

End to end on the tiny model: the tab (standalone backend) starts a real run; the Train
section's own poll handler - what the page calls every 1.5 s - must show epoch 1's sample
while training goes on (Pause is pressed the moment it arrives, so "still training" is
certain, not a race), and every sampled epoch's PNG stays in <output_dir>/samples afterwards."""
from __future__ import annotations

import threading
import time

from PIL import Image

from lib_lora import train_job
from lib_lora.config import TrainConfig
from lib_lora.train_job import TrainRun

NAME = "live_samples"


def _dataset(root):
    concept = root / "train" / "1_lrsq"
    concept.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (200, 30 + 40 * i, 20)).save(concept / f"{i}.png")
        (concept / f"{i}.txt").write_text("lrsq, red", encoding="utf-8")
    return str(concept.parent)


def _config(train_dir: str) -> TrainConfig:
    cfg = TrainConfig()
    d, n, t, o, s = cfg.dataset, cfg.network, cfg.training, cfg.output, cfg.sample
    d.train_dir, d.resolution, d.enable_bucket = train_dir, 64, False
    n.dim, n.alpha = 4, 4.0
    t.epochs, t.batch_size, t.optimizer, t.lr_scheduler, t.mixed_precision = 2, 2, "AdamW", "constant", "no"
    t.min_snr_gamma, t.device = 0.0, "cpu"
    o.output_name, o.save_state = NAME, False
    s.every_n_epochs, s.prompts, s.width, s.height, s.steps = 1, ["lrsq, smile"], 64, 64, 3
    return cfg


def _poll_handler(blocks):
    """The Train section's refresh handler: run id -> (progress, chart, gallery, state, files)."""
    poll = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "train_lora_poll")
    [index] = [i for i, d in enumerate(blocks.config["dependencies"]) if d["targets"] == [poll._id]]
    return blocks.fns[index].fn


def _wait(condition, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_samples_show_while_training_and_stay_beside_the_run(tmp_path, monkeypatch):
    from lib_lora.ui.backend import standalone_backend
    from lib_lora.ui.tab import build_tab
    arrived = threading.Event()
    add_samples = TrainRun.add_samples
    backend = standalone_backend(tmp_path / "data")

    def add_and_pause(run, epoch, paths):
        add_samples(run, epoch, paths)
        if epoch == 1:
            [job] = backend.jobs().list(train_job.KIND)
            train_job.pause(job)        # the user presses Pause as epoch 1's sample appears
            arrived.set()
    monkeypatch.setattr(TrainRun, "add_samples", add_and_pause)
    poll = _poll_handler(build_tab(backend))
    job = train_job.start(backend.jobs(), backend.training, _config(_dataset(tmp_path)))

    _wait(lambda: (arrived.is_set() and job.state == "paused") or not job.active)
    _, _, gallery, state, _ = poll(job.id)
    assert state == "paused", job.error                   # shown while the run is still going
    assert gallery == [(str(backend.lora_dir / "samples" / f"{NAME}-e000001-p0.png"), "epoch 1")]

    train_job.resume(backend.jobs(), job)
    _wait(lambda: not job.active)
    _, _, gallery, state, _ = poll(job.id)
    assert state == "finished", job.error
    assert [caption for _, caption in gallery] == ["epoch 1", "epoch 2"]
    kept = sorted(p.name for p in (backend.lora_dir / "samples").glob("*.png"))
    assert kept == [f"{NAME}-e00000{e}-p0.png" for e in (1, 2)]
    assert all(Image.open(backend.lora_dir / "samples" / k).size == (64, 64) for k in kept)
