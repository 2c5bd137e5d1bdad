"""Files: save/load, sd-scripts hashes, metadata, LyCORIS files, diffusers' reader, the WebUI's math."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from torch import nn

from lib_lora.config import NetworkConfig
from lib_lora.errors import NetworkFileError
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import build_metadata, create_network, load_network_file, save_network_file


def perturb(net):
    torch.manual_seed(4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_save_load_hashes_and_metadata(tmp_path, clip_te):
    net = create_network([NetworkTarget("lora_te", clip_te, "hf_clip", "text_encoder")], NetworkConfig(dim=4))
    perturb(net)
    meta = build_metadata(NetworkConfig(dim=4), "sd2", "v", title="my lora",
                          training={"epoch": 3, "ss_tag_frequency": {"5_x": {"smile": 2}}, "flip_aug": False})
    path = save_network_file(tmp_path / "Ёжик 猫.safetensors", net.trainable_state(), meta, "bf16")
    tensors, read = load_network_file(path)
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert read["ss_base_model_version"] == "sd_v2_v" and read["ss_v2"] == "True"
    assert read["ss_epoch"] == "3" and json.loads(read["ss_tag_frequency"]) == {"5_x": {"smile": 2}}
    assert read["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert read["ss_network_module"] == "networks.lora" and read["ss_flip_aug"] == "False"
    # Independent recomputation of sd-scripts' hashes: serialise with only ss_* metadata.
    from safetensors.torch import save
    data = save(tensors, {k: v for k, v in read.items() if k.startswith("ss_")})
    n = int.from_bytes(data[:8], "little")
    assert read["sshs_model_hash"] == hashlib.sha256(data[8 + n:]).hexdigest()
    assert read["sshs_legacy_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    # The model hash is also what the WebUI computes from the file itself (addnet hash).
    raw = path.read_bytes()
    assert read["sshs_model_hash"] == hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()


def test_lycoris_metadata():
    meta = build_metadata(NetworkConfig(algo="lokr", dora=True, conv_dim=2), "sdxl", title="t")
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"])["algo"] == "lokr"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["modelspec.prediction_type"] == "epsilon"
    assert all(isinstance(v, str) for v in meta.values())


class PickledObject:
    """Arbitrary pickled code: torch.load(weights_only=True) must refuse it."""


def test_bad_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(NetworkFileError, match="damaged"):
        load_network_file(junk)
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(NetworkFileError, match="Unsupported"):
        load_network_file(tmp_path / "x.bin")
    foreign = save_network_file(tmp_path / "ckpt.safetensors", {"model.diffusion_model.x.weight": torch.ones(2)},
                                {}, "fp32")
    with pytest.raises(NetworkFileError, match="not LoRA keys"):
        load_network_file(foreign)
    pt = tmp_path / "old.pt"
    torch.save({"lora_unet_a.lora_down.weight": torch.ones(1, 2)}, pt)
    assert list(load_network_file(pt)[0]) == ["lora_unet_a.lora_down.weight"]
    evil = tmp_path / "evil.pt"
    torch.save({"lora_unet_a.alpha": torch.ones(1), "obj": PickledObject()}, evil)
    with pytest.raises(NetworkFileError, match="plain tensors"):
        load_network_file(evil)


def test_file_written_by_lycoris_loads(tmp_path):
    import tiny_models

    sd1_unet = tiny_models.sd1_unet()  # LyCORIS leaves instance forwards behind: keep it off the shared UNet
    from lycoris.kohya import LycorisNetworkKohya  # noqa: F401  (the kohya wrapper sd-scripts uses)
    from lycoris import create_lycoris, LycorisNetwork

    saved = {"target_module": LycorisNetwork.TARGET_REPLACE_MODULE, "lora_prefix": LycorisNetwork.LORA_PREFIX}
    LycorisNetwork.apply_preset({"target_module": ["Transformer2DModel"], "lora_prefix": "lora_unet"})
    try:
        lyco = create_lycoris(sd1_unet, 1.0, linear_dim=4, linear_alpha=2, algo="loha")
        lyco.apply_to()  # registers its modules (state_dict is empty before)
        path = tmp_path / "lyco.safetensors"
        lyco.restore()  # gives the shared UNet its forwards back
        lyco.save_weights(str(path), torch.float16, {"ss_network_module": "lycoris.kohya"})
    finally:
        LycorisNetwork.apply_preset(saved)  # its presets are class-wide state
    tensors, meta = load_network_file(path)
    ours = create_network([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")],
                          NetworkConfig(algo="loha", dim=4, alpha=2))
    assert {k.split(".")[0] for k in tensors} == set(ours.module_names())  # LyCORIS picks the same layers
    ours.load_trainable_state(tensors)  # continued training from a LyCORIS file


# ---- the WebUI v1.10.1 loader's math, written from webui-api.md 2.3 --------------------------
def webui_updown(parts: dict[str, torch.Tensor], weight: torch.Tensor, multiplier: float) -> torch.Tensor:
    alpha = parts["alpha"].item() if "alpha" in parts else None
    if "hada_w1_a" in parts:
        dim = parts["hada_w1_b"].shape[0]
        updown = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"])
    elif "lokr_w1" in parts or "lokr_w1_a" in parts:
        w1 = parts["lokr_w1"] if "lokr_w1" in parts else parts["lokr_w1_a"] @ parts["lokr_w1_b"]
        w2 = parts["lokr_w2"] if "lokr_w2" in parts else parts["lokr_w2_a"] @ parts["lokr_w2_b"]
        dim = parts["lokr_w2_b"].shape[0] if "lokr_w2_b" in parts else None
        updown = torch.kron(w1[:, :, None, None], w2) if w2.dim() == 4 else torch.kron(w1, w2)
    else:
        up, down = parts["lora_up.weight"], parts["lora_down.weight"]
        dim = down.shape[0]
        updown = (up.flatten(1) @ down.flatten(1)) if down.shape[2:] in ((), (1, 1)) else \
            torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    updown = updown.reshape(weight.shape) * (alpha / dim if dim is not None and alpha is not None else 1.0)
    if "dora_scale" in parts:
        # Our files keep the DoRA magnitude per output row (LyCORIS' default): the norm is taken per
        # row of the merged weight. The WebUI v1.10.1 itself normalises per input column only
        # (test_dora_readers.py records that it misreads these files).
        merged = updown + weight
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(merged.shape[0], *[1] * (weight.dim() - 1))
        updown = merged * (parts["dora_scale"] / norm) - weight
    return updown * multiplier


class Layers(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 24)
        self.pointwise = nn.Conv2d(16, 24, 1)
        self.conv = nn.Conv2d(16, 24, 3, padding=1)


@pytest.mark.parametrize("dora", [False, True], ids=["plain", "dora"])
@pytest.mark.parametrize("algo,dim", [("locon", 4), ("loha", 4), ("lokr", 2), ("lokr", 16)])
def test_saved_file_matches_webui_math(tmp_path, algo, dim, dora):
    from lib_lora.networks import ALGORITHMS

    torch.manual_seed(0)
    layers = Layers()
    modules = {name: ALGORITHMS[algo](f"lora_unet_{name}", layer, dim, 3.0, dora=dora)
               for name, layer in layers.named_children()}
    state = {}
    for name, module in modules.items():
        perturb(module)
        module.multiplier = 0.8
        state.update({f"lora_unet_{name}.{k}": v for k, v in module.file_state().items()})
    tensors, _ = load_network_file(save_network_file(tmp_path / "n.safetensors", state, {}, "fp32"))
    for name, module in modules.items():
        parts = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"lora_unet_{name}.")}
        weight = module.layer.weight.detach()
        assert torch.allclose(webui_updown(parts, weight, 0.8), module.full_delta(weight), atol=1e-5), name


def diffusers_module_name(key: str) -> str:
    key = key.split(".", 1)[1]
    key = re.sub(r"self_attn\.to_(q|k|v|out)_lora", r"self_attn.\1_proj", key)  # diffusers' older TE names
    key = re.sub(r"\.processor\.(to_q|to_k|to_v|to_out)_lora", r".\1", key)
    key = re.sub(r"(\.lora(_linear_layer)?)?\.(down|up)\.weight$", "", key)
    return re.sub(r"\.to_out$", ".to_out.0", key)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("algo", ["lora", "locon"])
def test_diffusers_reads_our_keys(sd1_unet, sdxl_unet, clip_te, family, algo):
    """diffusers' own kohya converter maps every key to a real module (nothing dropped or unknown)."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    unet, mixin = (sd1_unet, StableDiffusionLoraLoaderMixin) if family == "sd1" else \
        (sdxl_unet, StableDiffusionXLLoraLoaderMixin)
    prefix = "lora_te" if family == "sd1" else "lora_te1"
    net = create_network([NetworkTarget("lora_unet", unet, "diffusers", "unet"),
                          NetworkTarget(prefix, clip_te, "hf_clip", "text_encoder")], NetworkConfig(algo=algo))
    converted, alphas = mixin.lora_state_dict(dict(net.trainable_state()), unet_config=unet.config)
    modules = {diffusers_module_name(k) for k in converted if ".down." in k or "lora_A" in k}
    unet_names = {f"unet.{n}" for n, _ in unet.named_modules()}
    te_names = {f"text_encoder.{n}" for n, _ in clip_te.named_modules()}
    assert len(modules) == len(net.module_names())
    for key in converted:
        head = key.split(".")[0]
        name = head + "." + diffusers_module_name(key)
        assert name in unet_names | te_names, key
    assert {float(a) for a in alphas.values()} <= {8.0, 1.0}  # dim alpha and conv_alpha, as configured
