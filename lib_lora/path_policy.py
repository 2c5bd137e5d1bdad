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

The policy itself is host-agnostic (this module); which roots apply is the host's to say:
lib_lora/webui/path_policy.py for the WebUI, `standalone_policy` here for the standalone server.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from lib_lora.errors import LoraError, PathNotAllowedError
from lib_lora.safe_paths import is_within, resolved, shown

SETTING = "train_lora_allowed_roots"
SETTING_LABEL = "Settings > Train LoRA > Extra folders Train LoRA may use"
MAX_TREE_ENTRIES = 200_000      # a dataset walk is bounded: no folder a LoRA trains on holds more

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
