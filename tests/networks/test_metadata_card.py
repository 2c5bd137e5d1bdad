"""A trained file's metadata is sd-scripts' key for key and format for format, and the WebUI
v1.10.1 Lora card builds its metadata table from it.

The oracles are written from source, independently of lib_lora:
- `webui_read_metadata`: modules/sd_models.read_metadata_from_safetensors (values starting with
  '{' are JSON-decoded);
- `webui_card_table`: extensions-builtin/Lora/ui_edit_user_metadata.py
  LoraUserMetadataEditor.get_metadata_table (the part that reads the file's metadata);
- SD_SCRIPTS_KEYS: the keys kohya-ss/sd-scripts train_network.py (HEAD 48d368fa) writes for a
  --train_data_dir run, plus sai_model_spec's modelspec keys.
"""
from __future__ import annotations

import datetime
import html
import json
import struct

import pytest
from PIL import Image

from lib_lora.cli import main

SD_SCRIPTS_KEYS = """
ss_session_id ss_training_started_at ss_output_name ss_learning_rate ss_text_encoder_lr ss_unet_lr
ss_num_train_images ss_num_validation_images ss_num_reg_images ss_num_batches_per_epoch ss_num_epochs
ss_gradient_checkpointing ss_gradient_accumulation_steps ss_max_train_steps ss_lr_warmup_steps
ss_lr_scheduler ss_network_module ss_network_dim ss_network_alpha ss_network_dropout ss_mixed_precision
ss_full_fp16 ss_v2 ss_base_model_version ss_clip_skip ss_max_token_length ss_cache_latents ss_seed
ss_lowram ss_noise_offset ss_multires_noise_iterations ss_multires_noise_discount ss_adaptive_noise_scale
ss_zero_terminal_snr ss_training_comment ss_sd_scripts_commit_hash ss_optimizer ss_max_grad_norm
ss_caption_dropout_rate ss_caption_dropout_every_n_epochs ss_caption_tag_dropout_rate
ss_face_crop_aug_range ss_prior_loss_weight ss_min_snr_gamma ss_scale_weight_norms ss_ip_noise_gamma
ss_debiased_estimation ss_noise_offset_random_strength ss_ip_noise_gamma_random_strength ss_loss_type
ss_huber_schedule ss_huber_scale ss_huber_c ss_fp8_base ss_fp8_base_unet ss_validation_seed
ss_validation_split ss_max_validation_steps ss_validate_every_n_epochs ss_validate_every_n_steps
ss_resize_interpolation ss_batch_size_per_device ss_total_batch_size ss_resolution ss_color_aug
ss_flip_aug ss_random_crop ss_shuffle_caption ss_enable_bucket ss_bucket_no_upscale ss_min_bucket_reso
ss_max_bucket_reso ss_keep_tokens ss_dataset_dirs ss_reg_dataset_dirs ss_tag_frequency ss_bucket_info
ss_network_args ss_sd_model_name ss_training_finished_at ss_steps ss_epoch sshs_model_hash sshs_legacy_hash
modelspec.sai_model_spec modelspec.architecture modelspec.implementation modelspec.title
modelspec.resolution modelspec.date modelspec.prediction_type modelspec.implementation_version
""".split()


def webui_read_metadata(path) -> dict:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    out = {}
    for key, value in header.get("__metadata__", {}).items():
        out[key] = value
        if isinstance(value, str) and value[0:1] == "{":
            try:
                out[key] = json.loads(value)
            except Exception:
                pass
    return out


