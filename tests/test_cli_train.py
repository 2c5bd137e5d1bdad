"""`python -m lib_lora train`: the plan and --dry-run, a run, then --resume with --more-epochs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lib_lora.cli import main
from lib_lora.config import dumps_train_config

sys.path.insert(0, str(Path(__file__).parent / "training"))
from training_fixtures import fast_config, write_dataset  # noqa: E402


def _config(tmp_path: Path, epochs: int = 2) -> Path:
    data = write_dataset(tmp_path / "data", n_images=4)
    cfg = fast_config(data, tmp_path / "out", epochs=epochs, num_threads=1)
    path = tmp_path / "run.toml"
    path.write_text(dumps_train_config(cfg), encoding="utf-8")
    return path


def test_dry_run_prints_the_plan_and_stops(tmp_path, capsys):
    config = _config(tmp_path, epochs=5)
    assert main(["train", "--config", str(config), "--dry-run", "--set", "training.batch_size=4"]) == 0
    printed = capsys.readouterr().out
    assert "Plan: 4 images" in printed and "thing: 4 images x 2 repeats" in printed
    assert "5 epochs x 2 steps = 10 steps (batch 4" in printed  # 4 images x 2 repeats x 5 epochs / 4
    assert not (tmp_path / "out").exists()


def test_train_then_resume_for_more_epochs_continues_counters_and_names(tmp_path, capsys):
    config = _config(tmp_path, epochs=2)
    assert main(["train", "--config", str(config)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("t-*.safetensors")) == \
        ["t-000001.safetensors", "t-000002.safetensors"]
    assert main(["train", "--resume", str(tmp_path / "out"), "--more-epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Resumed at epoch 2, step 8" in printed
    summary = json.loads(printed[printed.rindex("{\n"):])
    assert summary["steps"] == 12 and summary["files"][-1].endswith("t-000003.safetensors")
    assert "epochs = 3" in (tmp_path / "out" / "t.toml").read_text(encoding="utf-8")  # the next resume adds to 3
    # the epoch log the best-epoch hint reads spans both sessions, one row per epoch
    rows = json.loads((tmp_path / "out" / "t-epochs.json").read_text(encoding="utf-8"))
    assert [(r["epoch"], r["step"], Path(r["file"]).name) for r in rows] == \
        [(1, 4, "t-000001.safetensors"), (2, 8, "t-000002.safetensors"), (3, 12, "t-000003.safetensors")]


def test_a_cli_run_with_a_validation_split_gives_the_hint_its_losses(tmp_path):
    from lib_lora.evaluation.run_hint import validation_signal

    config = _config(tmp_path, epochs=2)
    assert main(["train", "--config", str(config), "--set", "dataset.validation_split=0.25"]) == 0
    signal = validation_signal(tmp_path / "out", "t")
    assert sorted(signal.values) == [1, 2] and all(v > 0 for v in signal.values.values()), signal.why_not


def test_resume_of_a_folder_without_a_run_says_what_to_pass(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no config to resume with" in err and "--config" in err


def test_runs_sharing_a_folder_keep_their_own_state_and_resume_asks_which(tmp_path, capsys):
    """In the WebUI every run writes to the Lora folder: one run must not overwrite another's state."""
    config = _config(tmp_path, epochs=1)
    assert main(["train", "--config", str(config)]) == 0
    assert main(["train", "--config", str(config), "--set", "output.output_name=u"]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "state").iterdir()) == ["t.state", "u.state"]
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--more-epochs", "1"]) == 2
    assert "several runs" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--config", str(out / "u.toml"), "--more-epochs", "1"]) == 0
    assert "Resumed at epoch 1, step 4" in capsys.readouterr().out
    assert (out / "u-000002.safetensors").exists() and not (out / "t-000002.safetensors").exists()
