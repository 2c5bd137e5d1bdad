"""Pause in a genuine WebUI: the run hands the WebUI back while paused, and resumes exactly.

Called by tools/genuine_webui_check.py (step 9). Over the HTTP API only, like a user's script:
1. an uninterrupted 3-epoch run;
2. the same run again, paused once its first epoch is saved: while paused, txt2img without LoRA
   equals image A, <lora:EPOCH1:1> changes it, and the X/Y/Z plot with the "LoRA epoch" and
   "LoRA weight" axes renders a cell pixel-identical to that direct txt2img;
3. resumed, it finishes; on CPU its later epochs are bit-identical to the uninterrupted run's
   (reported only on a GPU, whose kernels need not be deterministic);
4. with --sdxl-checkpoint: a run paused while the WebUI loads another checkpoint refuses to resume
   there (saying to load the first one again) and stays paused, then finishes once it is back.
"""
from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

API = "/train_lora/v1/runs"
EPOCHS = 3
ACTIVE = ("queued", "running")


def wait_run(h: SimpleNamespace, url: str, run_id: str, done, timeout_s: float = 3600) -> dict:
    deadline = time.time() + timeout_s
    while True:
        code, run = h.call(url, f"{API}/{run_id}")
        if code != 200 or done(run) or time.time() > deadline:
            return run
        time.sleep(0.2)


def start_and_pause(args, h, check, dataset: Path, name: str, epochs: int) -> dict:
    """Start a run and pause it once its first epoch file is saved; returns its paused state."""
    code, run = h.call(args.url, API, h.training_request(dataset, name, epochs))
    if not check(code == 200, f"POST {API} starts the run {name}", str(run)[:200]):
        raise RuntimeError("the run did not start")
    run = wait_run(h, args.url, run["run_id"], lambda r: r["files"] or r["state"] not in ACTIVE)
    code, asked = h.call(args.url, f"{API}/{run['run_id']}/pause", {})
    check(code == 200 and asked.get("pause_requested") is True, f"POST {API}/<id>/pause is taken", str(asked)[:200])
    run = wait_run(h, args.url, run["run_id"], lambda r: r["paused"] or r["state"] not in ACTIVE)
    check(run["paused"] is True and run["state"] == "paused", f"{name} pauses at the next step",
          f"state={run['state']} step={run['step']}/{run['total_steps']}")
    return run


def xyz_cells(args, h, check, prompt: str, epochs: list[str], weights: str) -> list[bytes]:
    """The X/Y/Z plot through /sdapi/v1/txt2img with our two axes; returns every cell's pixels."""
    code, scripts = h.call(args.url, "/sdapi/v1/script-info")
    xyz = next((s for s in scripts if s["name"] == "x/y/z plot" and not s["is_img2img"]), None) if code == 200 else None
    if not check(xyz is not None, "the X/Y/Z plot script is listed by /sdapi/v1/script-info"):
        return []
    values = [a.get("value") for a in xyz["args"]]
    labels = [str(a.get("label", "")) for a in xyz["args"]]
    axes = xyz["args"][0].get("choices") or []
    if not check("LoRA epoch" in axes and "LoRA weight" in axes, "X/Y/Z plot offers the LoRA epoch and weight axes"):
        return []
    values[0:9] = [axes.index("LoRA epoch"), ", ".join(epochs), [], axes.index("LoRA weight"), weights, [],
                   0, "", []]
    for i, label in enumerate(labels):
        if label == "Include Sub Images":
            values[i] = True
        elif label == "Use text inputs instead of dropdowns":
            values[i] = True
    body = {"prompt": prompt, "negative_prompt": "", "seed": args.seed, "steps": args.steps, "width": 64,
            "height": 64, "cfg_scale": 5, "sampler_name": "Euler", "batch_size": 1, "n_iter": 1,
            "send_images": True, "save_images": False, "script_name": "x/y/z plot", "script_args": values}
    code, answer = h.call(args.url, "/sdapi/v1/txt2img", body)
    if not check(code == 200, "the X/Y/Z plot renders while the run is paused", str(answer)[:300] if code != 200 else ""):
        return []
    images = [Image.open(io.BytesIO(base64.b64decode(i))).convert("RGB") for i in answer["images"]]
    return [im.tobytes() for im in images if im.size == (64, 64)]


