"""The shipped diffusers configs are complete, offline, and describe the real architectures.

Every pipeline is built on the meta device (no weights are allocated) from the
assembled folder alone, with HF_HUB_OFFLINE set by tests/conftest.py. SD1.5 and
SD2 UNets, and the OpenCLIP text encoders of SD2 and SDXL, are checked tensor by
tensor: diffusers' own converter maps the checkpoint layout (UNet:
lib_lora/ops/sd15_layout.py) onto exactly the model our config builds. The SDXL
UNet has no ldm table here, so it is checked against SDXL base 1.0's published
parameter counts.
"""
from __future__ import annotations

import json

import pytest
import torch

from lib_lora.errors import ModelError
from lib_lora.models import model_configs
from lib_lora.models.tiny import build_clip_tokenizer
from lib_lora.ops.sd15_layout import unet_shapes

# openai/clip-vit-large-patch14's text model (SD1.x, and SDXL's first text encoder), as published:
# 49408 x 768 token and 77 x 768 position embeddings, 12 layers of 7,087,872, final norm 1,536
CLIP_VIT_L_TEXT_PARAMETERS = 123_060_480


def _part(folder, name: str, library: str, class_name: str):
    """One pipeline component from its config only: models on the meta device."""
    import diffusers
    import transformers

    cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
    if class_name.endswith("Tokenizer"):
        return cls.from_pretrained(str(folder / name), local_files_only=True)
    if library == "diffusers" and "Scheduler" in class_name:
        return cls.from_pretrained(str(folder), subfolder=name, local_files_only=True)
    with torch.device("meta"):
        if library == "diffusers":
            return cls.from_config(cls.load_config(str(folder), subfolder=name, local_files_only=True))
        return cls(cls.config_class.from_pretrained(str(folder / name), local_files_only=True))


def meta_pipeline(name: str):
    """The pipeline class named by model_index.json, built from every component it lists."""
    import diffusers

    folder = model_configs.materialise_config(name)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    parts = {key: None if value[0] is None else _part(folder, key, *value)   # null: a component left out
             for key, value in index.items() if isinstance(value, list)}
    flags = {key: value for key, value in index.items() if not key.startswith("_") and not isinstance(value, list)}
    return getattr(diffusers, index["_class_name"])(**parts, **flags)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name, context, linear", [("sd15", 768, False), ("sd21_base", 1024, True),
                                                   ("sd21_v", 1024, True)])
def test_sd_configs_build_the_pipeline_that_ldm_checkpoints_convert_into(name, context, linear):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    pipe = meta_pipeline(name)
    ldm = unet_shapes(320, context)
    if linear:   # SD2's transformers project in and out with Linear layers
        ldm = {k: s[:2] if k.endswith(("proj_in.weight", "proj_out.weight")) else s for k, s in ldm.items()}
    converted = convert_ldm_unet_checkpoint({k: torch.empty(s, device="meta") for k, s in ldm.items()},
                                            pipe.unet.config)
    assert {k: tuple(v.shape) for k, v in converted.items()} == \
        {k: tuple(v.shape) for k, v in pipe.unet.state_dict().items()}
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if name == "sd21_v" else "epsilon")


def test_sd15_text_encoder_is_clip_vit_l_and_sd2_is_the_penultimate_openclip_h():
    sd15, sd2 = meta_pipeline("sd15"), meta_pipeline("sd21_base")
    assert _count(sd15.text_encoder) == CLIP_VIT_L_TEXT_PARAMETERS
    # OpenCLIP ViT-H/14's text tower without its last block (SD2 uses the penultimate layer): 23 x 1024
    assert (sd2.text_encoder.config.num_hidden_layers, sd2.text_encoder.config.hidden_size) == (23, 1024)
    assert sd2.tokenizer.pad_token_id == 0 and sd15.tokenizer.pad_token_id == sd15.tokenizer.eos_token_id


