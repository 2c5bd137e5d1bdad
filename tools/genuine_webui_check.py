"""Check Train LoRA inside a running, genuine AUTOMATIC1111 WebUI (not part of pytest/CI: CI has no WebUI).

    python tools/genuine_webui_check.py --url http://127.0.0.1:7861 [--webui-log webui.log]

Run it on the machine that runs the WebUI (it writes the training images into the WebUI's data
folder, or --dataset-dir, which must be inside a folder Train LoRA may read). The WebUI needs
--api, the extension installed and a checkpoint loaded; start it with --loglevel DEBUG and pass
--webui-log so the built-in Lora's "didn't match keys" messages can be checked. Steps:

1. the Train LoRA tab is in the UI config and our API routes answer;
2. txt2img (64x64, few steps, fixed seed) -> image A;
3. a short training run through /train_lora/v1/runs on the loaded checkpoint; its files must be in
   the WebUI's Lora folder (--lora-dir);
4. txt2img again without LoRA -> identical pixels to A (training gave the model back bit for bit);
5. txt2img with <lora:NAME:1> -> image C, differs from A, the log has no unmatched keys for our file,
   the infotext names its hash, /sdapi/v1/loras lists it;
6. a second run right after C, while the built-in Lora still holds NAME merged into the weights; then
   <lora:NAME:1> gives C again (the built-in re-applies it) and no LoRA gives A again;
7. pause (genuine_webui/pause_check.py): a paused run frees txt2img and the X/Y/Z plot (its epochs
   usable as <lora:...> and on the plot's LoRA epoch/weight axes) and resumes bit-exactly on CPU;
   resuming after another checkpoint was loaded is refused until the first is back;
8. real shapes (genuine_webui/real_scale.py): a run at 512 px (batch 1, gradient checkpointing) on the
   loaded SD1.5-size checkpoint, and one at 64 px on an SDXL-size checkpoint (--sdxl-checkpoint), each
   printing the WebUI process's RSS before, at peak and after, with generation identical before/after.
A WebUI started with --api-auth needs --api-auth here too.
Prints one line per check and a timing summary; exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent / "genuine_webui"))
import pause_check  # noqa: E402  (a sibling folder, not a package)
import real_scale  # noqa: E402

TAB_ELEM_ID = "tab_train_lora"
API = "/train_lora/v1/runs"
COLOURS = {"red": (220, 40, 30), "green": (40, 200, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40)}
LORA_LOG_PROBLEMS = ("didn't match keys", "couldn't find supported operation")
HEADERS = {"Content-Type": "application/json"}   # plus Authorization with --api-auth


class Check:
    def __init__(self):
        self.failures: list[str] = []
        self.timings: dict[str, float] = {}

    def __call__(self, ok: bool, what: str, detail: str = "") -> bool:
        print(f"[{'PASS' if ok else 'FAIL'}] {what}" + (f": {detail}" if detail else ""), flush=True)
        if not ok:
            self.failures.append(what)
        return ok


def call(url: str, path: str, body: dict | None = None, timeout: float = 600) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method="GET" if body is None else "POST",
                                     headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text[:1] in "[{" else text)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def txt2img(url: str, prompt: str, seed: int, steps: int, check: Check, label: str) -> tuple[bytes, str]:
    """(RGB pixels, infotext) of one 64x64 image."""
    body = {"prompt": prompt, "negative_prompt": "", "seed": seed, "steps": steps, "width": 64, "height": 64,
            "cfg_scale": 5, "sampler_name": "Euler", "batch_size": 1, "n_iter": 1, "send_images": True,
            "save_images": False}
    started = time.perf_counter()
    code, answer = call(url, "/sdapi/v1/txt2img", body)
    check.timings[f"txt2img {label}"] = time.perf_counter() - started
    if code != 200:
        raise RuntimeError(f"txt2img {label} answered {code}: {str(answer)[:500]}")
    image = Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).convert("RGB")
    return image.tobytes(), json.loads(answer["info"]).get("infotexts", [""])[0]


def check_ui_and_routes(url: str, check: Check) -> None:
    code, config = call(url, "/config")
    ids = [c.get("props", {}).get("elem_id") for c in config.get("components", [])] if code == 200 else []
    check(TAB_ELEM_ID in ids, "Train LoRA tab in the WebUI's UI config", f"#{TAB_ELEM_ID}")
    code, runs = call(url, API)
    check(code == 200 and isinstance(runs, dict) and "runs" in runs, f"GET {API} answers", f"{code}")
    code, answer = call(url, API + "/no-such-run")
    check(code == 404, f"GET {API}/<unknown> is a 404 with a reason", str(answer)[:120])


def make_dataset(root: Path) -> Path:
    """A few solid-colour 64px images, captioned '<colour> square, plain' in a 4_tlcheck folder."""
    concept = root / "4_tlcheck"
    concept.mkdir(parents=True, exist_ok=True)
    for name, rgb in COLOURS.items():
        Image.new("RGB", (64, 64), rgb).save(concept / f"{name}.png")
        (concept / f"{name}.txt").write_text(f"tlcheck, {name} square, plain", encoding="utf-8")
    return root


def training_request(dataset: Path, name: str, epochs: int) -> dict:
    return {"config": {
        "dataset": {"train_dir": str(dataset), "resolution": 64, "enable_bucket": False, "min_bucket_reso": 64,
                    "max_bucket_reso": 64, "bucket_reso_steps": 64, "cache_latents": "memory"},
        "network": {"algo": "lora", "dim": 4, "alpha": 4.0},
        "training": {"epochs": epochs, "batch_size": 2, "optimizer": "AdamW", "lr_scheduler": "constant",
                     "unet_lr": 1e-3, "text_encoder_lr": 5e-4, "mixed_precision": "no", "min_snr_gamma": 0.0,
                     "seed": 7},
        "output": {"output_name": name, "save_state": False, "tensorboard": False},
    }}


def train(url: str, request: dict, check: Check, label: str = "training run") -> dict:
    started = time.perf_counter()
    code, run = call(url, API, request)
    if not check(code == 200, f"POST {API} starts a run", str(run)[:300]):
        raise RuntimeError("training did not start")
    while run["state"] in ("queued", "running"):
        time.sleep(2)
        code, run = call(url, f"{API}/{run['run_id']}")
    check.timings[label] = time.perf_counter() - started
    check(run["state"] == "finished", f"{label} finished",
          f"state={run['state']} steps={run['step']}/{run['total_steps']} loss={run['loss']} {run['error']}")
    return run


def tensor_bytes(path: Path) -> tuple[dict, bytes]:
    """A .safetensors file's tensor table and data, without its metadata (names, dates differ by run)."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    header.pop("__metadata__", None)
    return header, raw[8 + size:]


