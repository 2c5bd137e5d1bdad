"""install.py issues exactly the pip commands each environment needs, never touching WebUI pins."""
from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = os.path.join(ROOT, "install.py")
WEBUI_ENV = {"torch", "transformers", "gradio", "safetensors", "numpy", "Pillow", "accelerate", "einops",
             "huggingface_hub", "tqdm"}


def _run(webui, installed, has_cuda, version):
    webui.launch.installed = set(installed)
    webui.launch.pip_commands.clear()
    try:
        runpy.run_path(INSTALL, run_name="train_lora_install")["main"](webui.launch, has_cuda, version)
    finally:
        webui.launch.installed = None
    prefix = f'"{sys.executable}" -m pip '
    return [re.sub(r' -c "[^"]+"', "", c[len(prefix):].replace(" --prefer-binary", ""))
            for c in webui.launch.pip_commands]


@pytest.mark.parametrize("has_cuda, version, expected", [
    (True, (3, 10), ["install onnxruntime-gpu", "install bitsandbytes", "install --no-deps lycoris-lora==4.1.3",
                     "install toml", "install tomli"]),
    (False, (3, 10), ["install onnxruntime", "install bitsandbytes", "install --no-deps lycoris-lora==4.1.3",
                      "install toml", "install tomli"]),
    (False, (3, 11), ["install onnxruntime", "install bitsandbytes", "install --no-deps lycoris-lora==4.1.3",
                      "install toml"]),
])
def test_fresh_webui_gets_exactly_what_is_missing(webui, has_cuda, version, expected):
    assert _run(webui, WEBUI_ENV, has_cuda, version) == expected


@pytest.mark.parametrize("present", ["onnxruntime", "onnxruntime-gpu"])
def test_either_onnxruntime_means_none_is_installed(webui, present):
    installed = WEBUI_ENV | {present, "bitsandbytes", "lycoris-lora", "toml", "tomli"}
    assert _run(webui, installed, True, (3, 10)) == []


def test_missing_hub_is_installed_within_transformers_range(webui):
    installed = (WEBUI_ENV - {"huggingface_hub"}) | {"onnxruntime", "bitsandbytes", "lycoris-lora", "toml"}
    assert _run(webui, installed, False, (3, 11)) == ['install "huggingface_hub>=0.14.1,<1.0"']


def test_no_command_names_a_webui_pinned_package(webui):
    namespace = runpy.run_path(INSTALL, run_name="train_lora_install")
    for has_cuda in (True, False):
        for args, _ in namespace["plan_installs"](lambda name: False, has_cuda, (3, 10)):
            names = [namespace["package_name"](t) for t in args.replace('"', " ").split()[1:] if t[0] != "-"]
            assert not set(names) & namespace["WEBUI_PINNED"]


def test_every_pip_command_holds_the_installed_webui_pins(webui, monkeypatch):
    """A genuine v1.10.1 run showed `pip install onnxruntime` replacing the WebUI's protobuf 3.20.0
    (onnxruntime 1.31 requires protobuf >= 4.25.8): each command must carry a constraints file
    fixing every installed pinned package at its installed version."""
    namespace = runpy.run_path(INSTALL, run_name="train_lora_install")
    seen = []

    def run_pip(command, desc=None, live=False):
        path = re.search(r' -c "([^"]+)"', command).group(1)
        with open(path, encoding="utf-8") as f:
            seen.append((command, f.read().split()))

    webui.launch.installed = set(WEBUI_ENV)
    monkeypatch.setattr(webui.launch, "run_pip", run_pip)
    try:
        namespace["main"](webui.launch, False, (3, 11))
    finally:
        webui.launch.installed = None
    assert [c.split(" -c ")[0] for c, _ in seen] == ["install onnxruntime", "install bitsandbytes",
                                                     "install --no-deps lycoris-lora==4.1.3", "install toml"]
    import numpy
    import torch
    for _, pins in seen:
        assert f"torch=={torch.__version__}" in pins
        assert f"numpy=={numpy.__version__}" in pins
        assert all(namespace["package_name"](p.split("==")[0]) in namespace["WEBUI_PINNED"] for p in pins)
    assert not os.path.exists(re.search(r' -c "([^"]+)"', seen[0][0]).group(1))     # removed afterwards


def test_pins_list_only_what_is_installed():
    namespace = runpy.run_path(INSTALL, run_name="train_lora_install")
    versions = {"protobuf": "3.20.0", "torch": "2.13.0+cpu"}
    assert namespace["pinned_constraints"](versions.get) == ["protobuf==3.20.0", "torch==2.13.0+cpu"]


def test_runs_as_the_webui_runs_it(webui):
    """A subprocess with the WebUI root (here the stand-in) on PYTHONPATH, as run_extension_installer does."""
    stub = os.path.join(ROOT, "tests", "webui_stub")
    env = dict(os.environ, PYTHONPATH=stub + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, INSTALL], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "torch" not in done.stdout.replace("lycoris", "")
