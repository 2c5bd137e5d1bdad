"""WebUI install hook: installs only what Train LoRA needs and the WebUI lacks.

The WebUI runs this file as `python install.py` with its root on PYTHONPATH, so the
WebUI's `launch` module is importable. Rules: ask `launch.is_installed` first and do
nothing for a package that is there; never name a package the WebUI pins
(requirements_versions.txt of v1.10.1, plus torch), so pip never upgrades or
downgrades them; install lycoris-lora without its dependencies (they are torch,
numpy, safetensors, einops, tqdm: all WebUI pins, plus toml which we add alone);
onnxruntime-gpu where CUDA works, else onnxruntime, never both and nothing if
either is present; bitsandbytes, because the default optimizer (AdamW8bit) needs it and
the WebUI does not ship it (it runs on CPU too). Every pip command also gets a constraints
file holding the installed version of each pinned package, because a package we install
may require a newer one (onnxruntime 1.31 requires protobuf >= 4.25.8, and pip replaced
the WebUI's protobuf 3.20.0 when a genuine v1.10.1 ran this file); with the constraints
pip picks a release that fits the WebUI instead.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import tempfile

# Packages the WebUI pins (v1.10.1 requirements_versions.txt) or installs itself (torch).
WEBUI_PINNED = frozenset({
    "setuptools", "gitpython", "pillow", "accelerate", "blendmodes", "clean-fid", "diskcache", "einops",
    "facexlib", "fastapi", "gradio", "httpcore", "inflection", "jsonmerge", "kornia", "lark", "numpy",
    "omegaconf", "open-clip-torch", "piexif", "protobuf", "psutil", "pytorch-lightning", "resize-right",
    "safetensors", "scikit-image", "spandrel", "spandrel-extra-arches", "tomesd", "torch", "torchdiffeq",
    "torchsde", "transformers", "httpx", "pillow-avif-plugin", "torchvision", "xformers", "tqdm",
})
LYCORIS = "lycoris-lora==4.1.3"
HUB = "huggingface_hub>=0.14.1,<1.0"     # what transformers 4.30.2 (the WebUI's pin) accepts


def cuda_available() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:       # no torch or a broken CUDA setup: the CPU build of onnxruntime works anyway
        return False


def package_name(spec: str) -> str:
    for sep in ("==", ">=", "<=", "<", ">", "~=", "["):
        spec = spec.split(sep)[0]
    return spec.strip().lower().replace("_", "-")


def plan_installs(is_installed, has_cuda: bool, python_version: tuple[int, int]) -> list[tuple[str, str]]:
    """(pip arguments, description) for each missing package."""
    wanted: list[tuple[str, str]] = []
    if not (is_installed("onnxruntime") or is_installed("onnxruntime-gpu")):
        spec = "onnxruntime-gpu" if has_cuda else "onnxruntime"
        wanted.append((f"install {spec}", f"{spec} for the Train LoRA tagger"))
    if not is_installed("huggingface_hub"):
        wanted.append((f'install "{HUB}"', "huggingface_hub for Train LoRA tagger downloads"))
    if not is_installed("bitsandbytes"):
        wanted.append(("install bitsandbytes", "bitsandbytes for Train LoRA's default optimizer (AdamW8bit)"))
    if not is_installed("lycoris-lora"):
        wanted.append((f"install --no-deps {LYCORIS}", "LyCORIS for Train LoRA (LoHa/LoKr)"))
    if not is_installed("toml"):
        wanted.append(("install toml", "toml for LyCORIS"))
    if python_version < (3, 11) and not is_installed("tomli"):
        wanted.append(("install tomli", "tomli for Train LoRA config files"))
    for args, _ in wanted:
        for token in args.replace('"', " ").split()[1:]:
            if not token.startswith("-") and package_name(token) in WEBUI_PINNED:
                raise RuntimeError(f"Train LoRA install.py must never install {token}: the WebUI pins it")
    return wanted


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned_constraints(version_of=installed_version) -> list[str]:
    """'name==version' for every WebUI-pinned package that is installed (pip's -c file lines)."""
    lines = []
    for name in sorted(WEBUI_PINNED):
        version = version_of(name)
        if version:
            lines.append(f"{name}=={version}")
    return lines


@contextlib.contextmanager
def constraints_file(lines: list[str]):
    """A fresh temporary file pip reads with -c; removed afterwards."""
    handle, path = tempfile.mkstemp(prefix="train_lora_pins_", suffix=".txt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        yield path
    finally:
        os.unlink(path)


def main(launch_module=None, has_cuda: bool | None = None, python_version: tuple[int, int] | None = None) -> int:
    launch = launch_module
    if launch is None:
        import launch
    has_cuda = cuda_available() if has_cuda is None else has_cuda
    version = tuple(sys.version_info[:2]) if python_version is None else python_version
    wanted = plan_installs(launch.is_installed, has_cuda, version)
    if not wanted:
        return 0
    with constraints_file(pinned_constraints()) as pins:
        for args, desc in wanted:
            try:
                launch.run_pip(f'{args} -c "{pins}"', desc)
            except Exception as err:     # report and go on: the tab explains what is missing when used
                print(f"Train LoRA: could not {args}: {err}. Install it by hand in the WebUI's venv.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
