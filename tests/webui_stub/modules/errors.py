"""Stand-in of modules/errors.py: the reporting helpers the WebUI and extensions call.

As in v1.10.1, every report made while an exception is being handled lands in
`exception_records` (what the WebUI's /internal/sysinfo shows): a dict of the message and the
traceback, at most the last five. The WebUI swallows
errors of callbacks, scripts and wrapped Gradio calls this way, so tests/webui/conftest.py
fails any test that leaves a new record (a test expecting one reads and clears the list).
"""
from __future__ import annotations

import logging
import sys
import traceback

log = logging.getLogger("webui_stub")
exception_records: list[dict] = []
KEPT_RECORDS = 5     # v1.10.1 keeps the last five


def format_traceback(tb) -> list[list[str]]:
    return [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line] for frame in traceback.extract_tb(tb)]


def format_exception(e: BaseException, tb) -> dict:
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions() -> list[dict]:
    return list(reversed(exception_records))


def record_exception() -> None:
    """Record the exception being handled now (nothing outside an except block)."""
    _, e, tb = sys.exc_info()
    if e is None:
        return
    exception_records.append(format_exception(e, tb))
    if len(exception_records) > KEPT_RECORDS:
        exception_records.pop(0)


def report(message: str, *, exc_info: bool = False) -> None:
    record_exception()
    log.error(message, exc_info=exc_info)


def display(e: Exception, task, *, full_traceback=False):
    record_exception()
    log.error("%s: %s: %s", task or "error", type(e).__name__, e)
