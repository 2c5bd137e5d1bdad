"""What both browser tests share: Debian chromium, a free port, a served process, waits, screenshots."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
NO_CHROMIUM = "Debian chromium is not installed (apt-get install -y chromium); CI installs it"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port if port not in (7860, 7861) else free_port()


def wait_for_server(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            said = proc.stdout.read() if proc.stdout else "its output went to its log file"
            raise RuntimeError(f"the server exited: {said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("the server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_text(page, selector: str, text: str, timeout_s: float = 60) -> None:
    page.locator(selector).filter(has_text=text).first.wait_for(timeout=timeout_s * 1000)


def launch_chromium(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def sd_scripts_toml(path: Path, train_dir: str, output_name: str, **dataset) -> Path:
    """A small sd-scripts config (2 epochs of the tiny model, a sample every epoch) to import in the tab;
    `dataset` adds [dataset_arguments] entries (TOML literals)."""
    extra = "".join(f"{key} = {value}\n" for key, value in dataset.items())
    path.write_text(f"""
[dataset_arguments]
train_data_dir = "{train_dir}"
resolution = 64
{extra}[training_arguments]
network_dim = 4
network_alpha = 4
learning_rate = 1e-3
optimizer_type = "AdamW"
lr_scheduler = "constant"
max_train_epochs = 2
train_batch_size = 2
mixed_precision = "no"
min_snr_gamma = 0
output_name = "{output_name}"
sample_every_n_epochs = 1
""", encoding="utf-8")
    return path
