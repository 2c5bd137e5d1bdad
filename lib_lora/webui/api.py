"""HTTP API on the WebUI's FastAPI app (registered by scripts/train_lora.py via on_app_started).

POST /train_lora/v1/runs            start a run from a JSON config {"config": {section: {key: value}}}
                                    (409 when a run on that output name is active or the Lora folder cannot be made)
GET  /train_lora/v1/runs            list runs
GET  /train_lora/v1/runs/{run_id}   one run: state, step, epoch, loss, files, error
POST /train_lora/v1/runs/{run_id}/cancel
POST /train_lora/v1/runs/{run_id}/pause    after the current step: the WebUI is free until resume ("paused")
POST /train_lora/v1/runs/{run_id}/resume   continue exactly where it paused (409 when not paused or running)
GET  /train_lora/v1/jobs            every job of the WebUI process (training, data, tagging, grids, tools)

Runs are the "train" jobs of the WebUI's one registry (lib_lora/webui/host.py webui_jobs), which the
tab shares: a run started in the tab is listed here, and pause, resume and cancel act on it alike.

The routes exist when the WebUI's own API does (--api, or --nowebui), and like its own routes
they ask for HTTP Basic credentials when the WebUI runs with --api-auth "user:pass[,user2:pass2]"
(passwords compared in constant time). Paths in a request must stay under the allowed roots
(lib_lora.webui.path_policy); a bad request (a NUL byte, a wrong type, a value out of range)
answers 400 with one sentence, never 500.
"""
from __future__ import annotations

import logging
from secrets import compare_digest
from typing import Any, Callable

from lib_lora import train_job
from lib_lora.errors import LoraError
from lib_lora.jobs import Job, Jobs
from lib_lora.path_policy import PathPolicy, check_text, check_train_paths
from lib_lora.train_job import TrainHost
from lib_lora.webui.path_policy import webui_policy

log = logging.getLogger(__name__)

PREFIX = "/train_lora/v1"
MAX_DEPTH = 8               # a config is {section: {key: value or [values]}}; deeper is not ours


def api_enabled(cmd_opts: Any) -> bool:
    """The WebUI adds its own API only with --api or --nowebui; ours follows it."""
    return bool(getattr(cmd_opts, "api", False) or getattr(cmd_opts, "nowebui", False))


def parse_credentials(api_auth: str) -> dict[str, str]:
    """--api-auth "u1:p1,u2:p2" as {user: password} (a password may itself hold ':')."""
    credentials = {}
    for pair in api_auth.split(","):
        user, colon, password = pair.partition(":")
        if not colon:
            raise LoraError("--api-auth must be user:password pairs separated by commas", where="--api-auth",
                            fix='Start the WebUI with --api-auth "user:password" (or "u1:p1,u2:p2")')
        credentials[user] = password
    return credentials


