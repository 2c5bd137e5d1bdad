"""The tab's doors: with the WebUI on --listen, every field that names a path outside the allowed
roots is refused by the handler itself (what the page's buttons call), before a job starts or a
file is written; names the page sends back (preset, run, selected image) must be ones it was shown.

Handlers are found by their button's elem_id in the built tab and called with the components'
own values, overriding only the fields under test."""
from __future__ import annotations

import os
import types

import pytest
from PIL import Image

SECRET = b"not an image of the dataset"


def _train_form() -> dict:
    """The Train form's values as the page sends them (a list option arrives as its text)."""
    from lib_lora.config import TrainConfig
    from lib_lora.ui import form
    specs = form.field_specs(TrainConfig, "webui")
    return {s.elem_id(): v for s, v in zip(specs, form.values_from_config(TrainConfig(), specs))}


TRAIN_FORM = _train_form()


@pytest.fixture()
def tab(webui, tmp_path):
    """The WebUI tab, built on the WebUI backend, with a dataset inside the data folder and an
    outside folder holding one image and one text file."""
    from lib_lora.webui.backend import on_ui_tabs
    dataset = os.path.join(webui.root, "train_lora", "datasets", "door", "10_cat")
    os.makedirs(dataset, exist_ok=True)
    Image.new("RGB", (64, 64), "red").save(os.path.join(dataset, "a.png"))
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (64, 64), "blue").save(outside / "secret.png")
    (outside / "secret.txt").write_bytes(SECRET)
    [(blocks, _title, _id)] = on_ui_tabs()
    yield types.SimpleNamespace(blocks=blocks, dataset=os.path.dirname(dataset), outside=outside, webui=webui)


@pytest.fixture()
def listening(webui):
    webui.shared.cmd_opts.listen = True
    yield
    webui.shared.cmd_opts.listen = False


def _by_elem_id(blocks, elem_id):
    return next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def press(blocks, elem_id: str, trigger: str = "click", **fields):
    """Call the handler that `trigger` on `elem_id` runs, with the inputs' values (fields by elem_id)."""
    target = _by_elem_id(blocks, elem_id)._id
    deps = blocks.config["dependencies"]
    [index] = [i for i, d in enumerate(deps) if d["targets"] == [target] and d["trigger"] == trigger]
    inputs = [blocks.blocks[i] for i in deps[index]["inputs"]]
    values = [fields.get(c.elem_id, TRAIN_FORM.get(c.elem_id, c.value)) for c in inputs]
    unknown = set(fields) - {c.elem_id for c in inputs}
    assert not unknown, unknown
    out = blocks.fns[index].fn(*values)
    return out if isinstance(out, (list, tuple)) else [out]


def _status(outputs) -> str:
    return str(outputs[0])


def _files(folder) -> dict:
    return {os.path.join(top, n): os.path.getsize(os.path.join(top, n))
            for top, _dirs, names in os.walk(folder) for n in names}


def _refused(outputs, path) -> None:
    text = _status(outputs)
    assert "refused" in text and "--listen" in text and "train_lora_allowed_roots" in text, text
    assert str(path) in text


@pytest.mark.usefixtures("listening")
@pytest.mark.parametrize("button", ["train_lora_dataset_check", "train_lora_prep_button"])
def test_a_dataset_folder_outside_the_roots_is_refused(tab, button):
    before = _files(tab.outside.parent)
    outputs = press(tab.blocks, button, train_lora_dataset_dir=str(tab.outside))
    _refused(outputs, tab.outside)
    assert _files(tab.outside.parent) == before                     # no _prep copy written beside it


@pytest.mark.usefixtures("listening")
def test_prep_output_outside_the_roots_is_refused(tab):
    out = tab.outside / "prep_here"
    outputs = press(tab.blocks, "train_lora_prep_button", train_lora_dataset_dir=tab.dataset,
                    train_lora_prep_out=str(out))
    _refused(outputs, out)
    assert not out.exists()


