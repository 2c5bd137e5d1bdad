"""One place picks the Gradio-version-specific keywords: A1111's Gradio 3.41 or Forge's 4.x (faked here)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import gradio
import pytest

from lib_lora.ui import gradio_compat

WEBUI_DIR = Path(__file__).resolve().parents[2] / "lib_lora" / "webui"

@pytest.fixture()
def fake_gradio(monkeypatch):
    def use(version: str):
        monkeypatch.setattr(gradio, "__version__", version)
    return use


@pytest.mark.parametrize("version, key", [("3.41.2", "_js"), ("4.40.0", "js"), ("5.9.1", "js")])
def test_client_code_keyword_follows_the_version(fake_gradio, version, key):
    fake_gradio(version)
    assert gradio_compat.js_kwargs("trainLoraStart") == {key: "trainLoraStart"}
    assert gradio_compat.js_kwargs("") == {}


def test_queue_and_launch_keywords(fake_gradio):
    fake_gradio("3.41.2")
    assert gradio_compat.queue_kwargs(4) == {"concurrency_count": 4}
    assert gradio_compat.launch_kwargs(show_api=False, quiet=True) == {"show_api": False, "quiet": True}
    fake_gradio("4.40.0")
    assert gradio_compat.queue_kwargs(4) == {"default_concurrency_limit": 4}
    assert gradio_compat.launch_kwargs(show_api=False) == {"show_api": False}
    fake_gradio("6.31.0")
    assert gradio_compat.launch_kwargs(show_api=False, quiet=True) == {"quiet": True}


def test_unreadable_version_counts_as_gradio_3():
    assert gradio_compat.gradio_major("4.0.0b1") == 4
    assert gradio_compat.gradio_major("dev") == 3


def test_uploads_from_either_gradio_become_paths(tmp_path):
    temp_file_object = SimpleNamespace(name=str(tmp_path / "a.png"))     # what Gradio 3 hands over
    assert gradio_compat.uploaded_paths(None) == []
    assert gradio_compat.uploaded_paths(temp_file_object) == [str(tmp_path / "a.png")]
    assert gradio_compat.uploaded_paths([temp_file_object, str(tmp_path / "b.png"), None]) == \
        [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


def test_the_running_gradio_accepts_what_compat_builds():
    """The kwargs are real keywords of this Gradio's event listeners and queue()."""
    with gradio.Blocks() as blocks:
        button = gradio.Button()
        box = gradio.Textbox()
        button.click(lambda v: v, [box], [box], show_progress=gradio_compat.HIDE_PROGRESS,
                     **gradio_compat.js_kwargs("(v) => [v]"))
    blocks.queue(**gradio_compat.queue_kwargs(2))
    [dependency] = blocks.config["dependencies"]
    assert dependency["js"] == "(v) => [v]" and dependency["show_progress"] == "hidden"


def test_no_tab_file_spells_a_version_specific_keyword():
    """Every tab file goes through gradio_compat for what differs between Gradio 3 and 4."""
    pattern = re.compile(r"\b_?js=|concurrency_count=|show_progress=(True|False)|getattr\((\w+), \"name\", \2\)")
    offenders = [f"{p.name}:{i}" for p in WEBUI_DIR.glob("*.py") if p.name != "gradio_compat.py"
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