def openclip_text_shapes(width: int, layers: int, projection: int) -> dict[str, tuple[int, ...]]:
    """The text tower of an OpenCLIP checkpoint as SD2 and SDXL files carry it (resblocks, in_proj)."""
    shapes = {"token_embedding.weight": (49408, width), "positional_embedding": (77, width),
              "ln_final.weight": (width,), "ln_final.bias": (width,), "text_projection": (width, projection),
              "logit_scale": ()}
    for n in range(layers):
        block = f"transformer.resblocks.{n}."
        shapes.update({block + "attn.in_proj_weight": (3 * width, width), block + "attn.in_proj_bias": (3 * width,),
                       block + "attn.out_proj.weight": (width, width), block + "attn.out_proj.bias": (width,),
                       block + "mlp.c_fc.weight": (4 * width, width), block + "mlp.c_fc.bias": (4 * width,),
                       block + "mlp.c_proj.weight": (width, 4 * width), block + "mlp.c_proj.bias": (width,)})
        shapes.update({block + f"{ln}.{p}": (width,) for ln in ("ln_1", "ln_2") for p in ("weight", "bias")})
    return shapes


@pytest.mark.parametrize("name, part, prefix, width, layers", [
    ("sd21_base", "text_encoder", "cond_stage_model.model.", 1024, 24),          # ViT-H/14, last block unused
    ("sdxl_base", "text_encoder_2", "conditioner.embedders.1.model.", 1280, 32),  # ViT-bigG/14 + projection
])
def test_openclip_encoders_of_real_checkpoints_convert_into_the_shipped_text_configs(name, part, prefix, width,
                                                                                      layers):
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    encoder = getattr(meta_pipeline(name), part)
    checkpoint = {prefix + k: torch.empty(s, device="meta")
                  for k, s in openclip_text_shapes(width, layers, width).items()}
    converted = convert_open_clip_checkpoint(encoder, checkpoint, prefix=prefix)
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_sdxl_config_builds_sdxl_base_with_its_published_sizes():
    pipe = meta_pipeline("sdxl_base")
    # parameter counts of stabilityai/stable-diffusion-xl-base-1.0's parts, as published
    assert _count(pipe.unet) == 2_567_463_684
    assert _count(pipe.text_encoder_2) == 694_659_840
    assert _count(pipe.vae) == 83_653_863
    assert _count(pipe.text_encoder) == CLIP_VIT_L_TEXT_PARAMETERS
    assert pipe.unet.config.projection_class_embeddings_input_dim == 1280 + 6 * 256  # pooled bigG + size ids
    assert pipe.vae.config.scaling_factor == 0.13025
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"


def test_assembled_tokenizers_match_the_tiny_models_clip_tokenizer():
    folder = model_configs.materialise_config("sdxl_base")
    reference = build_clip_tokenizer()
    caption = "1girl, shimakaze (azur lane), looking at viewer"
    for sub in ("tokenizer", "tokenizer_2"):
        tokenizer = _part(folder, sub, "transformers", "CLIPTokenizer")
        assert tokenizer(caption).input_ids == reference(caption).input_ids


def test_config_folder_is_assembled_once_and_reused():
    first = model_configs.materialise_config("sd15")
    stamp = (first / "unet" / "config.json").stat().st_mtime_ns
    assert model_configs.materialise_config("sd15") == first
    assert (first / "unet" / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]   # no staging folder left


def test_missing_clip_vocabulary_says_where_and_how_to_get_it(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "bpe_simple_vocab_16e6.txt.gz"
    monkeypatch.setenv("LIB_LORA_CLIP_BPE", str(missing))
    with pytest.raises(ModelError, match="CLIP vocabulary file") as err:
        model_configs.materialise_config("sd21_v")
    assert err.value.where == str(missing) and "LIB_LORA_CLIP_BPE" in err.value.fix


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ModelError, match="sd15, sd21_base, sd21_v, sdxl_base"):
        model_configs.materialise_config("sd3")
