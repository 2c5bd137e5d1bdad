from __future__ import annotations

import shutil
import threading

import pytest
from PIL import Image

from lib_lora.config import TaggingConfig
from lib_lora.errors import OfflineError, TaggerError
from lib_lora.tagging import model_files
from lib_lora.tagging.run import run_tagging
from lib_lora.tagging.snapshot import undo_last
from tests.fixtures.data.datagen import make_bad_corpus, save_image, tree_hash, write_caption
from tests.fixtures.data.wd14_model import build_model


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return str(build_model(base / "v2")), str(build_model(base / "v3", v3=True))


def _images(folder, colours):
    for name, colour in colours.items():
        save_image(folder / f"{name}.png", Image.new("RGB", (40, 30), colour))
    return folder


def test_tags_written_with_trigger_first_and_filters(tmp_path, model_dirs):
    folder = _images(tmp_path / "10_miku", {"red": (255, 0, 0), "blue": (0, 0, 255)})
    cfg = TaggingConfig(models=[model_dirs[0]], trigger_word="mk", write_mode="overwrite")
    seen = []
    result = run_tagging(tmp_path, cfg, progress=lambda done, total, _f: seen.append((done, total)))
    assert result.written == 2 and result.providers == {"v2": "CPUExecutionProvider"}
    assert (folder / "red.txt").read_text(encoding="utf-8") == "mk, hatsune miku, 1girl, ^_^, long hair"
    assert (folder / "blue.txt").read_text(encoding="utf-8") == "mk, blue background, 1girl, ^_^, long hair"
    assert seen[-1] == (2, 2)


def test_write_modes(tmp_path, model_dirs):
    _images(tmp_path, {"a": (0, 0, 255), "b": (0, 0, 255), "c": (0, 0, 255), "d": (0, 0, 255)})
    for name in "abc":
        write_caption(tmp_path / f"{name}.txt", "old tag, 1girl")
    base = dict(models=[model_dirs[0]], general_threshold=0.9, exclude_tags=["^_^"])
    run_tagging([tmp_path / "a.png", tmp_path / "d.png"], TaggingConfig(**base, write_mode="skip"))
    run_tagging([tmp_path / "b.png"], TaggingConfig(**base, write_mode="append"))
    run_tagging([tmp_path / "c.png"], TaggingConfig(**base, write_mode="prepend", trigger_word="trig"))
    read = lambda n: (tmp_path / f"{n}.txt").read_text(encoding="utf-8")  # noqa: E731
    assert read("a") == "old tag, 1girl"
    assert read("d") == "blue background, 1girl"
    assert read("b") == "old tag, 1girl, blue background"
    assert read("c") == "trig, blue background, 1girl, old tag"


def test_union_of_v2_and_v3_models(tmp_path, model_dirs):
    _images(tmp_path, {"x": (0, 0, 255)})
    run_tagging(tmp_path, TaggingConfig(models=list(model_dirs), general_threshold=0.9, write_mode="overwrite"))
    assert (tmp_path / "x.txt").read_text(encoding="utf-8") == "blue background, smile, 1girl"


def test_cancel_bad_files_and_undo(tmp_path, model_dirs):
    make_bad_corpus(tmp_path / "1_bad")
    before = tree_hash(tmp_path)
    stop = threading.Event()
    stop.set()
    cfg = TaggingConfig(models=[model_dirs[0]], write_mode="overwrite", batch_size=3)
    assert run_tagging(tmp_path, cfg, should_stop=stop.is_set).cancelled
    result = run_tagging(tmp_path, cfg)
    failed = {p.name for p, _why in result.failed}
    assert {"corrupt.png", "zero.jpg", "bomb.png", "truncated.png", "really_text.png"} <= failed
    assert result.written == 6 and "notes.pdf" not in failed
    images = {k: v for k, v in before.items() if not k.endswith(".txt")}
    after = tree_hash(tmp_path)
    assert all(after[k] == v for k, v in images.items())   # images never touched
    assert undo_last(tmp_path) == result.total
    restored = tree_hash(tmp_path)
    assert {k: v for k, v in restored.items() if not k.startswith(".lib_lora")} == before


