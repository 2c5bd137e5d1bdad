"""One job system for every long action: training, import, check, prep, tagging, grids, tools.

A `Job` is what the tab, the HTTP API and the standalone server show and control: one set
of states (queued, running, paused, finished, cancelled, failed), progress (done, total,
text), a short log, the result or the error in plain words, cancel and pause requests.
`Jobs` is the one registry of a process: it starts each job's function on a thread (or in
the caller's thread), lists jobs, finds them by id and cancels them. Ids are unique in the
process, whichever registry made them.

What a job may hold exclusively belongs to the host, not to the job: `Host.exclusive(job)`
waits until the job may use the GPU and the model, and yields a `Hold` the job can release
and take again (a paused run gives the WebUI back). Inside the WebUI the hold is its queue
lock, shared.state and progress task (lib_lora/webui/host.py); standalone it is a plain lock
(`LocalHost`). Jobs that only read and write files need no hold: they must not wait hours
behind a training run.

A job's function reads `job.should_stop()` and calls `job.progress(...)`; it returns its
result. It may leave the job "paused" (a run that let go of its memory while paused), which
`Jobs.launch` keeps; any other end becomes finished, cancelled or failed here.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator, Protocol

from lib_lora.errors import LoraError

log = logging.getLogger(__name__)

STATES = ("queued", "running", "paused", "finished", "cancelled", "failed")
ACTIVE = ("queued", "running", "paused")
KEEP_FINISHED = 20          # per kind: finished jobs hold reports and captions, keep the recent ones
LOG_LINES = 200

_counter = itertools.count(1)
_counter_lock = threading.Lock()


def new_job_id(kind: str) -> str:
    """`<kind><n>-<random>`: unique in this process (one counter for every registry) and not
    guessable across restarts of the WebUI."""
    with _counter_lock:
        number = next(_counter)
    return f"{kind}{number}-{secrets.token_hex(3)}"


class Hold(Protocol):
    """What a job holds while the host is its alone; every method is idempotent."""

    def take(self) -> None: ...          # wait for the host, then own it (again, after a release)
    def release(self) -> None: ...       # let others use the host (a paused run)
    def interrupted(self) -> bool: ...   # the host's own stop button was pressed while held
    def interrupt(self) -> None: ...     # press it: stops what the job does now (a sample render too)
    def report(self, job: "Job") -> None: ...   # mirror the job's progress into the host's display


class KindState(Protocol):
    """What one kind of job keeps beyond the common fields (a training run: its config, chart, pause)."""

    def as_dict(self) -> dict[str, Any]: ...    # its fields for the API's view of the job
    def cancelled(self, job: "Job") -> None: ...  # a cancel was asked: wake what waits (a paused run)


class Host(Protocol):
    name: str                            # "webui" | "standalone": shown, never branched on

    def queued(self, job: "Job") -> None: ...                      # a job was accepted
    def dropped(self, job: "Job") -> None: ...                     # cancelled before it started: forget it
    def exclusive(self, job: "Job") -> ContextManager[Hold]: ...    # the GPU and the model, alone


@dataclass
class Job:
    id: str
    kind: str                            # "train", "tag", "prep", "grid", "extract", ...
    title: str                           # what the user started, e.g. "tagging my_dataset"
    state: str = "queued"
    done: int = 0
    total: int = 0
    text: str = "waiting"
    log: list[str] = field(default_factory=list)
    result: Any = None
    error: str = ""
    task_id: str = ""                    # the host's progress task (the WebUI's id_task)
    created: float = field(default_factory=time.time)
    cancel_requested: bool = False
    pause_requested: bool = False
    hold: Hold | None = None             # set while the job holds the host
    kind_state: KindState | None = None  # what this kind keeps beyond these fields (a run: train_job.TrainRun)
    headline: str = ""                   # the host's progress line when the kind says more than done/total
    key: str = ""                        # what it writes (a run: its folder and name): one active job per kind and key
    on_dropped: Callable[["Job"], None] | None = field(default=None, repr=False)   # the host's `dropped`
    worker: threading.Thread | None = field(default=None, repr=False)    # the thread of the last launch
    # queued -> running or cancelled happens once, under this lock: a cancel never races the start
    start_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def progress(self, done: int, total: int, text: str = "") -> None:
        self.done, self.total = done, total
        if text:
            self.text = text
        if self.hold is not None:
            self.hold.report(self)

    def note(self, text: str) -> None:
        """One line for the job's log (the tab and the API show the last ones)."""
        self.log = (self.log + [text])[-LOG_LINES:]
        self.text = text

    def should_stop(self) -> bool:
        return self.cancel_requested or (self.hold is not None and self.hold.interrupted())

    def cancel(self) -> None:
        if not self.active:
            return
        dropped = False
        with self.start_lock:
            self.cancel_requested = True
            if self.state == "queued":    # still waiting for the host (maybe hours): it ends now, never starts
                self.state, dropped = "cancelled", True
        if dropped and self.on_dropped is not None:     # the host's progress bar stops saying "in queue"
            self.on_dropped(self)
        # a job about to pause may have given the host back already: its Interrupt is someone else's now
        if self.hold is not None and self.state == "running" and not self.pause_requested:
            self.hold.interrupt()
        if self.kind_state is not None:
            self.kind_state.cancelled(self)

    def as_dict(self) -> dict[str, Any]:
        keys = ("id", "kind", "title", "state", "done", "total", "text", "error", "created", "pause_requested")
        own = self.kind_state.as_dict() if self.kind_state is not None else {}
        return {**{k: getattr(self, k) for k in keys}, "log": self.log[-20:], **own}