def basic_auth(credentials: dict[str, str]) -> Callable:
    """A FastAPI dependency: 401 unless the request carries one of `credentials` (HTTP Basic)."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic
    scheme = HTTPBasic()    # answers 401 itself when the Authorization header is missing or broken

    def check(given=Depends(scheme)) -> bool:
        expected = credentials.get(given.username)
        # bytes: compare_digest refuses non-ASCII str, and a crash here would answer 500
        if expected is not None and compare_digest(given.password.encode("utf-8"), expected.encode("utf-8")):
            return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})
    return check


def check_values(value: Any, where: str = "config", depth: int = 0) -> None:
    """Every string in the request (keys too) is text without NUL bytes; nesting is bounded."""
    if depth > MAX_DEPTH:
        raise LoraError("The request nests deeper than a run config can", where=where,
                        fix='Send {"config": {"section": {"key": value}}}')
    if isinstance(value, str):
        _check_string(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_string(key, f"{where} key")
            check_values(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_values(item, f"{where}[{index}]", depth + 1)


def _check_string(value: str, where: str) -> None:
    """No NUL byte (no file name, caption or prompt can hold one) and no lone surrogate (JSON lets
    "\\ud800" through, but it is no text and no OS call can take it)."""
    if "\x00" in value:
        raise LoraError(f"{where} contains a NUL byte", fix="Remove the NUL character from the value")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise LoraError(f"{where} is not valid Unicode text (it holds a lone UTF-16 surrogate)",
                            fix="Send the request as valid UTF-8 JSON") from None


def config_from_request(body: Any, policy: PathPolicy):
    from lib_lora import options
    from lib_lora.config import TrainConfig, check_output_name
    data = body.get("config", body) if isinstance(body, dict) else body
    if not isinstance(data, dict):
        raise LoraError("The request body must be a JSON object", where="config",
                        fix='Send {"config": {"dataset": {"train_dir": ...}, ...}}')
    check_values(data)
    cfg = options.from_dict(TrainConfig, data)
    check_train_paths(policy, cfg, replace=True)
    check_output_name(cfg.output.output_name)
    options.validate(cfg)
    if not cfg.dataset.train_dir:      # else the run would be queued only to fail
        raise LoraError("dataset.train_dir is empty", where="config.dataset.train_dir",
                        fix="Name the folder that holds the <repeats>_<name> folders")
    return cfg


def register(app: Any, jobs: Jobs | None = None, policy: Callable[[], PathPolicy] | None = None,
             cmd_opts: Any = None, training: TrainHost | None = None) -> bool:
    """Add the routes to `app` when the WebUI's API is on; returns whether they were added.
    jobs and training: the WebUI's registry and training host unless given (tests)."""
    if cmd_opts is None:
        from modules import shared
        cmd_opts = shared.cmd_opts
    if not api_enabled(cmd_opts):
        log.info("Train LoRA: the HTTP API is off, as the WebUI's is (start the WebUI with --api to use it)")
        return False
    api_auth = getattr(cmd_opts, "api_auth", None)
    try:
        dependencies = _auth_dependencies(api_auth)
    except LoraError as err:    # fail closed: a broken --api-auth must not leave the routes open
        log.error("Train LoRA: the HTTP API is off: %s", err)
        return False
    if jobs is None:
        from lib_lora.webui.host import webui_jobs
        jobs = webui_jobs()
    if training is None:
        from lib_lora.webui.train_host import WebUITrainHost
        training = WebUITrainHost()
    _add_routes(app, jobs, training, policy or (lambda: webui_policy(for_api=True)), dependencies)
    return True


def _auth_dependencies(api_auth: str | None) -> list:
    if not api_auth:
        return []
    from fastapi import Depends
    return [Depends(basic_auth(parse_credentials(api_auth)))]


def _add_routes(app: Any, jobs: Jobs, training: TrainHost, policy: Callable[[], PathPolicy],
                dependencies: list) -> None:
    from fastapi import Body, HTTPException

    def fail(err: LoraError, code: int = 400):
        raise HTTPException(status_code=code, detail=str(err))

    def known_run(run_id: str) -> Job:
        try:
            check_text(run_id, "run id")
        except LoraError as err:
            fail(err)
        try:
            return jobs.get(run_id, train_job.KIND)
        except LoraError as err:
            fail(err, 404)

    def start(body: Any = Body(...)) -> dict:
        try:
            cfg = config_from_request(body, policy())
        except LoraError as err:
            fail(err)
        try:
            return train_job.run_dict(train_job.start(jobs, training, cfg))
        except LoraError as err:     # a run on the same output name is queued, running or paused
            fail(err, 409)

    def list_runs() -> dict:
        return {"runs": [train_job.run_dict(job) for job in jobs.list(train_job.KIND)]}

    def list_jobs() -> dict:
        return {"jobs": [job.as_dict() for job in jobs.list()]}

    def status(run_id: str) -> dict:
        return train_job.run_dict(known_run(run_id))

    def cancel(run_id: str) -> dict:
        job = known_run(run_id)
        job.cancel()
        return train_job.run_dict(job)

    def pause_or_resume(action: str) -> Callable[[str], dict]:
        def endpoint(run_id: str) -> dict:
            job = known_run(run_id)
            try:
                if action == "pause":
                    train_job.pause(job)
                else:
                    train_job.resume(jobs, job)
            except LoraError as err:    # the run is in no state to do it (finished, queued)
                fail(err, 409)
            return train_job.run_dict(job)
        return endpoint

    routes = [("/runs", start, "POST"), ("/runs", list_runs, "GET"), ("/runs/{run_id}", status, "GET"),
              ("/runs/{run_id}/cancel", cancel, "POST"), ("/runs/{run_id}/pause", pause_or_resume("pause"), "POST"),
              ("/runs/{run_id}/resume", pause_or_resume("resume"), "POST"), ("/jobs", list_jobs, "GET")]
    for path, endpoint, method in routes:
        app.add_api_route(PREFIX + path, endpoint, methods=[method], dependencies=dependencies)
