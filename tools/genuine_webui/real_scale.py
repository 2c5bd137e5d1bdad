"""Real-shape runs inside a genuine WebUI, with the WebUI process's memory watched (used by
tools/genuine_webui_check.py; nothing here imports the WebUI).

Two runs: the loaded SD1.5-size checkpoint at 512 px (batch 1, gradient checkpointing), and an
SDXL-size checkpoint at 64 px (the smallest image the WebUI makes). For each it prints the WebUI
process's resident memory before the run, at its peak during the run (sampled every 0.2 s, and the
kernel's high-water mark where /proc/PID/clear_refs may be written) and after it, and checks that
generation without a LoRA is pixel-identical before and after. A run may add only the LoRA, its
optimizer state, activations and caches: a second copy of the model shows as "added" near the
model's own size.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from PIL import Image

GIB = 2 ** 30


def find_webui_pid(port: int) -> int | None:
    """The pid of a `launch.py`/`webui.py` process started with `--port PORT` (7860 when none is given)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith(("launch.py", "webui.py")) for a in args):
            continue
        given = args[args.index("--port") + 1] if "--port" in args[:-1] else "7860"
        if given == str(port):
            return int(entry.name)
    return None


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssWatch:
    """Resident memory of a process before, at peak during, and after a block of work."""

    def __init__(self, pid: int):
        self.pid = pid
        self.before = self.peak = self.after = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._hwm_reset = False

    def __enter__(self) -> "RssWatch":
        try:   # "5" resets VmHWM (Linux >= 4.0), so the kernel's own peak covers this run only
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._hwm_reset = True
        except OSError:
            pass
        self.before = self.peak = status_kib(self.pid, "VmRSS") * 1024
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS") * 1024)
            except OSError:
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._hwm_reset:
            self.peak = max(self.peak, status_kib(self.pid, "VmHWM") * 1024)
        self.after = status_kib(self.pid, "VmRSS") * 1024

    def describe(self) -> str:
        return (f"WebUI RSS before {self.before / GIB:.2f} GiB, peak {self.peak / GIB:.2f} GiB "
                f"(+{(self.peak - self.before) / GIB:.2f}), after {self.after / GIB:.2f} GiB")


def make_dataset(root: Path, size: int, colours: dict[str, tuple[int, int, int]]) -> Path:
    """Two striped images of `size` px in a 1_tlscale folder: a run of two steps at batch 1."""
    concept = root / "1_tlscale"
    concept.mkdir(parents=True, exist_ok=True)
    for name, rgb in list(colours.items())[:2]:
        image = Image.new("RGB", (size, size), rgb)
        for x in range(0, size, 16):
            image.paste((255, 255, 255), (x, 0, x + 4, size))
        image.save(concept / f"{name}.png")
        (concept / f"{name}.txt").write_text(f"tlscale, {name} stripes", encoding="utf-8")
    return root


def scale_request(dataset: Path, name: str, size: int) -> dict:
    """Batch 1, gradient checkpointing, UNet only with cached text-encoder outputs, two steps."""
    return {"config": {
        "dataset": {"train_dir": str(dataset), "resolution": size, "enable_bucket": False,
                    "cache_latents": "memory"},
        "network": {"algo": "lora", "dim": 16, "alpha": 16.0, "train_text_encoder": False},
        "training": {"epochs": 1, "max_train_steps": 2, "batch_size": 1, "optimizer": "AdamW",
                     "lr_scheduler": "constant", "unet_lr": 1e-4, "mixed_precision": "no", "seed": 7,
                     "gradient_checkpointing": True, "cache_text_encoder_outputs": True},
        "output": {"output_name": name, "save_state": False, "tensorboard": False},
    }}


def switch_checkpoint(call: Callable, url: str, wanted: str) -> str:
    """Load the checkpoint whose title contains `wanted`; returns the title loaded before."""
    _, options = call(url, "/sdapi/v1/options")
    previous = options.get("sd_model_checkpoint", "") if isinstance(options, dict) else ""
    code, models = call(url, "/sdapi/v1/sd-models")
    titles = [m["title"] for m in models] if code == 200 else []
    title = next((t for t in titles if wanted.lower() in t.lower()), None)
    if title is None:
        raise LookupError(f"no checkpoint title contains {wanted!r}: {titles}")
    code, answer = call(url, "/sdapi/v1/options", {"sd_model_checkpoint": title}, timeout=1800)
    if code != 200:
        raise RuntimeError(f"loading {title} answered {code}: {str(answer)[:300]}")
    return previous


def pid_or_note(args) -> int | None:
    pid = args.webui_pid or find_webui_pid(urlsplit(args.url).port or 7860)
    if pid is None or not os.path.exists(f"/proc/{pid}/status"):
        print("[INFO] the WebUI process was not found on this machine (pass --webui-pid): no RSS figures")
        return None
    return pid
