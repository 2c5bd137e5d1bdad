"""Our HTTP routes follow the WebUI's own API: they exist with --api or --nowebui only, and with
--api-auth every one of them answers 401 unless the request carries one of the user:password pairs.

The routes are enumerated from the app, so a route added later is covered without editing this test."""
from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from lib_lora.webui import api

USERS = "alice:s3cret,bob:pa:ss"          # bob's password holds a colon: split at the first one


def _app(fresh_state, **flags):
    from fastapi import FastAPI

    from lib_lora import train_job
    from lib_lora.config import TrainConfig
    from lib_lora.jobs import Jobs, LocalHost
    from lib_lora.path_policy import PathPolicy
    app, host = FastAPI(), LocalHost()
    manager = Jobs(host)
    host.lock.acquire()           # another job holds the model: the run stays queued, so the {run_id} routes have one
    record = manager.submit(train_job.KIND, "a run", lambda job: None, exclusive=True,
                            kind_state=train_job.TrainRun(TrainConfig(), host=None))
    policy = PathPolicy((fresh_state.root,), True, "the HTTP API may only use these folders")
    cmd_opts = SimpleNamespace(**{"api": True, "api_auth": None, "nowebui": False, **flags})
    added = api.register(app, manager, policy=lambda: policy, cmd_opts=cmd_opts)
    return app, added, record.id


def _our_routes(app) -> list[tuple[str, str]]:
    return sorted((route.path, method) for route in app.routes if route.path.startswith(api.PREFIX)
                  for method in route.methods)


def _request(client, path: str, method: str, run_id: str, **kwargs):
    url = path.replace("{run_id}", run_id)
    body = {"config": {"dataset": {"train_dir": "/"}}} if method == "POST" and path.endswith("/runs") else None
    return client.request(method, url, json=body, **kwargs)


def _basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def test_every_route_needs_credentials_with_api_auth(fresh_state):
    from fastapi.testclient import TestClient
    secured, added, run_id = _app(fresh_state, api_auth=USERS)
    open_app, _, open_run_id = _app(fresh_state)
    routes = _our_routes(secured)
    assert added and routes == _our_routes(open_app)
    assert {("/train_lora/v1/runs", "GET"), ("/train_lora/v1/runs", "POST"),
            ("/train_lora/v1/runs/{run_id}", "GET"), ("/train_lora/v1/runs/{run_id}/cancel", "POST")} <= set(routes)
    client, open_client = (TestClient(a, raise_server_exceptions=False) for a in (secured, open_app))
    refused = [{}, _basic("alice", "wrong"), _basic("mallory", "s3cret"), _basic("alice", ""),
               _basic("bob", "pa"), _basic("alice", "s3crét"), {"Authorization": "Basic !!notbase64"},
               {"Authorization": "Bearer s3cret"}]
    for path, method in routes:
        for headers in refused:
            answer = _request(client, path, method, run_id, headers=headers)
            assert answer.status_code == 401, (path, method, headers, answer.text)
            assert answer.headers.get("www-authenticate", "").lower().startswith("basic")
        for user, password in (("alice", "s3cret"), ("bob", "pa:ss")):
            answer = _request(client, path, method, run_id, auth=(user, password))
            # with the right credentials a route answers exactly as it does on a WebUI without --api-auth
            plain = _request(open_client, path, method, open_run_id)
            assert answer.status_code == plain.status_code != 401, (path, method, answer.text)
            if method == "GET":
                assert answer.status_code == 200


def test_a_run_is_shown_and_cancelled_only_with_credentials(fresh_state):
    from fastapi.testclient import TestClient
    app, _, run_id = _app(fresh_state, api_auth="alice:s3cret")
    client = TestClient(app)
    assert client.post(f"/train_lora/v1/runs/{run_id}/cancel").status_code == 401
    assert client.get(f"/train_lora/v1/runs/{run_id}", auth=("alice", "s3cret")).json()["state"] == "queued"
    cancelled = client.post(f"/train_lora/v1/runs/{run_id}/cancel", auth=("alice", "s3cret"))
    assert cancelled.status_code == 200 and cancelled.json()["run_id"] == run_id
    assert [r["run_id"] for r in client.get("/train_lora/v1/runs", auth=("alice", "s3cret")).json()["runs"]] == [run_id]


@pytest.mark.parametrize("flags, routes_exist", [
    ({"api": False}, False), ({"api": True}, True), ({"api": False, "nowebui": True}, True),
    ({"api": False, "api_auth": "alice:s3cret"}, False),
])
def test_routes_exist_when_the_webui_api_does(fresh_state, flags, routes_exist):
    app, added, _ = _app(fresh_state, **flags)
    assert added is routes_exist and bool(_our_routes(app)) is routes_exist


def test_a_broken_api_auth_leaves_no_open_route(fresh_state):
    app, added, _ = _app(fresh_state, api_auth="alice")          # no ':' -> not a user:password pair
    assert added is False and _our_routes(app) == []


def test_the_extension_script_wires_auth_from_the_webui_command_line(webui, fresh_state):
    """As in a WebUI started with --api --api-auth: scripts/train_lora.py's on_app_started adds the routes."""
    import os

    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    webui.scripts.load_scripts_from(root)
    opts = webui.shared.cmd_opts
    saved = (opts.api, opts.api_auth)
    opts.api, opts.api_auth = True, "alice:s3cret"
    try:
        app = FastAPI()
        webui.script_callbacks.app_started_callback(None, app)
    finally:
        opts.api, opts.api_auth = saved
    client = TestClient(app)
    assert client.get("/train_lora/v1/runs").status_code == 401
    assert client.get("/train_lora/v1/runs", auth=("alice", "s3cret")).status_code == 200
