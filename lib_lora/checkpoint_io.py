"""Reading checkpoints tensor by tensor, and writing a safetensors file tensor by tensor.

A checkpoint is read lazily so extraction and merging hold a layer or two in
memory at a time (an SDXL pair fits in 24 GiB of RAM): `.safetensors` through
`safe_open` (memory-mapped, read-only), `.ckpt`/`.pt` only through
`torch.load(weights_only=True)` (memory-mapped when the file allows it; a pickle
that carries anything but tensors is refused), and any `Mapping[str, Tensor]`
as is, so the WebUI can pass its loaded model's `state_dict()`. Files are never
written to: a merge's base stays byte-identical.

`write_safetensors_streaming` writes the safetensors format (8-byte little-endian
header length, JSON header, raw little-endian tensor bytes) one tensor at a
time, atomically, so a merged SDXL checkpoint never sits in memory whole.

Below both models/ (which classifies single-file checkpoints with it) and ops/
(extract, merge), so neither imports the other for it.
"""
from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from . import fileio
from .errors import ModelError

# The model families this extension trains on and converts; every family rule (detection here and
# in models/, metadata in networks/metadata.py) returns or covers exactly these.
FAMILIES = ("sd1", "sd2", "sdxl")
# One key that only that family's checkpoints have (ldm/sgm names, as in the files and in the WebUI's models).
FAMILY_MARKERS = (
    ("sdxl", "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"),
    ("sdxl", "model.diffusion_model.label_emb.0.0.weight"),
    ("sd2", "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"),
    ("sd1", "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"),
)
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


class StateReader:
    """Read-only, lazy access to a checkpoint's tensors by name. Use as a context manager."""

    def __init__(self, source: str | Path | Mapping[str, torch.Tensor], label: str = ""):
        self._handle = None
        self._mapping: Mapping[str, torch.Tensor] | None = None
        if isinstance(source, Mapping):
            self._mapping, self.label = source, label or "the loaded model"
        else:
            path = Path(source)
            self.label = label or str(path)
            self._open_file(path)
        self._keys = list(self._handle.keys() if self._handle is not None else self._mapping.keys())

    def _open_file(self, path: Path) -> None:
        if not path.is_file():
            raise ModelError("Checkpoint file not found", where=str(path),
                             fix="Check the path; a .safetensors or .ckpt file is expected")
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            try:
                self._handle = safe_open(str(path), framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own error types for broken headers
                raise ModelError(f"The safetensors file cannot be read: {e}", where=str(path),
                                 fix="The file is damaged or incomplete; download or save it again") from None
        else:
            self._mapping = load_pickled_checkpoint(path)

    def keys(self) -> list[str]:
        return self._keys

    def __contains__(self, name: str) -> bool:
        return name in self._keys

    def get(self, name: str) -> torch.Tensor:
        """The tensor `name` on the CPU, detached (a copy for file sources)."""
        if self._handle is not None:
            return self._handle.get_tensor(name)
        return self._mapping[name].detach().to("cpu")

    def shape(self, name: str) -> tuple[int, ...]:
        if self._handle is not None:
            return tuple(self._handle.get_slice(name).get_shape())
        return tuple(self._mapping[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        if self._handle is not None:
            return _dtype_from_name(self._handle.get_slice(name).get_dtype())
        return self._mapping[name].dtype

    def metadata(self) -> dict[str, str]:
        if self._handle is not None:
            return dict(self._handle.metadata() or {})
        return {}

    def close(self) -> None:
        self._handle = None
        self._mapping = None

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dtype_from_name(name: str) -> torch.dtype:
    for dtype, code in SAFETENSORS_DTYPES.items():
        if code == name:
            return dtype
    raise ModelError(f"Unsupported tensor type {name}", where="safetensors header",
                     fix="Convert the file to fp16/bf16/fp32 safetensors")


def load_pickled_checkpoint(path: Path) -> Mapping[str, torch.Tensor]:
    """A .ckpt/.pt state dict through torch.load(weights_only=True); anything else is refused."""
    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zip" not in str(e):
                raise
            data = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy, non-zip format
    except pickle.UnpicklingError as e:
        if not _starts_like_a_checkpoint(path):   # random bytes fail here too: say damaged, not unsafe
            raise ModelError("The checkpoint cannot be read: it is damaged or not a PyTorch checkpoint",
                             where=str(path), fix="The file is damaged or incomplete; download or save it again"
                             ) from None
        raise ModelError("This .ckpt holds Python objects besides tensors, which could run code when loaded; "
                         f"it was refused ({str(e).splitlines()[0]})", where=str(path),
                         fix="Use a .safetensors version of this model, or convert the .ckpt with a tool you trust"
                         ) from None
    except Exception as e:
        raise ModelError(f"The checkpoint cannot be read: {e}", where=str(path),
                         fix="The file is damaged or not a PyTorch checkpoint; download it again") from None
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]  # Lightning-style wrapper that ldm checkpoints use
    if not isinstance(data, Mapping):
        raise ModelError("The checkpoint does not hold a state dict", where=str(path),
                         fix="Use a Stable Diffusion checkpoint (.safetensors or .ckpt)")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def _starts_like_a_checkpoint(path: Path) -> bool:
    """A zip (torch.save) or a pickle (PROTO opcode) by its first bytes."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def detect_family(keys: Iterable[str], where: str = "") -> str:
    """The family (one of FAMILIES) of a checkpoint from its ldm/sgm key names: the one rule for a
    state dict, used by the tools (extract, merge), single-file loading and `inspect --base`."""
    names = set(keys)
    for family, marker in FAMILY_MARKERS:
        if marker in names:
            return family
    raise ModelError("Not a Stable Diffusion 1.x, 2.x or XL checkpoint (no known text-encoder keys)", where=where,
                     fix="Use a full single-file checkpoint in the original (ldm/sgm) layout, "
                         "not a diffusers folder, a VAE or a LoRA")


def is_ema_key(name: str) -> bool:
    return name.startswith("model_ema.")


@dataclass
class PlannedTensor:
    """One entry of a file to write: its name, final dtype and shape, and how to produce it."""
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    produce: Callable[[], torch.Tensor]


def _header(entries: list[PlannedTensor], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}} if metadata else {}
    offset = 0
    for e in entries:
        size = e.dtype.itemsize * int(torch.Size(e.shape).numel())
        header[e.name] = {"dtype": SAFETENSORS_DTYPES[e.dtype], "shape": list(e.shape),
                          "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format wants the data to start 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors_streaming(path: str | Path, entries: list[PlannedTensor], metadata: dict[str, str]) -> Path:
    """Write `entries` to a .safetensors file one tensor at a time (atomic: temp file, then rename)."""
    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(_header(entries, metadata))
            for e in entries:
                tensor = e.produce().to(e.dtype).contiguous()
                if tuple(tensor.shape) != tuple(e.shape):
                    raise ModelError(f"Tensor {e.name} came out with shape {tuple(tensor.shape)} instead of "
                                     f"{tuple(e.shape)}", where=str(path), fix="Report this as a bug")
                if tensor.numel():
                    # x86 and ARM hosts are little-endian, which is the byte order the format requires.
                    f.write(tensor.view(-1).view(torch.uint8).numpy())
    return fileio.write_with(path, writer)