class LocalHold:
    """The standalone host's hold: one lock for the one model of the process."""

    def __init__(self, lock: threading.Lock):
        self.lock, self.held = lock, False

    def take(self) -> None:
        if not self.held:
            self.lock.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()

    def interrupted(self) -> bool:
        return False

    def interrupt(self) -> None:
        pass

    def report(self, job: Job) -> None:
        pass


class LocalHost:
    """A process of our own (the standalone server, the CLI): jobs that use the model take turns."""
    name = "standalone"

    def __init__(self):
        self.lock = threading.Lock()

    def queued(self, job: Job) -> None:
        pass

    def dropped(self, job: Job) -> None:
        pass

    @contextlib.contextmanager
    def exclusive(self, job: Job) -> Iterator[LocalHold]:
        hold = LocalHold(self.lock)
        hold.take()
        try:
            yield hold
        finally:
            hold.release()


JobFn = Callable[[Job], Any]


class Jobs:
    """The jobs of this process, by id; `host` says what `exclusive` jobs wait for."""

    def __init__(self, host: Host):
        self.host = host
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, title: str, fn: JobFn, *, exclusive: bool, task_id: str = "",
               background: bool = True, one_per_kind: bool = True, kind_state: KindState | None = None,
               key: str = "") -> Job:
        """Start `fn(job)` as a new job. `exclusive`: it waits for the host (GPU work);
        `one_per_kind`: refuse a second job of this kind while one is active; `key`: refuse a second
        active job of this kind with this key (two runs queued on one output name would write over
        each other's files one after the other); `kind_state`: the kind's own state, there before
        `fn` starts."""
        with self._lock:
            if one_per_kind and any(j.kind == kind and j.active for j in self.jobs.values()):
                raise LoraError(f"A {kind} job is already going", where=title,
                                fix="Wait for it to finish, or cancel it first")
            same = [j for j in self.jobs.values() if key and j.kind == kind and j.key == key and j.active]
            if same:
                raise LoraError(f"The {kind} job {same[0].id} ({same[0].title}) is {same[0].state} and writes the "
                                "same files", where=title, fix="Wait for it to end or cancel it, or choose another "
                                "output name")
            self._forget_old(kind)
            job = Job(new_job_id(kind), kind, title, task_id=task_id, kind_state=kind_state, key=key,
                      on_dropped=self.host.dropped)
            self.jobs[job.id] = job
        self.host.queued(job)
        self.launch(job, fn, exclusive=exclusive, background=background)
        return job

    def launch(self, job: Job, fn: JobFn, *, exclusive: bool, background: bool = True) -> None:
        """Run `fn` for `job` (again, for a resumed one) on a thread, or here when not `background`."""
        job.error = ""
        if not job.cancel_requested:      # a cancel racing a resume stays a cancel
            job.state = "queued"
        previous = job.worker
        if background:
            job.worker = threading.Thread(target=self._run, args=(job, fn, exclusive, previous),
                                          name=f"train-lora-{job.id}", daemon=True)
            job.worker.start()
        else:
            self._run(job, fn, exclusive, previous)

    def get(self, job_id: str, kind: str | None = None) -> Job:
        job = self.jobs.get(job_id)
        if job is None or (kind is not None and job.kind != kind):
            what = f"{kind} job" if kind else "job"
            shown = str(job_id)
            shown = shown if len(shown) <= 64 else shown[:48] + "..."       # a request's junk is not echoed whole
            raise LoraError(f"There is no {what} {shown!r}", where="job id",
                            fix="Pick one from the list of jobs (GET /train_lora/v1/jobs)")
        return job

    def list(self, kind: str | None = None) -> list[Job]:
        with self._lock:     # an API request lists while the tab submits: no "dict changed size"
            every = list(self.jobs.values())
        return [j for j in every if kind is None or j.kind == kind]

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel()
        return job

    def _run(self, job: Job, fn: JobFn, exclusive: bool, previous: threading.Thread | None = None) -> None:
        if previous is not None and previous is not threading.current_thread():
            previous.join()      # a launch again (a resume) starts once the last one has let go of everything
            if not job.cancel_requested:
                job.state = "queued"
        try:
            with (self.host.exclusive(job) if exclusive else contextlib.nullcontext()) as hold:
                job.hold = hold
                with job.start_lock:
                    if job.cancel_requested:      # cancelled while it waited: nothing to do
                        job.state = "cancelled"
                        return
                    job.state = "running"
                job.result = fn(job)
                job.state = _end_state(job)       # while held: the host's Interrupt counts as a cancel
        except LoraError as err:
            job.state, job.error = "failed", str(err)
        except Exception as err:   # shown in the tab and the API; the host must keep working
            log.exception("Train LoRA job %s failed", job.id)
            job.state, job.error = "failed", f"{job.title} failed: {type(err).__name__}: {err}"
        finally:
            job.hold = None

    def _forget_old(self, kind: str) -> None:
        ended = [j for j in self.jobs.values() if j.kind == kind and not j.active]
        for old in ended[:-KEEP_FINISHED]:
            del self.jobs[old.id]


def _end_state(job: Job) -> str:
    """How a job whose function returned ended: an end its function wrote stays (a paused run can
    resume; a training run maps its own stop reason)."""
    if job.state != "running":
        return job.state
    if job.should_stop() or getattr(job.result, "cancelled", False):
        return "cancelled"
    return "finished"
