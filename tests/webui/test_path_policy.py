"""Path confinement: when the WebUI listens beyond localhost, a path outside the allowed roots is
refused (symlinks followed, inside a dataset too) with a message naming the path, the rule and the
setting that widens the roots; on localhost the tab may use any folder, the HTTP API never."""
from __future__ import annotations

import os
import types

import pytest

from lib_lora.errors import LoraError, PathNotAllowedError
from lib_lora.path_policy import SETTING, PathPolicy
from lib_lora.webui.path_policy import webui_policy


@pytest.fixture()
def tree(tmp_path):
    """root/ (allowed) with a dataset, and outside/ (not allowed) with a secret image."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ds" / "10_cat").mkdir(parents=True)
    (root / "ds" / "10_cat" / "a.png").write_bytes(b"png")
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    return root, outside


def _policy(root) -> PathPolicy:
    return PathPolicy((str(root),), True, "the WebUI listens beyond localhost (--listen)")


def test_paths_inside_the_roots_pass_resolved(tree):
    root, _ = tree
    policy = _policy(root)
    assert policy.check(str(root / "ds"), "Dataset folder", tree=True) == str((root / "ds").resolve())
    assert policy.check(str(root / "ds" / ".." / "ds" / "10_cat"), "f") == str((root / "ds" / "10_cat").resolve())
    assert policy.check(str(root / "not_yet_written.safetensors"), "f")      # outputs need not exist yet
    assert policy.check_optional("  ", "Regularization folder") == ""


@pytest.mark.parametrize("name", ["outside", "dotdot", "root_prefix", "absolute_etc"])
def test_paths_outside_the_roots_are_refused_with_path_rule_and_setting(tree, name):
    root, outside = tree
    path = {"outside": str(outside), "dotdot": str(root / ".." / "outside"),
            "root_prefix": str(root) + "_sibling", "absolute_etc": "/etc"}[name]
    with pytest.raises(PathNotAllowedError) as caught:
        _policy(root).check(path, "Dataset folder", tree=True)
    message = str(caught.value)
    assert path in message and "Dataset folder" in message and str(root) in message
    assert "outside the allowed folders" in message and "--listen" in message and SETTING in message
    assert "\n" not in message


def test_a_symlink_in_a_root_that_leads_outside_is_refused(tree):
    root, outside = tree
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathNotAllowedError):
        _policy(root).check(str(root / "escape"), "Dataset folder", tree=True)
    with pytest.raises(PathNotAllowedError):
        _policy(root).check(str(root / "escape" / "secret.png"), "LoRA file")


@pytest.mark.parametrize("link_kind", ["file", "folder", "dangling"])
def test_a_dataset_holding_a_symlink_that_leads_outside_is_refused(tree, link_kind):
    root, outside = tree
    concept = root / "ds" / "10_cat"
    target = {"file": outside / "secret.png", "folder": outside, "dangling": outside / "gone.png"}[link_kind]
    (concept / "b.png").symlink_to(target)
    with pytest.raises(PathNotAllowedError) as caught:
        _policy(root).check(str(root / "ds"), "Dataset folder", tree=True)
    assert "symlink" in str(caught.value) and str(concept / "b.png") in str(caught.value)
    assert _policy(root).check(str(root / "ds"), "Dataset folder", tree=False)   # a file field does not walk


def test_a_symlink_that_stays_inside_the_roots_is_fine(tree):
    root, _ = tree
    (root / "ds" / "10_cat" / "b.png").symlink_to(root / "ds" / "10_cat" / "a.png")
    (root / "alias").symlink_to(root / "ds", target_is_directory=True)
    assert _policy(root).check(str(root / "alias"), "Dataset folder", tree=True) == str((root / "ds").resolve())


@pytest.mark.parametrize("value", ["a\x00b", "\x00", "\ud800", "/tmp/\udbff\udfff", 5, None, ["x"]])
def test_nul_bytes_and_non_text_are_refused_confined_or_not(tree, value):
    root, _ = tree
    for policy in (_policy(root), PathPolicy((), False)):
        with pytest.raises(LoraError) as caught:
            policy.check(value, "Dataset folder")
        assert "Dataset folder" in str(caught.value)


def test_an_unconfined_policy_lets_any_folder_through(tree):
    _, outside = tree
    assert PathPolicy((), False).check(str(outside), "Dataset folder", tree=True) == str(outside.resolve())


@pytest.fixture()
def flags(webui):
    """Set WebUI command-line flags and the roots setting for one test, then restore them."""
    opts, saved = webui.shared.cmd_opts, dict(vars(webui.shared.cmd_opts))
    saved_setting = getattr(webui.shared.opts, SETTING, "")

    def set_flags(**values):
        for key, value in values.items():
            setattr(opts, key, value)
    yield set_flags
    vars(opts).clear()
    vars(opts).update(saved)
    webui.shared.opts.data[SETTING] = saved_setting


@pytest.mark.parametrize("flag, value, shown", [
    ("listen", True, "--listen"), ("share", True, "--share"), ("server_name", "0.0.0.0", "--server-name"),
    ("ngrok", "token", "--ngrok")])
def test_the_webui_is_confined_when_reachable_from_other_machines(webui, flags, tmp_path, flag, value, shown):
    flags(**{flag: value})
    policy = webui_policy()
    assert policy.confined and shown in policy.reason
    with pytest.raises(PathNotAllowedError) as caught:
        policy.check(str(tmp_path), "Dataset folder")
    assert shown in str(caught.value)
    assert policy.check(os.path.join(webui.shared.cmd_opts.lora_dir, "x.safetensors"), "LoRA file")


def test_on_localhost_the_tab_is_free_and_the_api_confined(webui, flags, tmp_path):
    assert not webui_policy().confined
    assert webui_policy().check(str(tmp_path), "Dataset folder") == str(tmp_path.resolve())
    with pytest.raises(PathNotAllowedError):
        webui_policy(for_api=True).check(str(tmp_path), "dataset.train_dir")


def test_default_roots_follow_moved_folders_and_the_setting_widens_them(webui, flags, tmp_path):
    loras, extra, other = tmp_path / "my_loras", tmp_path / "extra", tmp_path / "other"
    flags(listen=True, lora_dir=str(loras))
    policy = webui_policy()
    assert policy.check(str(loras / "a.safetensors"), "LoRA file")                      # --lora-dir moved it
    assert policy.check(os.path.join(webui.root, "train_lora", "datasets", "x"), "Dataset folder")
    with pytest.raises(PathNotAllowedError):
        policy.check(str(extra / "ds"), "Dataset folder")
    webui.shared.opts.data[SETTING] = f" {extra} ,\n{other}"
    assert webui_policy().check(str(extra / "ds"), "Dataset folder")
    assert webui_policy().check(str(other / "ds"), "Dataset folder")


def test_the_roots_setting_cannot_be_widened_over_the_api_or_with_hide_ui_dir_config(webui, flags):
    from lib_lora.webui.settings import on_ui_settings
    on_ui_settings()
    opts = webui.shared.opts
    assert opts.data_labels[SETTING].restrict_api
    # hidden from the settings page like the WebUI's own folder settings when --hide-ui-dir-config
    assert opts.data_labels[SETTING].component_args is webui.shared.hide_dirs
    assert opts.set(SETTING, "/", is_api=True) is False and getattr(opts, SETTING) != "/"
    flags(hide_ui_dir_config=True)
    with pytest.raises(RuntimeError):
        setattr(opts, SETTING, "/")
    flags(hide_ui_dir_config=False)
    assert opts.set(SETTING, "/srv/datasets") is True          # from the settings page on the machine itself


@pytest.mark.parametrize("host, confined", [
    ("127.0.0.1", False), ("localhost", False), ("::1", False), ("[::1]", False), ("127.0.0.2", False),
    ("0.0.0.0", True), ("::", True), ("192.168.1.5", True), ("myhost.lan", True)])
def test_the_standalone_server_is_confined_to_its_data_folder_beyond_localhost(tmp_path, host, confined):
    from lib_lora.path_policy import standalone_policy
    from lib_lora.ui.path_checks import policy_for
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    policy = standalone_policy(host, data)
    assert (policy is not None) is confined
    from lib_lora.ui.backend import standalone_backend
    backend = standalone_backend(data)
    backend.path_policy = policy
    assert policy_for(backend).check(str(data / "datasets" / "x"), "Dataset folder")
    if confined:
        with pytest.raises(PathNotAllowedError) as caught:
            policy_for(backend).check(str(outside), "Dataset folder")
        assert "--host" in str(caught.value) and host.strip("[]") in str(caught.value)
    else:
        assert policy_for(backend).check(str(outside), "Dataset folder") == str(outside.resolve())
