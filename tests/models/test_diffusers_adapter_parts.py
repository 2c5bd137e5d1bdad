"""DiffusersModel: the parts offloading moves, and the pad ids each text encoder is fed."""
from __future__ import annotations

import pytest

from lib_lora.models import model_configs
from lib_lora.models.diffusers_adapter import DiffusersModel
from lib_lora.models.tiny import build_tiny_sd1, build_tiny_sdxl


@pytest.fixture(scope="module")
def tiny_sdxl():
    return DiffusersModel(build_tiny_sdxl(seed=0), name="tiny-xl")


def test_offload_parts_name_the_vae_and_every_text_encoder(tiny_sdxl):
    sd1 = DiffusersModel(build_tiny_sd1(seed=0), name="tiny")
    assert sd1.offload_parts() == {"vae": [sd1.pipe.vae], "text_encoder": [sd1.pipe.text_encoder]}
    parts = tiny_sdxl.offload_parts()
    assert parts["vae"] == [tiny_sdxl.pipe.vae]
    assert parts["text_encoder"] == [tiny_sdxl.pipe.text_encoder, tiny_sdxl.pipe.text_encoder_2]
    assert tiny_sdxl.unet not in parts["vae"] + parts["text_encoder"]


def test_sdxl_bigg_encoder_gets_pad_zero_after_eos_like_the_webui(tiny_sdxl, monkeypatch):
    from transformers import CLIPTokenizer

    # the shipped SDXL tokenizer_2 pads with "!" (id 0), as OpenCLIP does
    folder = model_configs.materialise_config("sdxl_base")
    monkeypatch.setattr(tiny_sdxl.pipe, "tokenizer_2", CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2")))
    seen = {}

    def record(key):
        def hook(_module, _args, kwargs):
            seen[key] = kwargs["input_ids"]
        return hook
    hooks = [enc.register_forward_pre_hook(record(key), with_kwargs=True)
             for key, enc in (("te1", tiny_sdxl.pipe.text_encoder), ("te2", tiny_sdxl.pipe.text_encoder_2))]
    try:
        tiny_sdxl.encode_text(["a red circle"], clip_skip=1, max_token_length=75)
    finally:
        for hook in hooks:
            hook.remove()
    eos = tiny_sdxl.pipe.tokenizer.eos_token_id
    te1, te2 = seen["te1"][0].tolist(), seen["te2"][0].tolist()
    end = te1.index(eos)
    assert te1[:end + 1] == te2[:end + 1]                          # the same words and first EOS
    assert set(te1[end + 1:]) == {eos} and set(te2[end + 1:]) == {0}
