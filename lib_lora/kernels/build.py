"""Compile a C kernel shipped with lib_lora once per machine, cache it, load it with ctypes.

Why not torch.utils.cpp_extension: including the torch headers makes a build take
about a minute; these kernels work on raw float pointers, so a plain C compile takes
under a second. The library is cached in the `kernels` cache (lib_lora/cache_folders.py;
`LIB_LORA_KERNEL_CACHE` overrides it), keyed by the source, the compiler, its flags and the
CPU (the code is built for the machine it runs on), and written atomically, so
concurrent processes (Accelerate ranks) never load a half-written file.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..cache_folders import cache_folder
from ..errors import LoraError

FLAGS = ("-O3", "-fno-math-errno", "-shared", "-fPIC")
# Tried in this order, dropping what the compiler refuses: code for this CPU's vector units, and
# OpenMP (which, linked as libgomp.so.1, joins the runtime torch has loaded).
OPTIONAL_FLAGS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native",), ())


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here; the message says why and what to do."""


def cache_dir() -> Path:
    try:
        return cache_folder("kernels", "LIB_LORA_KERNEL_CACHE")
    except LoraError as e:
        raise KernelUnavailable(f"{e.what} ({e.fix})") from None


def find_compiler() -> str | None:
    """$CC, else cc, gcc or clang on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_fingerprint() -> str:
    try:  # Linux: the flags line says which vector instructions -march=native may use
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def library_path(source: Path, compiler: str) -> Path:
    flags = " ".join(FLAGS + tuple(f for extra in OPTIONAL_FLAGS for f in extra))
    key = hashlib.sha256(b"\0".join([source.read_bytes(), compiler.encode(), flags.encode(),
                                     _cpu_fingerprint().encode()])).hexdigest()[:16]
    suffix = ".dll" if sys.platform == "win32" else ".so"
    return cache_dir() / f"{source.stem}-{key}{suffix}"


def _compile(compiler: str, source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.stem, suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        errors = ""
        for extra in OPTIONAL_FLAGS:
            try:
                done = subprocess.run([compiler, *FLAGS, *extra, "-o", str(tmp), str(source)],
                                      capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise KernelUnavailable(f"{compiler} could not be run: {e}") from None
            if done.returncode == 0:
                os.replace(tmp, target)
                return
            errors = done.stderr.strip()
        raise KernelUnavailable(f"{compiler} failed on {source.name}: {errors[-400:]}")
    finally:
        tmp.unlink(missing_ok=True)


def load_kernel(source: Path) -> ctypes.CDLL:
    """The compiled `source` (built on first use). Raises KernelUnavailable with the reason."""
    compiler = find_compiler()
    if compiler is None:
        raise KernelUnavailable("no C compiler found (set CC, or install gcc or clang)")
    target = library_path(source, compiler)
    if not target.exists():
        try:
            _compile(compiler, source, target)
        except OSError as e:  # e.g. the cache folder is read-only
            raise KernelUnavailable(f"cannot write {target}: {e} (set LIB_LORA_KERNEL_CACHE to a writable folder)"
                                    ) from None
    try:
        return ctypes.CDLL(str(target))
    except OSError as e:
        raise KernelUnavailable(f"cannot load {target}: {e} (delete it to rebuild)") from None