@pytest.mark.usefixtures("listening")
def test_prep_beside_a_dataset_that_is_itself_a_root_is_refused(tab):
    """The default destination (<dataset>_prep, beside it) is checked too: beside a root is outside it."""
    from lib_lora.path_policy import SETTING
    opts = tab.webui.shared.opts
    opts.data[SETTING] = str(tab.outside)
    try:
        outputs = press(tab.blocks, "train_lora_prep_button", train_lora_dataset_dir=str(tab.outside),
                        train_lora_prep_out="")
    finally:
        opts.data[SETTING] = ""
    _refused(outputs, f"{tab.outside}_prep")
    assert not os.path.exists(f"{tab.outside}_prep")


@pytest.mark.usefixtures("listening")
def test_a_dataset_with_a_symlink_leading_outside_is_refused(tab):
    link = os.path.join(tab.dataset, "10_cat", "b.png")
    os.symlink(tab.outside / "secret.png", link)
    try:
        outputs = press(tab.blocks, "train_lora_dataset_check", train_lora_dataset_dir=tab.dataset)
        assert "symlink" in _status(outputs) and link in _status(outputs)
    finally:
        os.remove(link)


@pytest.mark.usefixtures("listening")
def test_a_caption_is_never_written_beside_an_image_outside_the_dataset(tab):
    image = tab.outside / "secret.png"
    outputs = press(tab.blocks, "train_lora_caption_save", train_lora_dataset_dir=tab.dataset,
                    train_lora_caption_image=str(image), train_lora_caption_text="pwned")
    _refused(outputs, image)
    assert (tab.outside / "secret.txt").read_bytes() == SECRET


def test_on_localhost_the_selected_image_must_still_be_in_the_dataset(tab):
    image = tab.outside / "secret.png"
    outputs = press(tab.blocks, "train_lora_caption_save", train_lora_dataset_dir=tab.dataset,
                    train_lora_caption_image=str(image), train_lora_caption_text="pwned")
    assert "not in the dataset folder" in _status(outputs)
    assert (tab.outside / "secret.txt").read_bytes() == SECRET


@pytest.mark.usefixtures("listening")
@pytest.mark.parametrize("button", ["train_lora_tag_button", "train_lora_bulk_apply", "train_lora_bulk_undo",
                                    "train_lora_gallery_refresh"])
def test_tagging_a_folder_outside_the_roots_is_refused(tab, button):
    before = _files(tab.outside)
    _refused(press(tab.blocks, button, train_lora_dataset_dir=str(tab.outside)), tab.outside)
    assert _files(tab.outside) == before


@pytest.mark.usefixtures("listening")
def test_a_local_tagger_model_outside_the_roots_is_refused(tab):
    outputs = press(tab.blocks, "train_lora_tag_button", train_lora_dataset_dir=tab.dataset,
                    train_lora_tagger_model=str(tab.outside))
    _refused(outputs, tab.outside)


@pytest.mark.usefixtures("listening")
@pytest.mark.parametrize("field", ["train_lora_dataset_train_dir", "train_lora_dataset_reg_dir"])
def test_a_run_naming_a_path_outside_the_roots_does_not_start(tab, field):
    from lib_lora.webui.host import webui_jobs
    before = list(webui_jobs().jobs)
    fields = {"train_lora_dataset_train_dir": tab.dataset, field: str(tab.outside)}
    _refused(press(tab.blocks, "train_lora_start", **fields), tab.outside)
    assert list(webui_jobs().jobs) == before


@pytest.mark.usefixtures("listening")
def test_the_steps_calculator_does_not_walk_a_folder_outside_the_roots(tab):
    outputs = press(tab.blocks, "train_lora_dataset_train_dir", trigger="change",
                    train_lora_dataset_train_dir=str(tab.outside))
    assert "refused" in _status(outputs) and "images" not in _status(outputs)


