"""HTTP API on the WebUI's FastAPI app (registered by scripts/train_lora.py via on_app_started).

POST /train_lora/v1/runs            start a run from a JSON config {"config": {section: {key: value}}}
GET  /train_lora/v1/runs            list runs
GET  /train_lora/v1/runs/{run_id}   one run: state, step, epoch, loss, files, error
POST /train_lora/v1/runs/{run_id}/cancel
Paths in a request must stay under the allowed roots (the WebUI data folder and the
folders the user configured); anything else is rejected with 400 and the reason.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from lib_lora.errors import LoraError

PREFIX = "/train_lora/v1"
PATH_FIELDS = (("dataset", "train_dir"), ("dataset", "reg_dir"), ("model", "pretrained"))


def check_under_roots(path: str, roots: list[str], field_name: str) -> str:
    """The resolved path (symlinks followed) must be inside one of `roots`."""
    resolved = os.path.realpath(os.path.expanduser(path))
    for root in roots:
        real_root = os.path.realpath(root)
        if os.path.commonpath([resolved, real_root]) == real_root:
            return resolved
    raise LoraError(f"Path {path!r} is outside the folders Train LoRA may read", where=field_name,
                    fix="Use a folder inside: " + ", ".join(roots))


def config_from_request(body: dict, roots: list[str]):
    from lib_lora import options
    from lib_lora.config import TrainConfig
    data = body.get("config", body)
    if not isinstance(data, dict):
        raise LoraError("The request body must be a JSON object", where="config",
                        fix='Send {"config": {"dataset": {"train_dir": ...}, ...}}')
    cfg = options.from_dict(TrainConfig, data)
    for section, key in PATH_FIELDS:
        value = getattr(getattr(cfg, section), key)
        if value:
            setattr(getattr(cfg, section), key, check_under_roots(value, roots, f"{section}.{key}"))
    name = cfg.output.output_name
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise LoraError(f"Output name {name!r} must be a plain file name", where="output.output_name",
                        fix="Use letters, digits, '-' and '_' without folders")
    options.validate(cfg)
    return cfg


def allowed_roots() -> list[str]:
    from modules import shared
    roots = [shared.data_path, getattr(shared.cmd_opts, "data_dir", None) or shared.data_path]
    extra = getattr(shared.opts, "train_lora_allowed_roots", "") or ""
    roots += [r.strip() for r in extra.split(",") if r.strip()]
    return list(dict.fromkeys(roots))


def register(app: Any, manager: Any = None, roots: Callable[[], list[str]] = allowed_roots) -> None:
    from fastapi import Body, HTTPException

    from lib_lora.webui.jobs import manager as default_manager
    runs = manager or default_manager

    def fail(err: LoraError, code: int = 400):
        raise HTTPException(status_code=code, detail=str(err))

    def start(body: dict = Body(...)) -> dict:
        try:
            cfg = config_from_request(body, roots())
        except LoraError as err:
            fail(err)
        return runs.start(cfg, background=True).as_dict()

    def list_runs() -> dict:
        return {"runs": [r.as_dict() for r in runs.runs.values()]}

    def status(run_id: str) -> dict:
        try:
            return runs.get(run_id).as_dict()
        except LoraError as err:
            fail(err, 404)

    def cancel(run_id: str) -> dict:
        try:
            return runs.cancel(run_id).as_dict()
        except LoraError as err:
            fail(err, 404)

    app.add_api_route(f"{PREFIX}/runs", start, methods=["POST"])
    app.add_api_route(f"{PREFIX}/runs", list_runs, methods=["GET"])
    app.add_api_route(f"{PREFIX}/runs/{{run_id}}", status, methods=["GET"])
    app.add_api_route(f"{PREFIX}/runs/{{run_id}}/cancel", cancel, methods=["POST"])