def test_cyrillic_path(tmp_path, model_dirs):
    root = tmp_path / "Датасет 猫" / "5_персонаж"
    _images(root, {"картинка": (255, 0, 0)})
    local_model = shutil.copytree(model_dirs[0], tmp_path / "модели" / "тэггер")
    run_tagging(root.parent, TaggingConfig(models=[str(local_model)]))
    assert "hatsune miku" in (root / "картинка.txt").read_text(encoding="utf-8")


def test_local_folder_missing_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaggerError, match="model.onnx and selected_tags.csv"):
        model_files.resolve_model(str(tmp_path / "empty"))
    with pytest.raises(TaggerError, match="repo id"):
        model_files.resolve_model("/no/such/folder")


def test_offline_download_names_repo_and_folder(tmp_path):
    # tests/conftest.py sets HF_HUB_OFFLINE=1: the real hf_hub_download refuses to connect
    with pytest.raises(OfflineError) as err:
        model_files.resolve_model("SmilingWolf/wd-vit-tagger-v3", tmp_path / "models")
    text = str(err.value)
    assert "SmilingWolf/wd-vit-tagger-v3" in text and "model.onnx" in text and "selected_tags.csv" in text
    assert str(tmp_path / "models" / "SmilingWolf_wd-vit-tagger-v3") in text


def test_download_into_models_dir_then_reuse(tmp_path, model_dirs, monkeypatch):
    import huggingface_hub
    calls = []

    def fake_hub(repo_id, filename, local_dir):   # a stand-in for the hub: copies from a local "remote"
        calls.append((repo_id, filename))
        target = tmp_path / "models" / "owner_tagger"
        assert str(local_dir) == str(target)
        target.mkdir(parents=True, exist_ok=True)
        return shutil.copy(f"{model_dirs[0]}/{filename}", target / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub)
    files = model_files.resolve_model("owner/tagger", tmp_path / "models")
    assert files.onnx_path.is_file() and len(calls) == 2
    model_files.resolve_model("owner/tagger", tmp_path / "models")
    assert len(calls) == 2   # second time: found in the models dir, no download

    def refused(*_a, **_k):
        raise ConnectionError("network unreachable")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    with pytest.raises(OfflineError, match="owner/other"):
        model_files.resolve_model("owner/other", tmp_path / "models")


def test_webui_captioners_are_refused_headless_with_a_clear_error(tmp_path, capsys):
    import argparse

    from lib_lora.tagging.commands import add_tag_args, run_tag
    _images(tmp_path, {"x": (0, 0, 255)})
    with pytest.raises(TaggerError, match="inside the WebUI|Train LoRA tab"):
        run_tagging(tmp_path, TaggingConfig(captioner="blip"))
    parser = argparse.ArgumentParser()
    add_tag_args(parser)
    assert run_tag(parser.parse_args([str(tmp_path), "--captioner", "deepdanbooru"])) == 2
    err = capsys.readouterr().err
    assert "DeepDanbooru (WebUI)" in err and "tagging.captioner" in err
    assert not (tmp_path / "x.txt").exists()


def test_any_captioner_gets_filters_modes_trigger_and_is_closed(tmp_path):
    """A captioner that is not WD14 (as the WebUI's are) goes through the same filters and write modes."""
    from lib_lora.tagging.postprocess import filter_tags
    _images(tmp_path, {"a": (255, 0, 0), "b": (0, 255, 0)})
    write_caption(tmp_path / "b.txt", "old tag")

    class Colours:
        providers = {"colours": "cpu"}
        closed = 0

        def caption(self, images, flt):
            raw = [["red_theme" if img.getpixel((0, 0))[0] else "green_theme", "absurdres", "solo"] for img in images]
            return [filter_tags(tags, flt) for tags in raw]

        def close(self):
            self.closed += 1

    captioner = Colours()
    cfg = TaggingConfig(trigger_word="zq", write_mode="append", exclude_tags=["solo"])
    result = run_tagging(tmp_path, cfg, captioner=captioner)
    assert result.written == 2 and result.providers == {"colours": "cpu"} and captioner.closed == 1
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "zq, red theme"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "zq, old tag, green theme"
