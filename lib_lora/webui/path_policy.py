"""Which folders a request or a tab field may name: the door every user-given path passes first.

A WebUI that listens beyond localhost (--listen, --share, --ngrok, --server-name: the same test
the WebUI makes before it disables extension installs, cmd_opts.webui_is_non_local) is reachable
by other people, so there every path the tab or the HTTP API is given must lie inside the
allowed roots: the WebUI's data folder, its models folder, its Lora and checkpoint folders (they
may be moved elsewhere by --lora-dir / --ckpt-dir), and the folders listed in the setting
"train_lora_allowed_roots". The HTTP API is confined always, also on localhost: a script that
calls it needs no more, and a page in the user's browser cannot then make it read anything else.

Paths are compared resolved (symlinks followed, '..' gone, via lib_lora.safe_paths), so a symlink
inside a root that leads outside it is refused; for a folder that is read recursively (a dataset)
every symlink inside it is checked too. Whether a path may be WRITTEN (never over an original) is
lib_lora.safe_paths' WriteGuard's question, asked later by each writer; this module only decides
which places may be named at all.
"""
from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable

from lib_lora.errors import LoraError, PathNotAllowedError
from lib_lora.safe_paths import is_within, resolved, shown
from lib_lora.webui import gradio_compat

SETTING = "train_lora_allowed_roots"
SETTING_LABEL = "Settings > Train LoRA > Extra folders Train LoRA may use"
MAX_TREE_ENTRIES = 200_000      # a dataset walk is bounded: no folder a LoRA trains on holds more
NON_LOCAL_FLAGS = ("share", "listen", "ngrok", "server_name")


def check_text(value: Any, field: str) -> str:
    """A path field's text: a string without NUL bytes that the OS can encode (the OS cannot name
    such a file, and os.path calls would fail on it)."""
    if not isinstance(value, str):
        raise LoraError(f"{field} must be text, not {type(value).__name__}", fix="Send the path as a string")
    if "\x00" in value:
        raise LoraError(f"{field} contains a NUL byte, which no file name can hold",
                        fix="Remove the NUL character from the path")
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        raise LoraError(f"{field} holds a character no file name can hold (a lone UTF-16 surrogate)",
                        fix="Send the path as valid UTF-8 text") from None
    return value


@dataclass(frozen=True)
class PathPolicy:
    roots: tuple[str, ...]          # as configured (shown in messages); compared resolved
    confined: bool
    reason: str = ""                # why confined, e.g. "the WebUI listens beyond localhost (--listen)"

    def check(self, path: Any, field: str, *, tree: bool = False) -> str:
        """The resolved `path` (as text) when the policy allows it; else a PathNotAllowedError that
        names the path, the rule and the setting that widens it. `tree`: the folder is read
        recursively, so symlinks inside it must stay inside the roots too."""
        text = check_text(path, field).strip()
        target = resolved(text)
        if not self.confined:
            return str(target)
        if not any(is_within(target, root) for root in self.roots):
            raise self._refusal(text, field, f"it lies outside the allowed folders ({self._listed()})")
        if tree and target.is_dir():
            self._check_tree(str(target), text, field)
        return str(target)

    def check_optional(self, path: Any, field: str, *, tree: bool = False) -> str:
        """Like check, but an empty field stays empty (the feature is off or a default applies)."""
        if path is None or (isinstance(path, str) and not path.strip()):
            return ""
        return self.check(path, field, tree=tree)

    def _check_tree(self, folder: str, text: str, field: str) -> None:
        seen = 0
        for top, dirs, files in os.walk(folder):
            for name in dirs + files:
                seen += 1
                if seen > MAX_TREE_ENTRIES:
                    raise LoraError(f"{field} {shown(text)!r} holds more than {MAX_TREE_ENTRIES} files and folders",
                                    where=field, fix="Choose the folder of one dataset, not a whole disk")
                entry = os.path.join(top, name)
                if os.path.islink(entry) and not any(is_within(entry, root) for root in self.roots):
                    raise self._refusal(text, field, f"it holds a symlink that leads outside the allowed folders "
                                                     f"({shown(entry)} -> {shown(resolved(entry))})")

    def _listed(self) -> str:
        return ", ".join(shown(r) for r in self.roots) or "none"

    def _refusal(self, text: str, field: str, rule: str) -> PathNotAllowedError:
        return PathNotAllowedError(
            f"{field} {shown(text)!r} is refused because {rule}, and {self.reason}",
            fix=f"Use a path inside one of them, or add its folder to {SETTING_LABEL} ({SETTING})")


