"""The HTTP API with the WebUI's own roots (no policy injected): a dataset inside the data folder
passes the path check, one outside it, or one holding a symlink that leads outside, is refused with
the setting named; the setting widens the roots. A request that passes the paths is stopped here by
an out-of-range option, so no run starts."""
from __future__ import annotations

import os

import pytest

from lib_lora.webui import api
from lib_lora.path_policy import SETTING


@pytest.fixture()
def http(fresh_state, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tests.webui.test_pause import new_jobs
    webui = fresh_state
    opts = webui.shared.cmd_opts
    saved = (opts.api, opts.listen, webui.shared.opts.data.get(SETTING, ""))
    opts.api = True
    app, manager = FastAPI(), new_jobs()
    assert api.register(app, manager)               # the WebUI's cmd_opts and roots
    inside = os.path.join(webui.root, "train_lora", "datasets", "api_paths")
    os.makedirs(os.path.join(inside, "10_cat"), exist_ok=True)
    outside = tmp_path / "outside"
    (outside / "10_cat").mkdir(parents=True)
    yield TestClient(app, raise_server_exceptions=False), manager, inside, outside, webui
    opts.api, opts.listen = saved[:2]
    webui.shared.opts.data[SETTING] = saved[2]


def _post(client, train_dir):
    # epochs = 0 is out of range: a request whose paths pass is refused for that, after the path check
    return client.post("/train_lora/v1/runs", json={"config": {"dataset": {"train_dir": str(train_dir)},
                                                               "training": {"epochs": 0}}})


def test_a_dataset_in_the_data_folder_passes_and_one_outside_is_refused(http):
    client, manager, inside, outside, _ = http
    passed = _post(client, inside)
    assert passed.status_code == 400 and "training.epochs" in passed.json()["detail"]
    refused = _post(client, outside)
    detail = refused.json()["detail"]
    assert refused.status_code == 400 and str(outside) in detail and SETTING in detail
    assert manager.jobs == {}


def test_a_symlink_inside_the_dataset_that_leads_outside_is_refused(http):
    client, manager, inside, outside, _ = http
    link = os.path.join(inside, "10_cat", "escape")
    os.symlink(outside, link)
    try:
        refused = _post(client, inside)
    finally:
        os.remove(link)
    assert refused.status_code == 400 and "symlink" in refused.json()["detail"] and link in refused.json()["detail"]


def test_the_setting_widens_the_roots_and_listen_is_named(http):
    client, _, _, outside, webui = http
    webui.shared.cmd_opts.listen = True
    assert "--listen" in _post(client, outside).json()["detail"]
    webui.shared.opts.data[SETTING] = str(outside.parent)
    assert "training.epochs" in _post(client, outside).json()["detail"]
