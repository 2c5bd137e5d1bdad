"""Property-based hostile inputs (Hypothesis): whatever zip, caption bytes, undo snapshot or config file a
user or attacker hands over, the only exception is our own error type (LoraError, printed as one sentence),
and no file outside the target changes (the tree is hashed before and after)."""
from __future__ import annotations

import base64
import json
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_lora import options
from lib_lora.config import TrainConfig, dumps_train_config, load_train_config
from lib_lora.dataset.importer import import_dataset
from lib_lora.dataset.safe_zip import ExtractLimits
from lib_lora.dataset.textfiles import decode_text, read_caption_file
from lib_lora.errors import LoraError
from lib_lora.tagging.snapshot import snapshot_path, undo_last
from tests.fixtures.hostile import fingerprint, png_bytes

# Quick (a few seconds each), no timing assertions, no example database left in the checkout.
QUICK = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Names an attacker or a careless archiver writes: escapes, drives, long parts, odd Unicode, image/caption suffixes.
_PART = st.one_of(
    st.sampled_from(["..", ".", "", "10_c", "5_alice", "C:", "\\..\\x", "__MACOSX", ".hidden", "a" * 260, "я" * 130,
                     "con", "a\x00b", "~", "$HOME"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
)
_SUFFIX = st.sampled_from([".png", ".txt", ".jpg", ".zip", ".exe", "", ".PNG", ".safetensors"])
ENTRY_NAMES = st.builds(lambda parts, lead, suffix: lead + "/".join(parts) + suffix,
                        st.lists(_PART, min_size=1, max_size=4), st.sampled_from(["", "/", "../", "C:/", "\\"]),
                        _SUFFIX)
_PNG = png_bytes(3, 8)
ENTRY_DATA = st.one_of(st.just(_PNG), st.binary(max_size=300), st.text(max_size=60).map(str.encode))


def _world(tmp: Path) -> Path:
    """tmp/outside (never to change) beside whatever the test writes."""
    (tmp / "outside").mkdir()
    (tmp / "outside/secret.txt").write_text("keep me")
    (tmp / "outside/a.png").write_bytes(_PNG)
    return tmp


@st.composite
def hostile_zips(draw) -> bytes:
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as zf:
        for name in draw(st.lists(ENTRY_NAMES, max_size=6)):
            info = zipfile.ZipInfo(name[:400] or "x")
            info.external_attr = draw(st.sampled_from([0, 0o120777 << 16, 0o100644 << 16, 0o010644 << 16]))
            zf.writestr(info, draw(ENTRY_DATA))
    raw = bytearray(buf.getvalue())
    for _ in range(draw(st.integers(0, 4))):             # flip bytes anywhere: headers, sizes, CRCs, data
        if raw:
            at = draw(st.integers(0, len(raw) - 1))
            raw[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]     # truncated upload
    return bytes(raw)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@QUICK
@given(data=hostile_zips())
def test_any_zip_imports_or_fails_with_our_error_and_writes_only_the_dataset(data):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = _world(Path(tmp))
        upload = tmp / "up.zip"
        upload.write_bytes(data)
        before = fingerprint(tmp)
        try:
            result = import_dataset([upload], tmp / "root", "ds", limits=ExtractLimits(max_file_bytes=4096))
        except LoraError:
            result = None
        after = fingerprint(tmp)
        assert {k: v for k, v in after.items() if not k.startswith("root")} == before
        assert all(k == "root" or k.startswith(("root/ds", "root" + os.sep + "ds")) for k in after if k not in before)
        assert not any(".incoming-" in k for k in after)
        if result:
            assert all(p.is_file() and (tmp / "root/ds") in p.parents for p in result.imported)


@QUICK
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=100).map(lambda t: t.encode("utf-16")),
                      st.text(max_size=100).map(lambda t: t.encode("utf-16-be"))))
def test_any_caption_bytes_decode_to_one_line_of_text(data):
    text, encoding = decode_text(data)
    assert isinstance(text, str) and encoding
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.txt"
        path.write_bytes(data)
        caption, _ = read_caption_file(path)
    assert "\x00" not in caption and "\n" not in caption and "\r" not in caption


_B64 = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
SNAPSHOT_VALUES = st.one_of(st.none(), _B64, st.text(max_size=10), st.integers(), st.lists(st.integers(), max_size=2))
SNAPSHOT_KEYS = st.one_of(ENTRY_NAMES, st.sampled_from(["10_c/0.txt", "10_c/0.png", "../outside/secret.txt",
                                                        "/etc/hostname", "escape/secret.txt", ".lib_lora/x.txt"]))


@st.composite
def hostile_snapshots(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    files = draw(st.dictionaries(SNAPSHOT_KEYS, SNAPSHOT_VALUES, max_size=5))
    doc = draw(st.sampled_from([{"action": "x", "time": "t", "files": files}, {"files": files}, files, [files]]))
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@QUICK
@given(snapshot=hostile_snapshots())
def test_any_undo_snapshot_restores_only_captions_inside_the_folder(snapshot):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = _world(Path(tmp))
        ds = tmp / "ds"
        (ds / "10_c").mkdir(parents=True)
        (ds / "10_c/0.png").write_bytes(_PNG)
        (ds / "10_c/0.txt").write_text("solo")
        if os.name == "posix":
            (ds / "escape").symlink_to(tmp / "outside")
        snapshot_path(ds).parent.mkdir()
        snapshot_path(ds).write_bytes(snapshot)
        before = fingerprint(tmp)
        try:
            undo_last(ds)
        except LoraError:
            pass
        after = fingerprint(tmp)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert all(k.startswith("ds") and not k.endswith(".png") and "outside" not in k for k in changed), changed


_TOML_VALUES = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(),
                         st.text(max_size=20), st.lists(st.integers(), max_size=3))
_SECTIONS = st.sampled_from(["model", "dataset", "network", "training", "output", "sample", "bogus"])
_KEYS = st.one_of(st.sampled_from(["epochs", "batch_size", "rank", "alpha", "resolution", "train_dir", "algo",
                                   "caption_extension", "unet_lr", "output_name", "seed", "repeats"]),
                  st.text(alphabet="abcdefghij_", min_size=1, max_size=8))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(value, "nan" if value != value else repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


@st.composite
def hostile_configs(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return draw(st.text(max_size=200)).encode("utf-8")
    lines = []
    for section, values in draw(st.dictionaries(_SECTIONS, st.dictionaries(_KEYS, _TOML_VALUES, max_size=4),
                                                max_size=4)).items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines).encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"])))


@QUICK
@given(data=hostile_configs())
def test_any_config_file_loads_or_fails_with_our_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = _world(Path(tmp))
        path = tmp / "run.toml"
        path.write_bytes(data)
        before = fingerprint(tmp)
        try:
            cfg = load_train_config(path)
        except LoraError as err:
            assert "\n" not in str(err).strip() or len(str(err)) < 2000
            cfg = None
        if cfg is not None:   # what loads is written back as it was read: saved and read again, the same values
            again = options.from_dict(TrainConfig, options.loads_toml(dumps_train_config(cfg), "again.toml"))
            assert options.flatten(again) == options.flatten(cfg)
        assert fingerprint(tmp) == before
