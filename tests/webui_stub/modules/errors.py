"""Stand-in of modules/errors.py: the reporting helpers extensions call."""
from __future__ import annotations

import logging
import traceback

log = logging.getLogger("webui_stub")
exception_records: list[str] = []


def record_exception():
    exception_records.append(traceback.format_exc())


def report(message: str, *, exc_info: bool = False) -> None:
    log.error(message, exc_info=exc_info)
    if exc_info:
        record_exception()


def print_error(message: str, *, exc_info: bool = False) -> None:
    report(message, exc_info=exc_info)


def display(e: Exception, task, *, full_traceback=False):
    report(f"{task or 'error'}: {type(e).__name__}: {e}", exc_info=True)