def webui_card_table(metadata: dict) -> list[tuple[str, object]]:
    table = []
    for key, label in {"ss_output_name": "Output name:", "ss_sd_model_name": "Model:",
                       "ss_clip_skip": "Clip skip:", "ss_network_module": "Kohya module:"}.items():
        value = metadata.get(key, None)
        if value is not None and str(value) != "None":
            table.append((label, html.escape(value)))
    started = metadata.get("ss_training_started_at")
    if started:
        table.append(("Date trained:", datetime.datetime.utcfromtimestamp(float(started)).strftime("%Y-%m-%d %H:%M")))
    info = metadata.get("ss_bucket_info")
    if info and "buckets" in info:
        resolutions: dict[str, int] = {}
        for _, bucket in info["buckets"].items():
            res = bucket["resolution"]
            res = f"{res[1]}x{res[0]}"
            resolutions[res] = resolutions.get(res, 0) + int(bucket["count"])
        ordered = sorted(resolutions, key=resolutions.get, reverse=True)
        text = html.escape(", ".join(ordered[0:4]))
        table.append(("Resolutions:" if len(ordered) > 1 else "Resolution:", text))
    count = 0
    for _, params in metadata.get("ss_dataset_dirs", {}).items():
        count += int(params.get("img_count", 0))
    if count:
        table.append(("Dataset size:", count))
    return table


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    """Two concepts (3 and 2 repeats), square and 3:1 images, one regularization folder; 2 steps at 128 px."""
    root = tmp_path_factory.mktemp("card")
    sizes = {"3_shp": [(64, 64), (64, 64), (192, 64)], "2_wide": [(192, 64)]}
    for folder, dims in sizes.items():
        (root / "train" / folder).mkdir(parents=True)
        for i, size in enumerate(dims):
            Image.new("RGB", size, (40 * i, 90, 200)).save(root / "train" / folder / f"{i}.png")
            (root / "train" / folder / f"{i}.txt").write_text("shp, square", encoding="utf-8")
    (root / "reg" / "1_person").mkdir(parents=True)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(root / "reg" / "1_person" / "r.png")
    overrides = {
        "model.pretrained": "tiny", "dataset.train_dir": root / "train", "dataset.reg_dir": root / "reg",
        "network.algo": "locon", "network.dim": 4, "network.alpha": 2, "network.conv_dim": 2,
        "dataset.resolution": 128, "dataset.min_bucket_reso": 64, "dataset.max_bucket_reso": 256,
        "training.epochs": 1, "training.max_train_steps": 2, "training.batch_size": 2,
        "training.lr_warmup": 0.5, "training.optimizer": "AdamW", "training.lr_scheduler": "constant_with_warmup",
        "training.device": "cpu", "output.output_dir": root / "out", "output.output_name": "card",
        "output.save_state": "false", "output.tensorboard": "false",
    }
    args = ["train"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    files = sorted((root / "out").glob("card*.safetensors"))
    assert files
    return files[-1]


def test_webui_card_renders_the_metadata_table(trained_file):
    metadata = webui_read_metadata(trained_file)
    table = dict(webui_card_table(metadata))  # raised TypeError on {"buckets": {"64x64": 2}}
    assert table["Output name:"] == "card" and table["Kohya module:"] == "networks.lora"
    assert table["Clip skip:"] == "1" and table["Model:"] and table["Date trained:"]
    # 128x128: 2 square x 3 repeats + the reg image; 192x64: 1 wide x 3 + 1 wide x 2; shown as height x width
    assert table["Resolutions:"] == "128x128, 64x192"
    assert table["Dataset size:"] == 4


def test_metadata_is_sd_scripts_key_for_key(trained_file):
    metadata = webui_read_metadata(trained_file)
    missing = [k for k in SD_SCRIPTS_KEYS if k not in metadata]
    assert not missing
    assert all(isinstance(v, str) for k, v in metadata.items() if k not in ("ss_bucket_info", "ss_dataset_dirs",
                                                                             "ss_reg_dataset_dirs", "ss_tag_frequency",
                                                                             "ss_network_args"))
    info = metadata["ss_bucket_info"]
    by_reso = {tuple(b["resolution"]): b["count"] for b in info["buckets"].values()}
    assert by_reso == {(128, 128): 2 * 3 + 1, (192, 64): 3 + 2}  # [w, h], with repeats; the reg image is square
    assert list(info["buckets"]) == [str(i) for i in range(len(info["buckets"]))]
    assert info["mean_img_ar_error"] == 0  # every image has its bucket's aspect
    assert metadata["ss_num_train_images"] == str(3 * 3 + 1 * 2)
    assert metadata["ss_num_reg_images"] == "1"
    assert metadata["ss_lr_warmup_steps"] == "1"  # half of 2 steps, a step count
    assert metadata["ss_dataset_dirs"] == {"3_shp": {"n_repeats": 3, "img_count": 3},
                                           "2_wide": {"n_repeats": 2, "img_count": 1}}
    assert metadata["ss_reg_dataset_dirs"] == {"1_person": {"n_repeats": 1, "img_count": 1}}
    assert metadata["ss_resolution"] == "(128, 128)" and metadata["ss_bucket_no_upscale"] == "False"
    assert metadata["ss_max_grad_norm"] == "1.0" and metadata["ss_total_batch_size"] == "2"
    assert metadata["modelspec.encoder_layer"] == "1"
    assert metadata["modelspec.implementation_version"].startswith("train-lora/")


def test_checkpoint_hashes_are_the_webui_and_sd_scripts_hashes(tmp_path):
    """ss_sd_model_hash: sha256 of the 64 KiB at 1 MiB, 8 hex digits (the WebUI's old model hash);
    ss_new_sd_model_hash: sha256 of the whole file. Nothing for a folder (a diffusers model)."""
    import hashlib

    from lib_lora.networks.metadata import checkpoint_hashes

    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert checkpoint_hashes(path) == (hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
                                       hashlib.sha256(data).hexdigest())
    assert checkpoint_hashes(tmp_path) is None and checkpoint_hashes(tmp_path / "missing") is None


@pytest.mark.parametrize("name", ["AdamW", "AdamW8bit", "Lion", "Lion8bit", "Prodigy", "DAdaptAdam", "Adafactor",
                                  "SGDNesterov", "AdamWScheduleFree"])
def test_ss_optimizer_names_the_class_the_trainer_builds(name):
    """sd-scripts writes optimizer_class.__module__ + '.' + __name__, then its arguments."""
    import torch

    from lib_lora.networks.metadata import optimizer_label
    from lib_lora.training.optim import build_optimizer

    try:
        optimizer = build_optimizer(name, [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1.0}], 0.01, "")
    except Exception as err:  # an optional package that is not installed here
        pytest.skip(str(err))
    cls = type(optimizer)
    assert optimizer_label(name, {"weight_decay": 0.01}) == f"{cls.__module__}.{cls.__name__}(weight_decay=0.01)"