def check_pause(args, h: SimpleNamespace, dataset: Path, name: str, pixels_a: bytes, on_cpu: bool, check) -> None:
    """h: the main script's helpers (call, txt2img, train, tensor_bytes, training_request)."""
    straight = h.train(args.url, h.training_request(dataset, f"{name}-straight", EPOCHS), check, "uninterrupted run")
    run = start_and_pause(args, h, check, dataset, f"{name}-paused", EPOCHS)
    plain, _ = h.txt2img(args.url, args.prompt, args.seed, args.steps, check, "while paused")
    check(plain == pixels_a, "while paused, txt2img without LoRA runs and is pixel-identical to A")
    epoch1 = Path(run["files"][0]).stem if run["files"] else ""
    direct, _ = h.txt2img(args.url, f"{args.prompt} <lora:{epoch1}:1>", args.seed, args.steps, check, "epoch 1")
    check(direct != pixels_a, "while paused, the saved epoch works as <lora:...>", epoch1)
    cells = xyz_cells(args, h, check, f"{args.prompt} <lora:{epoch1}:1>", [epoch1], "0.5, 1")
    check(direct in cells, "the X/Y/Z plot's epoch 1 / weight 1 cell equals the direct txt2img", f"{len(cells)} cells")
    code, resumed = h.call(args.url, f"{API}/{run['run_id']}/resume", {})
    check(code == 200, f"POST {API}/<id>/resume", str(resumed)[:200])
    run = wait_run(h, args.url, run["run_id"], lambda r: r["state"] not in ACTIVE + ("paused",))
    check(run["state"] == "finished", "the resumed run finishes", f"{run['state']} {run['error']}")
    same = len(run["files"]) == len(straight["files"]) == EPOCHS and all(
        h.tensor_bytes(Path(a)) == h.tensor_bytes(Path(b)) for a, b in zip(straight["files"], run["files"]))
    if on_cpu:
        check(same, "every epoch of the paused and resumed run is bit-identical to the uninterrupted run's")
    else:
        print(f"[INFO] paused run's epochs bit-identical to the uninterrupted run's: {same} (not required on a GPU)")
    after, _ = h.txt2img(args.url, args.prompt, args.seed, args.steps, check, "after the paused run")
    check(after == pixels_a, "after the paused run, txt2img without LoRA is pixel-identical to A")


def check_other_checkpoint(args, h: SimpleNamespace, switch, dataset: Path, name: str, check) -> None:
    """Paused while the WebUI loads another checkpoint: resuming there is refused; back on the first, it ends."""
    run = start_and_pause(args, h, check, dataset, f"{name}-switch", 2)
    previous = switch(h.call, args.url, args.sdxl_checkpoint)
    try:
        h.call(args.url, f"{API}/{run['run_id']}/resume", {})
        run = wait_run(h, args.url, run["run_id"], lambda r: r["notice"] or r["state"] not in ACTIVE + ("paused",))
        check(run["state"] == "paused" and "again" in run["notice"] and "--resume" in run["notice"],
              "resuming on another checkpoint is refused and the run stays paused", run["notice"][:300])
    finally:
        switch(h.call, args.url, previous.split(" [")[0])
    h.call(args.url, f"{API}/{run['run_id']}/resume", {})
    run = wait_run(h, args.url, run["run_id"], lambda r: r["state"] not in ACTIVE + ("paused",))
    check(run["state"] == "finished", "back on its checkpoint, the run resumes and finishes", run["error"])