def check_same_first_epoch(first: dict, second: dict, on_cpu: bool, check: Check) -> None:
    """Same seed, data and settings: epoch 1 of both runs must be bit-identical on CPU, which shows the
    second run trained on the clean model, not on the LoRA the built-in had merged into it."""
    same = bool(first["files"] and second["files"]) and \
        tensor_bytes(Path(first["files"][0])) == tensor_bytes(Path(second["files"][0]))
    if on_cpu:
        check(same, "the second run's epoch 1 is bit-identical to the first run's (trained on the clean model)")
    else:   # GPU kernels need not be deterministic: report only
        print(f"[INFO] epoch 1 of both runs bit-identical: {same} (not required on a GPU)")


def log_size(path: Path | None) -> int:
    return path.stat().st_size if path and path.exists() else 0


def log_since(path: Path | None, offset: int) -> str:
    if not path or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def check_lora(url: str, run: dict, pixels_a: bytes, args, check: Check) -> tuple[str, bytes] | None:
    """Image C with the run's last epoch; returns (LoRA name, C's pixels)."""
    code, flags = call(url, "/sdapi/v1/cmd-flags")
    lora_dir = os.path.realpath(flags.get("lora_dir", "")) if code == 200 else ""
    files = [Path(f) for f in run.get("files", [])]
    check(bool(files) and all(f.is_file() and os.path.realpath(f.parent) == lora_dir for f in files),
          "every saved epoch is in the WebUI's Lora folder", f"{lora_dir}: {[f.name for f in files]}")
    if not files:
        return None
    name = files[-1].stem
    code, loras = call(url, "/sdapi/v1/loras")
    listed = code == 200 and any(item.get("name") == name for item in loras)
    check(listed, "/sdapi/v1/loras lists the new LoRA without a manual refresh", name)
    offset = log_size(args.webui_log)
    pixels_c, info = txt2img(url, f"{args.prompt} <lora:{name}:1>", args.seed, args.steps, check, "C (with LoRA)")
    check(pixels_c != pixels_a, "the LoRA changes the image (C differs from A)")
    check(f"{name}: " in info and "Lora hashes" in info, "infotext names the LoRA's hash", info[-160:])
    if args.webui_log:
        logged = log_since(args.webui_log, offset)
        problems = [line for line in logged.splitlines() if any(p in line for p in LORA_LOG_PROBLEMS)
                    or (f"Network {name} layer" in line)]
        check(not problems, "the built-in Lora matched every key of our file (DEBUG log)",
              "; ".join(p[:300] for p in problems[:3]))
        check("Traceback" not in logged, "no traceback in the WebUI log during the LoRA generation")
    return name, pixels_c


