"""What a run writes: epoch files with sd-scripts metadata, the resolved config, resumable state.

File names follow sd-scripts so users' habits and tools keep working:
`<name>-000001.safetensors` per saved epoch, the last epoch included (there is no
separate `<name>.safetensors`); a Save-now writes `<name>-step00000002.safetensors`.
`epoch_file_name` and `list_epoch_files` are the one home of that naming: the grid,
the best-epoch hint and the WebUI's lists read a run's epochs through them.
State (network, optimizer, scheduler, RNG, counters) goes to `<out>/state/<name>.state`,
written atomically, so `train --resume DIR` continues with the same counters.
Each epoch's numbers (file, mean and validation loss) go to `<name>-epochs.json`,
which the best-epoch hint reads whoever started the run (CLI, HTTP API or tab).

`claim_outputs` is where every run (CLI, tab, API) starts writing: it takes the
run lock of the folder and name (run_lock.py: a second run is refused with who
holds it) and a WriteGuard, so everything the run writes lands inside the output
folder and never on the dataset's images or captions or the base model.
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .. import __version__
from ..config import TrainConfig, dumps_train_config
from ..dataset.tags import split_tags
from ..fileio import write_text, write_with
from ..safe_paths import WriteGuard, guarded, remove
from ..networks.metadata import bucket_info, checkpoint_hashes, optimizer_label
from .distributed import world_size
from .optim import parse_optimizer_args, warmup_steps
from .plan import TrainPlan
from .run_lock import output_lock

log = logging.getLogger(__name__)


def _originals(cfg: TrainConfig, plan: TrainPlan) -> list[Path]:
    """The files a run reads and must never write: images, captions, the base model and VAE files."""
    files = [Path(p) for p in (cfg.model.pretrained, getattr(cfg.model, "vae", "")) if p and Path(p).is_file()]
    for sample in plan.train + plan.reg + plan.validation:
        files.append(sample.item.path)
        if sample.item.caption_path is not None:
            files.append(sample.item.caption_path)
    return files


@contextlib.contextmanager
def claim_outputs(cfg: TrainConfig, plan: TrainPlan, out_dir: Path, main_rank: bool = True) -> Iterator[None]:
    """Hold the run lock of (out_dir, output_name) and guard every write of the run (see the module note)."""
    guard = WriteGuard([out_dir], protected=_originals(cfg, plan), purpose="training")
    with output_lock(out_dir, cfg.output.output_name, enabled=main_rank), guarded(guard):
        yield


def epochs_log_file(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}-epochs.json"


def record_epoch(out_dir: Path, name: str, row: dict) -> None:
    """Add one epoch's row to the run's epoch log. Rows of this and later epochs left by an earlier
    attempt (a run resumed before them) are replaced, so the log always matches the files on disk."""
    path = epochs_log_file(out_dir, name)
    try:
        rows = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, ValueError):
        rows = []               # a damaged log is rebuilt from here on rather than stopping the run
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int) and r["epoch"] < row["epoch"]]
    try:
        write_text(path, json.dumps(rows + [row], indent=1))
    except OSError:             # the log serves the hint only; never stop training for it
        log.warning("Train LoRA: cannot write the epoch log %s", path, exc_info=True)


# `<name>-<epoch, 6+ digits>.safetensors`; the name may itself hold dashes (`run-v2-000001` is run-v2's)
_EPOCH_FILE = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6,})\.safetensors$")


def epoch_file_name(name: str, epoch: int) -> str:
    """The file name of a run's epoch: what the trainer writes, what every reader looks for."""
    return f"{name}-{epoch:06d}.safetensors"


def epoch_file(out_dir: str | Path, name: str, epoch: int) -> Path:
    return Path(out_dir) / epoch_file_name(name, epoch)


def parse_epoch_file(path: str | Path) -> tuple[str, int] | None:
    """(run name, epoch) of an epoch file's name, None for any other file (Save-now files included).
    Only names the writer itself produces count, so `run-0000001` (a stray zero) is not epoch 1."""
    m = _EPOCH_FILE.match(Path(path).name)
    if m is None:
        return None
    name, epoch = m.group("name"), int(m.group("epoch"))
    return (name, epoch) if epoch_file_name(name, epoch) == Path(path).name else None


