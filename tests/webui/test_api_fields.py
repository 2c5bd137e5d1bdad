"""Bad values in any field of an API request answer 400 (or 422 from FastAPI's own parsing) with one
plain sentence naming the field, never 500, and start no run: a NUL byte or a lone surrogate
(JSON's "\\ud800", which no OS call takes) in every string option of the run config (enumerated
from TrainConfig, so a new option is covered), in keys and in the run id; wrong types, non-finite
numbers, absurd nesting."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from lib_lora import options
from lib_lora.config import TrainConfig
from lib_lora.webui import api

STRING_FIELDS = sorted(name for name, (typ, _meta) in options.field_info(TrainConfig).items()
                       if typ in (str, list[str]))


@pytest.fixture()
def http(fresh_state):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tests.webui.test_pause import new_jobs
    from lib_lora.path_policy import PathPolicy
    app, manager = FastAPI(), new_jobs()
    policy = PathPolicy((fresh_state.root,), True, "the HTTP API may only use these folders")
    assert api.register(app, manager, policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=None))
    yield TestClient(app, raise_server_exceptions=False), manager


def _body(dotted: str, value) -> dict:
    section, key = dotted.split(".")
    return {"config": {section: {key: value}}}


def _assert_refused(answer, manager, *words: str) -> None:
    assert answer.status_code in (400, 422), answer.text
    detail = answer.json()["detail"]
    if answer.status_code == 400:
        assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
        for word in words:
            assert word in detail, (word, detail)
    assert manager.jobs == {}                   # refused before any run was queued


def test_the_config_has_string_fields_to_test():
    assert {"dataset.train_dir", "output.output_name", "model.pretrained", "sample.prompts"} <= set(STRING_FIELDS)


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("text, word", [("a\x00b", "NUL"), ("name\x00", "NUL"), ("\ud800", "surrogate"),
                                        ("x\udc80y", "surrogate")])
def test_a_nul_byte_or_a_lone_surrogate_in_any_string_field_is_a_400(http, field, text, word):
    client, manager = http
    value = [text] if options.field_info(TrainConfig)[field][0] == list[str] else text
    _assert_refused(client.post("/train_lora/v1/runs", json=_body(field, value)), manager, field, word)


@pytest.mark.parametrize("body", [
    {"config": {"dataset\x00": {"train_dir": "x"}}},
    {"config": {"dataset": {"train_dir\x00": "x"}}},
    {"dataset": {"caption_extension": ".t\x00xt"}},               # a bare config, without the "config" key
])
def test_a_nul_byte_in_a_key_is_a_400(http, body):
    client, manager = http
    _assert_refused(client.post("/train_lora/v1/runs", json=body), manager, "NUL")


@pytest.mark.parametrize("path", ["/train_lora/v1/runs/run1%00", "/train_lora/v1/runs/%00/cancel"])
def test_a_nul_byte_in_the_run_id_is_a_400(http, path):
    client, manager = http
    method = "POST" if path.endswith("cancel") else "GET"
    _assert_refused(client.request(method, path), manager, "run id", "NUL")


@pytest.mark.parametrize("raw, words", [
    ('{"config": {"training": {"unet_lr": NaN}}}', ["training.unet_lr"]),
    ('{"config": {"training": {"unet_lr": Infinity}}}', ["training.unet_lr"]),
    ('{"config": {"training": {"epochs": 1e400}}}', ["training.epochs"]),
    ('{"config": {"training": {"epochs": 100000000000000000000000000000}}}', ["training.epochs"]),
    ('{"config": {"network": {"dim": "sixteen"}}}', ["network.dim"]),
    ('{"config": {"network": {"dim": [16]}}}', ["network.dim"]),
    ('{"config": {"dataset": {"train_dir": {"a": 1}}}}', ["dataset.train_dir"]),
    ('{"config": {"dataset": "x"}}', ["dataset"]),
    ('{"config": {"nonsense": {}}}', ["nonsense"]),
    ('{"config": {"sample": {"prompts": [[[[[[[[[[["x"]]]]]]]]]]]}}}', ["sample.prompts"]),
    ('{"config": [1, 2]}', ["JSON object"]),
    ('[1, 2]', ["JSON object"]),
    ('"text"', ["JSON object"]),
    ('null', []),
    ('{"config": {}}', ["dataset.train_dir is empty"]),
    ('{"config": {"dataset": {"train_dir": "   "}}}', ["dataset.train_dir is empty"]),
    ('{"config": {"output": {"output_name": "a\\u0007b"}}}', ["output.output_name"]),
    ('{"config": {"output": {"output_name": ".."}}}', ["output.output_name"]),
    ('{"config": {"dataset": {"train_dir": "../../../../etc"}}}', ["dataset.train_dir", "outside"]),
])
def test_other_invalid_values_are_refused_in_one_sentence(http, raw, words):
    client, manager = http
    answer = client.post("/train_lora/v1/runs", content=raw, headers={"content-type": "application/json"})
    _assert_refused(answer, manager, *words)


@pytest.mark.parametrize("raw, content_type", [
    ("{", "application/json"), ("", "application/json"), ("\x00", "application/json"),
    ('{"config": {}}'.encode("utf-16"), "application/json"), ("config=1", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00", "application/json")])
def test_a_body_that_is_not_json_is_refused(http, raw, content_type):
    client, manager = http
    answer = client.post("/train_lora/v1/runs", content=raw, headers={"content-type": content_type})
    assert answer.status_code in (400, 422), answer.text
    assert manager.jobs == {}
