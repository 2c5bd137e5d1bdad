"""Puts the WebUI stand-in (tests/webui_stub) first on sys.path for the tests in this folder only.

Each test module gets fresh stand-in modules (state, opts, loaded model) and, as in the WebUI,
the built-in Lora extension's class-wide patches of torch.nn.Linear/Conv2d/GroupNorm/LayerNorm/
MultiheadAttention (the stand-in's lora_script), so every test here trains through them.
Afterwards those patches and the class-wide attention patch are undone, every module loaded
from the stand-in is dropped from sys.modules, and sys.path is restored, so the rest of the
suite never sees a fake `modules` or a patched torch."""
from __future__ import annotations

import os
import sys
import types

import pytest

STUB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "webui_stub")
STUB_TOP_LEVEL = ("modules", "launch", "networks", "lora_patches", "lora_script")


def _stub_module_names() -> list[str]:
    names = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if name.split(".")[0] in STUB_TOP_LEVEL and (not file or file.startswith(STUB_DIR)):
            names.append(name)
    return names


def _undo_class_patches() -> None:
    """Put back every torch function the stand-in patched (whether or not a test already unloaded
    the scripts), so the next test module patches torch's own functions again."""
    patches = sys.modules.get("modules.patches")
    for key_originals in (patches.originals.values() if patches is not None else ()):
        for (obj, field), original in list(key_originals.items()):
            setattr(obj, field, original)
        key_originals.clear()


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    """The stand-in WebUI: a namespace of its modules, with a temp data folder."""
    root = str(tmp_path_factory.mktemp("webui_root"))
    os.environ["TRAIN_LORA_STUB_ROOT"] = root
    saved_path = list(sys.path)
    sys.path.insert(0, STUB_DIR)
    try:
        from modules import (call_queue, devices, errors, extra_networks, images, processing, script_callbacks,
                             scripts, sd_hijack, sd_models, shared)
        import launch
        import lora_script  # noqa: F401  (patches torch.nn class-wide, as the WebUI's built-in Lora does)
        import networks
        os.makedirs(shared.cmd_opts.lora_dir, exist_ok=True)
        yield types.SimpleNamespace(
            root=root, shared=shared, sd_models=sd_models, devices=devices, processing=processing,
            script_callbacks=script_callbacks, scripts=scripts, sd_hijack=sd_hijack, call_queue=call_queue,
            extra_networks=extra_networks, images=images, launch=launch, networks=networks, errors=errors)
    finally:
        hijack = sys.modules.get("modules.sd_hijack")
        if hijack is not None:
            hijack.undo_optimizations()
        _undo_class_patches()
        for name in _stub_module_names():
            del sys.modules[name]
        sys.path[:] = saved_path
        os.environ.pop("TRAIN_LORA_STUB_ROOT", None)


def _stub_exception_records() -> list | None:
    """The stand-in's errors.exception_records, where the WebUI swallows callback, script and
    wrapped-call errors; None while no stand-in is loaded."""
    errors = sys.modules.get("modules.errors")
    if errors is None or not (getattr(errors, "__file__", "") or "").startswith(STUB_DIR):
        return None
    return errors.exception_records


def describe_records(records: list) -> str:
    return "\n".join(f"{r['exception']!r} at {r['traceback'][-1][0] if r['traceback'] else '?'}" for r in records)


@pytest.fixture(autouse=True)
def no_swallowed_errors():
    """Fail a test after which the WebUI would have swallowed an error (a callback, a script or a
    wrapped Gradio call that raised): such an error never reaches pytest by itself. A test that
    expects one reads errors.exception_records and clears it."""
    records = _stub_exception_records()
    before = list(records or ())     # left by a module fixture's setup or an earlier test's teardown
    if records is not None:
        records.clear()
    yield
    records = _stub_exception_records()
    after = list(records or ())
    if records is not None:
        records.clear()
    assert not before + after, "the WebUI swallowed errors:\n" + describe_records(before + after)


@pytest.fixture()
def fresh_state(webui):
    """A clean shared.state and no loaded networks for each test."""
    webui.shared.state.begin("test")
    webui.networks.loaded_networks.clear()
    yield webui
    webui.shared.state.end()


def load_family(webui, family: str):
    """Make `family` the loaded tiny model (builds it on first access of shared.sd_model)."""
    if webui.sd_models.model_family != family or webui.sd_models.model_data.sd_model is None:
        webui.sd_models.set_model_family(family)
    return webui.shared.sd_model