def run_checks(args) -> Check:
    check = Check()
    log_start = log_size(args.webui_log)
    check_ui_and_routes(args.url, check)
    pixels_a, _ = txt2img(args.url, args.prompt, args.seed, args.steps, check, "A")
    repeat, _ = txt2img(args.url, args.prompt, args.seed, args.steps, check, "A again")
    check(repeat == pixels_a, "txt2img is repeatable before training (same seed, same pixels)")
    code, flags = call(args.url, "/sdapi/v1/cmd-flags")
    flags = flags if code == 200 and isinstance(flags, dict) else {}
    dataset_root = Path(args.dataset_dir or Path(flags.get("data_dir") or ".") / "train_lora_check" / "dataset")
    name = args.name or f"tlcheck_{int(time.time())}"
    run = train(args.url, training_request(make_dataset(dataset_root), name, args.epochs), check)
    pixels_b, _ = txt2img(args.url, args.prompt, args.seed, args.steps, check, "B (after training)")
    check(pixels_b == pixels_a, "after training, txt2img without LoRA is pixel-identical to A")
    with_lora = check_lora(args.url, run, pixels_a, args, check)
    if with_lora:
        name, pixels_c = with_lora
        again = train(args.url, training_request(dataset_root, f"{name}-again", 1), check,
                      "second run, LoRA still merged")
        check_same_first_epoch(run, again, "all" in str(flags.get("use_cpu", "")).lower(), check)
        pixels_e, _ = txt2img(args.url, f"{args.prompt} <lora:{name}:1>", args.seed, args.steps, check, "E")
        check(pixels_e == pixels_c, "after a run that began with the LoRA merged, the LoRA gives C again")
    if not args.skip_pause:
        check_pause(args, dataset_root, name, pixels_a, "all" in str(flags.get("use_cpu", "")).lower(), check)
    pixels_d, _ = txt2img(args.url, args.prompt, args.seed, args.steps, check, "D (no LoRA)")
    check(pixels_d == pixels_a, "at the end, txt2img without LoRA is pixel-identical to A")
    if not args.skip_real_scale:
        check_real_scale(args, dataset_root.parent / "scale", name, check)
    if args.webui_log:
        logged = log_since(args.webui_log, log_start)
        bad = [line for line in logged.splitlines() if "Traceback" in line or line.startswith("*** ")]
        check(not bad, "no error reported in the WebUI log during the check", "; ".join(bad[:3]))
    return check