def split_roots(text: str) -> list[str]:
    """The setting's folders: comma- or newline-separated, blanks dropped."""
    return [part.strip() for part in (text or "").replace("\n", ",").split(",") if part.strip()]


def non_local_flags(cmd_opts: Any) -> list[str]:
    """The command-line flags that make the WebUI reachable from other machines."""
    return [f"--{name.replace('_', '-')}" for name in NON_LOCAL_FLAGS if getattr(cmd_opts, name, None)]


def default_roots(cmd_opts: Any, paths_internal: Any) -> list[str]:
    data = getattr(cmd_opts, "data_dir", None) or paths_internal.data_path
    models = getattr(cmd_opts, "models_dir", None) or getattr(paths_internal, "models_path", None) \
        or os.path.join(data, "models")
    candidates = [paths_internal.data_path, data, models, getattr(cmd_opts, "lora_dir", None),
                  getattr(cmd_opts, "ckpt_dir", None)]
    return list(dict.fromkeys(str(c) for c in candidates if c))


def webui_policy(for_api: bool = False) -> PathPolicy:
    """The policy of the running WebUI: confined when it listens beyond localhost (always for the API)."""
    from modules import paths_internal, shared
    cmd_opts = shared.cmd_opts
    roots = default_roots(cmd_opts, paths_internal) + split_roots(getattr(shared.opts, SETTING, "") or "")
    flags = non_local_flags(cmd_opts)
    if flags:
        return PathPolicy(tuple(dict.fromkeys(roots)), True,
                          f"the WebUI listens beyond localhost ({' '.join(flags)})")
    return PathPolicy(tuple(dict.fromkeys(roots)), for_api, "the HTTP API may only use these folders")


def policy_for(backend: Any) -> PathPolicy:
    """The policy of the tab's backend: the WebUI's; for the standalone server the one it was given
    (confined to its data folder when it binds an address other machines reach), else none."""
    if getattr(backend, "kind", "") == "webui":
        return webui_policy()
    return getattr(backend, "path_policy", None) or PathPolicy((), False)


def standalone_policy(host: str, data_dir: Any) -> PathPolicy | None:
    """The standalone server's policy: None on a loopback address, else its data folder only (plus
    TRAIN_LORA_ALLOWED_ROOTS, comma-separated, the setting's twin outside the WebUI)."""
    name = (host or "").strip().strip("[]")
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    roots = [str(data_dir)] + split_roots(os.environ.get("TRAIN_LORA_ALLOWED_ROOTS", ""))
    return PathPolicy(tuple(roots), True, f"the server listens on {name} (--host), beyond localhost")


def check_paths(backend: Any, fields: Iterable[tuple[str, Any, bool]]) -> list[str]:
    """Check several (field label, path, read recursively) at once; empty fields stay empty."""
    policy = policy_for(backend)
    return [policy.check_optional(path, field, tree=tree) for field, path, tree in fields]


def gradio_upload_dir() -> str:
    """Where Gradio (3.x and 4.x) keeps uploaded files."""
    return os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "gradio")


def check_uploads(backend: Any, *values: Any) -> None:
    """Gradio 3 copies whatever server file the page names as "uploaded" (orig_name) before our
    handler runs; a real upload names a file in Gradio's upload folder, so while confined any other
    source outside the roots is refused (else a remote page could import the server's files)."""
    policy = policy_for(backend)
    if not policy.confined:
        return
    uploads = PathPolicy(policy.roots + (gradio_upload_dir(),), True, policy.reason)
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item:
                uploads.check(getattr(item, "orig_name", None) or gradio_compat.uploaded_path(item), "Upload")


# (section, key, read recursively): the TrainConfig fields that name files or folders a user chooses
# (inside the WebUI output.output_dir is always its Lora folder, whatever the request says)
TRAIN_PATH_FIELDS = (("dataset", "train_dir", True), ("dataset", "reg_dir", True), ("model", "pretrained", False),
                     ("model", "config_dir", False))


def check_train_paths(policy: PathPolicy, cfg: Any, replace: bool = False) -> None:
    """Every path of a run config passes `policy`; `replace` puts the resolved paths into `cfg`."""
    for section, key, tree in TRAIN_PATH_FIELDS:
        part = getattr(cfg, section)
        checked = policy.check_optional(getattr(part, key), f"{section}.{key}", tree=tree)
        if replace:
            setattr(part, key, checked)