@pytest.mark.usefixtures("listening")
@pytest.mark.parametrize("button, fields, named", [
    ("train_lora_extract_button", {"train_lora_extract_base": "{out}/a.safetensors",
                                   "train_lora_extract_tuned": "{lora}/b.safetensors",
                                   "train_lora_extract_out": "{lora}/c.safetensors"}, "{out}/a.safetensors"),
    ("train_lora_extract_button", {"train_lora_extract_base": "{lora}/a.safetensors",
                                   "train_lora_extract_tuned": "{lora}/b.safetensors",
                                   "train_lora_extract_out": "{out}/c.safetensors"}, "{out}/c.safetensors"),
    ("train_lora_merge_button", {"train_lora_merge_loras": "{lora}/a.safetensors\n{out}/b.safetensors",
                                 "train_lora_merge_out": "{lora}/m.safetensors"}, "{out}/b.safetensors"),
    ("train_lora_merge_button", {"train_lora_merge_loras": "{lora}/a.safetensors",
                                 "train_lora_merge_base": "{out}/model.safetensors",
                                 "train_lora_merge_out": "{lora}/m.safetensors"}, "{out}/model.safetensors"),
    ("train_lora_resize_button", {"train_lora_resize_in": "{lora}/a.safetensors",
                                  "train_lora_resize_out": "{out}/r.safetensors"}, "{out}/r.safetensors"),
])
def test_tools_refuse_inputs_and_outputs_outside_the_roots(tab, button, fields, named):
    where = {"out": str(tab.outside), "lora": tab.webui.shared.cmd_opts.lora_dir}
    before = _files(tab.outside)
    outputs = press(tab.blocks, button, **{k: v.format(**where) for k, v in fields.items()})
    _refused(outputs, named.format(**where))
    assert _files(tab.outside) == before


@pytest.mark.parametrize("name", ["../../../outside/evil", "/etc/passwd", "character\x00"])
def test_a_preset_must_be_one_the_page_listed(tab, name):
    outputs = press(tab.blocks, "train_lora_preset_apply", train_lora_preset=name)
    assert "There is no preset" in _status(outputs)


@pytest.mark.parametrize("button", ["train_lora_grid_button", "train_lora_best_button"])
def test_a_run_to_evaluate_must_be_one_in_the_lora_folder(tab, button):
    outputs = press(tab.blocks, button, train_lora_eval_run="../../outside/x")
    assert "There is no run" in _status(outputs)


@pytest.mark.usefixtures("listening")
def test_an_upload_that_names_a_server_file_is_refused(tab):
    """What Gradio 3 hands over when a page claims a server path as an already uploaded file."""
    claimed = types.SimpleNamespace(name="/tmp/gradio/abc/secret.png", orig_name=str(tab.outside / "secret.png"))
    outputs = press(tab.blocks, "train_lora_upload_button", train_lora_upload_files=[claimed])
    _refused(outputs, tab.outside / "secret.png")


def test_on_localhost_the_tab_may_use_any_folder(tab):
    outputs = press(tab.blocks, "train_lora_dataset_check", train_lora_dataset_dir=str(tab.outside))
    assert "started" in _status(outputs)


def test_the_standalone_tab_on_a_network_address_refuses_folders_outside_its_data(tmp_path):
    from lib_lora.ui.backend import standalone_backend
    from lib_lora.path_policy import standalone_policy
    from lib_lora.ui.tab import build_tab
    backend = standalone_backend(tmp_path / "data")
    blocks = build_tab(backend)
    backend.path_policy = standalone_policy("0.0.0.0", backend.data_dir)     # as run_ui sets it for --host
    outputs = press(blocks, "train_lora_dataset_check", train_lora_dataset_dir=str(tmp_path))
    assert "refused" in _status(outputs) and "--host" in _status(outputs) and str(tmp_path) in _status(outputs)
    # the base model is a field of the standalone tab only (the WebUI trains on its loaded model)
    inside = backend.datasets_root / "d"
    inside.mkdir(parents=True)
    outputs = press(blocks, "train_lora_start", train_lora_dataset_train_dir=str(inside),
                    train_lora_model_pretrained=str(tmp_path / "model.safetensors"))
    assert "refused" in _status(outputs) and "model.safetensors" in _status(outputs)


def test_the_webui_form_leaves_out_what_the_webui_overrides(tab):
    """The WebUI trains on its loaded model, device and Lora folder: no fields for those there."""
    ids = {getattr(b, "elem_id", None) for b in tab.blocks.blocks.values()}
    assert "train_lora_dataset_train_dir" in ids
    assert not {"train_lora_model_pretrained", "train_lora_training_device", "train_lora_training_num_threads",
                "train_lora_output_output_dir"} & ids