def check_pause(args, dataset: Path, name: str, pixels_a: bytes, on_cpu: bool, check: Check) -> None:
    """Step 9 (genuine_webui/pause_check.py): pause frees the WebUI, resume continues exactly."""
    helpers = SimpleNamespace(call=call, txt2img=txt2img, train=train, tensor_bytes=tensor_bytes,
                                          training_request=training_request)
    pause_check.check_pause(args, helpers, dataset, name, pixels_a, on_cpu, check)
    if args.sdxl_checkpoint:
        pause_check.check_other_checkpoint(args, helpers, real_scale.switch_checkpoint, dataset, name, check)


def scale_run(args, check: Check, pid: int | None, label: str, dataset: Path, name: str, size: int) -> None:
    """One real-shape run with the WebUI's RSS watched; generation must be the same before and after."""
    before, _ = txt2img(args.url, args.prompt, args.seed, args.steps, check, f"before {label}")
    watch = real_scale.RssWatch(pid) if pid else None
    with watch or contextlib.nullcontext():
        train(args.url, real_scale.scale_request(dataset, name, size), check, label)
    if watch:
        print(f"[INFO] {label}: {watch.describe()}", flush=True)
    after, _ = txt2img(args.url, args.prompt, args.seed, args.steps, check, f"after {label}")
    check(after == before, f"{label}: txt2img without LoRA is pixel-identical before and after the run")


def check_real_scale(args, root: Path, name: str, check: Check) -> None:
    pid = real_scale.pid_or_note(args)
    for size in (512, 64):
        real_scale.make_dataset(root / str(size), size, COLOURS)
    scale_run(args, check, pid, "SD1.5-size run at 512 px", root / "512", f"{name}-512px", 512)
    if not args.sdxl_checkpoint:
        print("[INFO] no --sdxl-checkpoint given: the SDXL-size run is skipped")
        return
    previous = real_scale.switch_checkpoint(call, args.url, args.sdxl_checkpoint)
    try:
        scale_run(args, check, pid, "SDXL-size run at 64 px", root / "64", f"{name}-sdxl", 64)
    finally:
        real_scale.switch_checkpoint(call, args.url, previous.split(" [")[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="the WebUI's address (started with --api)")
    parser.add_argument("--webui-log", type=Path, default=None, help="the WebUI's console log (--loglevel DEBUG)")
    parser.add_argument("--dataset-dir", default=None, help="where to write the tiny dataset "
                        "(default: <WebUI data dir>/train_lora_check/dataset)")
    parser.add_argument("--name", default=None, help="LoRA output name (default: tlcheck_<unix time>)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="sampling steps of each txt2img")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--prompt", default="tlcheck, red square, plain")
    parser.add_argument("--api-auth", default=None, help="user:password when the WebUI runs with --api-auth")
    parser.add_argument("--webui-pid", type=int, default=None,
                        help="the WebUI's process id for RSS figures (default: found from --url's port)")
    parser.add_argument("--sdxl-checkpoint", default="sdxl-random",
                        help="part of the title of an SDXL-size checkpoint for the SDXL run ('' skips it)")
    parser.add_argument("--skip-real-scale", action="store_true", help="skip the 512 px and SDXL-size runs")
    parser.add_argument("--skip-pause", action="store_true", help="skip the pause/resume checks")
    args = parser.parse_args(argv)
    if args.api_auth:
        HEADERS["Authorization"] = "Basic " + base64.b64encode(args.api_auth.encode()).decode()
    started = time.perf_counter()
    check = run_checks(args)
    for what, seconds in check.timings.items():
        print(f"  {what}: {seconds:.1f} s")
    print(f"  whole check: {time.perf_counter() - started:.1f} s")
    print(f"{len(check.failures)} check(s) failed: {check.failures}" if check.failures else "all checks passed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