def list_epoch_files(folder: str | Path, name: str) -> list[Path]:
    """The run's epoch files in `folder`, sorted by epoch: not its Save-now files, not other runs
    whose names start with `<name>-`; empty when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(parsed[1], p) for p in folder.iterdir()
             if (parsed := parse_epoch_file(p)) is not None and parsed[0] == name and p.is_file()]
    return [p for _, p in sorted(found)]


def write_run_config(cfg: TrainConfig, out_dir: Path) -> Path:
    return write_text(out_dir / f"{cfg.output.output_name}.toml", dumps_train_config(cfg))


def tag_frequency(plan: TrainPlan) -> dict[str, dict[str, int]]:
    """{concept folder: {tag: count}}, counted like sd-scripts (lowercased, stripped)."""
    out: dict[str, Counter] = {}
    for s in plan.train:
        folder = f"{s.repeats}_{s.concept}"
        counts = out.setdefault(folder, Counter())
        for tag in split_tags(s.item.caption):
            counts[tag.lower()] += 1
    return {k: dict(v) for k, v in out.items()}


def training_metadata(cfg: TrainConfig, plan: TrainPlan, model, epoch: int, step: int,
                      started_at: float) -> dict[str, str]:
    """The ss_* fields sd-scripts writes about the run (all strings); the model-family and network
    fields are added by networks.build_metadata."""
    t, d, n = cfg.training, cfg.dataset, cfg.network
    dirs = {f"{s.repeats}_{s.concept}": {"n_repeats": s.repeats, "img_count": 0} for s in plan.train}
    for s in plan.train:
        dirs[f"{s.repeats}_{s.concept}"]["img_count"] += 1
    reg_dirs = {f"{s.repeats}_{s.concept}": {"n_repeats": s.repeats, "img_count": 0} for s in plan.reg}
    for s in plan.reg:
        reg_dirs[f"{s.repeats}_{s.concept}"]["img_count"] += 1
    meta = {
        "ss_session_id": str(random.Random(started_at).randint(0, 2**32)),
        "ss_training_started_at": str(started_at), "ss_training_finished_at": str(time.time()),
        "ss_output_name": cfg.output.output_name, "ss_learning_rate": str(t.unet_lr),
        "ss_unet_lr": str(t.unet_lr), "ss_text_encoder_lr": str(t.text_encoder_lr),
        # sd-scripts counts images x repeats (and validation images once)
        "ss_num_train_images": str(sum(s.repeats for s in plan.train)),
        "ss_num_reg_images": str(sum(s.repeats for s in plan.reg)),
        "ss_num_validation_images": str(len(plan.validation)),
        "ss_num_batches_per_epoch": str(plan.steps_per_epoch * plan.grad_accum),
        "ss_num_epochs": str(plan.epochs), "ss_epoch": str(epoch), "ss_steps": str(step),
        "ss_batch_size_per_device": str(t.batch_size),
        "ss_total_batch_size": str(t.batch_size * world_size() * t.gradient_accumulation_steps),
        "ss_gradient_checkpointing": str(t.gradient_checkpointing),
        "ss_gradient_accumulation_steps": str(t.gradient_accumulation_steps),
        "ss_max_train_steps": str(plan.total_steps),
        "ss_lr_warmup_steps": str(warmup_steps(t.lr_warmup, plan.total_steps)),
        "ss_lr_scheduler": t.lr_scheduler, "ss_mixed_precision": t.mixed_precision,
        "ss_resolution": f"({d.resolution}, {d.resolution})", "ss_clip_skip": str(cfg.model.clip_skip),
        "ss_max_token_length": str(d.max_token_length), "ss_color_aug": str(d.color_aug),
        "ss_flip_aug": str(d.flip_aug), "ss_random_crop": "False", "ss_shuffle_caption": str(d.shuffle_caption),
        "ss_cache_latents": str(d.cache_latents != "off"), "ss_enable_bucket": str(d.enable_bucket),
        "ss_min_bucket_reso": str(d.min_bucket_reso), "ss_max_bucket_reso": str(d.max_bucket_reso),
        "ss_bucket_info": json.dumps(bucket_info((s.bucket, s.item.size, s.repeats) for s in plan.train + plan.reg)
                                     if d.enable_bucket else None),
        "ss_bucket_no_upscale": str(d.bucket_no_upscale), "ss_keep_tokens": str(d.keep_tokens),
        "ss_max_grad_norm": str(t.max_grad_norm), "ss_multires_noise_discount": str(t.multires_noise_discount),
        "ss_adaptive_noise_scale": str(t.adaptive_noise_scale), "ss_validation_split": str(d.validation_split),
        "ss_noise_offset": str(t.noise_offset), "ss_min_snr_gamma": str(t.min_snr_gamma),
        "ss_seed": str(t.seed), "ss_sd_model_name": model.name, "ss_optimizer": optimizer_label(
            t.optimizer, {"weight_decay": t.weight_decay, **parse_optimizer_args(t.optimizer_args)}),
        "ss_training_comment": cfg.output.comment, "ss_caption_dropout_rate": str(d.caption_dropout_rate),
        "ss_caption_tag_dropout_rate": str(d.caption_tag_dropout_rate),
        "ss_prior_loss_weight": str(d.prior_loss_weight),
        "ss_multires_noise_iterations": str(t.multires_noise_iterations),
        "ss_zero_terminal_snr": str(t.zero_terminal_snr), "ss_debiased_estimation": str(t.debiased_estimation),
        "ss_dataset_dirs": json.dumps(dirs), "ss_reg_dataset_dirs": json.dumps(reg_dirs),
        "ss_tag_frequency": json.dumps(tag_frequency(plan)),
        "ss_network_dropout": str(n.dropout), "ss_trainer": f"train-lora {__version__}",
    }
    # sd-scripts hashes the base model when it is a file; the WebUI's CheckpointInfo knows both hashes
    info = getattr(getattr(model, "sd_model", None), "sd_checkpoint_info", None)
    known = (getattr(info, "hash", None), getattr(info, "sha256", None))
    hashes = known if all(known) else checkpoint_hashes(getattr(info, "filename", None) or cfg.model.pretrained or "")
    if hashes:
        meta["ss_sd_model_hash"], meta["ss_new_sd_model_hash"] = hashes
    return meta


# -- resumable state ---------------------------------------------------------------

def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def state_file(out_dir: str | Path, name: str) -> Path:
    """`<out>/state/<name>.state`: one per run name, since in the WebUI every run shares the Lora folder.
    Not ".pt": the WebUI's Lora loader lists every .pt/.ckpt/.safetensors there (subfolders too) as
    a LoRA; a genuine v1.10.1 showed a state/last.pt as a LoRA called "last"."""
    return Path(out_dir) / "state" / f"{name}.state"


def save_state(out_dir: Path, name: str, network, optimizer, scheduler, counters: dict,
               extra: dict | None = None) -> Path:
    """Everything to continue the run; one file, replaced atomically."""
    payload = {"network": network.trainable_state(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "rng": rng_state(), "counters": counters,
               "extra": extra or {}}
    path = state_file(out_dir, name)
    write_with(path, lambda tmp: torch.save(payload, tmp))
    return path


def load_state(out_dir: Path, name: str) -> dict:
    from ..errors import LoraError

    path = state_file(out_dir, name)
    if not path.exists():
        raise LoraError(f"There is no saved training state of the run '{name}' to resume from", where=str(path),
                        fix="Resume needs a run saved with output.save_state = true; start a new run instead")
    # weights_only=False is needed for optimizer and RNG state; the file is our own, written by save_state.
    return torch.load(path, map_location="cpu", weights_only=False)


def prune_old_epochs(out_dir: Path, name: str, current_epoch: int, keep_last: int) -> list[Path]:
    if keep_last <= 0:
        return []
    removed = []
    for epoch in range(1, current_epoch - keep_last + 1):
        path = epoch_file(out_dir, name, epoch)
        if remove(path):
            removed.append(path)
    return removed
