"""Runs compress jobs on the server, independently of the page that asked for them.

A job's work (a generator of *fields*, `jobs.run_job`) runs in its own thread; the page only
*follows* it. A page reload, a closed tab or a lost connection leaves the fit running; the page
re-attaches (`follow`) on load and shows live progress again. Jobs wait their turn for the model
in this process's own queue (`slots` at a time), so a job that is still waiting can be cancelled
(Stop early) and the page can say how many fits are ahead of it.

When a follower goes away before its job ends (the client disconnected), the job is asked to save
its fit state at its next step (`Run.request_save`), on top of the save at every slice end.

The thread runs in a copy of the submitting request's context (`contextvars`), so that on ZeroGPU
the GPU calls are still attributed to the visitor who asked for them after the page is gone."""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import LimitError, LoraCodecError

log = logging.getLogger("lora_codec.app")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STOP_FILE, SAVE_FILE = "STOP", "SAVE"  # asked of a running fit through its folder (the GPU call may be another process)


class JobFailed(LoraCodecError):
    """A job ended with an error; `internal` when it was a bug rather than a user error."""

    def __init__(self, message: str, internal: bool = False):
        super().__init__(message)
        self.internal = internal


class Run:
    """One job's run: its phase and the latest value of every field it produced."""

    def __init__(self, key: str, job_dir: str, session: str, kind: str):
        self.key, self.dir, self.session, self.kind = key, job_dir, session, kind
        self.phase = QUEUED
        self.fields: dict = {}
        self.stamp: dict = {}
        self.version = 0
        self.error: JobFailed | None = None
        self.ahead = 0
        self.started = time.time()
        self.sessions = {session}  # page sessions following it (the one that started it, re-attached ones)
        # every status it set, in order (a follower gets only the latest at each update; tests and logs
        # can read them all)
        self.history: collections.deque = collections.deque(maxlen=2000)
        self.cond = threading.Condition()

    @property
    def active(self) -> bool:
        return self.phase in (QUEUED, RUNNING)

    def update(self, fields: dict) -> None:
        with self.cond:
            if "status" in fields:
                self.history.append(fields["status"])
            self.version += 1
            for k, v in fields.items():
                self.fields[k] = v
                self.stamp[k] = self.version
            self.cond.notify_all()

    def end(self, phase: str, error: JobFailed | None = None, fields: dict | None = None) -> None:
        with self.cond:
            if fields:
                self.version += 1
                for k, v in fields.items():
                    self.fields[k] = v
                    self.stamp[k] = self.version
            self.phase, self.error = phase, error
            self.version += 1
            self.cond.notify_all()

    def changes(self, since: int) -> tuple[int, dict]:
        """(current version, the fields changed after version `since`). Call with `cond` held."""
        return self.version, {k: v for k, v in self.fields.items() if self.stamp.get(k, 0) > since}

    def request_save(self) -> None:
        """Ask the running fit to save its state at its next step (a follower went away)."""
        if self.phase == RUNNING:
            try:
                (Path(self.dir) / SAVE_FILE).write_text("save")
            except OSError:
                pass


class Runner:
    def __init__(self, slots: int = 1, queued_text: Callable[[int], dict] | None = None,
                 cancelled_text: Callable[[], dict] | None = None):
        self.slots = max(1, int(slots))
        self.lock = threading.Condition()
        self.queue: list[Run] = []
        self.running: list[Run] = []
        self.runs: dict[str, Run] = {}
        self.queued_text = queued_text or (lambda ahead: {})
        self.cancelled_text = cancelled_text or (lambda: {})
        # called first in each job's thread (in the request's copied context): the UI layer unties the
        # job from the page's event there (app.py: on ZeroGPU a GPU call that waits for a GPU would
        # otherwise be cancelled when that page is gone), keeping the request (the visitor's quota)
        self.on_thread_start: Callable[[], None] | None = None

    # -- asking ----------------------------------------------------------------------------------
    def get(self, key: str | None) -> Run | None:
        return self.runs.get(key) if key else None

    def active(self, key: str | None) -> Run | None:
        run = self.get(key)
        return run if run is not None and run.active else None

    def submit(self, key: str, job_dir: str, work: Callable[[], Iterator[dict]], *, session: str = "",
               kind: str = "compress") -> Run:
        """Queue `work` (a callable returning the job's field generator) under `key`; it starts when a
        model slot is free. LimitError when a job of that key is still queued or running."""
        with self.lock:
            if self.active(key):
                raise LimitError("a fit from this browser is already running (in another tab?): wait for it, "
                                 "or stop it first")
            for name in (STOP_FILE, SAVE_FILE):
                (Path(job_dir) / name).unlink(missing_ok=True)
            run = Run(key, job_dir, session, kind)
            self.runs[key] = run
            self.queue.append(run)
            self._forget_old()
            ctx = contextvars.copy_context()
            threading.Thread(target=ctx.run, args=(self._main, run, work), daemon=True,
                             name=f"lora_codec-job-{key[:12]}").start()
            self.lock.notify_all()
        return run

    def stop(self, key: str | None) -> str | None:
        """Stop a job: a waiting one is cancelled (nothing was fitted), a running one stops after its
        current step and writes its code. Returns "cancelled", "stopping" or None (nothing active)."""
        with self.lock:
            run = self.active(key)
            if run is None:
                return None
            if run.phase == QUEUED:
                self.queue.remove(run)
                run.end(CANCELLED, fields=self.cancelled_text())
                self.lock.notify_all()
                return "cancelled"
        (Path(run.dir) / STOP_FILE).write_text("stop")
        return "stopping"

    def ahead_of(self, run: Run) -> int:
        with self.lock:
            return self._ahead(run)

    # -- following -------------------------------------------------------------------------------
    def follow(self, run: Run, since: int = 0, heartbeat_s: float = 1.0, every_s: float = 0.2):
        """Yield the fields `run` changes (all it has at first when `since` is 0) until it ends, at most
        one update every `every_s` (changes in between are merged: the page gets the latest); then
        raise its error if it failed. A follower closed early asks the fit to save its state."""
        seen = since
        finished = False
        last = 0.0
        try:
            while True:
                wait = every_s - (time.monotonic() - last)
                if wait > 0 and run.active:
                    time.sleep(wait)
                with run.cond:
                    if run.version == seen and run.active:
                        run.cond.wait(heartbeat_s)
                    version, changed = run.changes(seen)
                    ended = not run.active
                seen = version
                if changed:
                    last = time.monotonic()
                    yield changed
                if ended:
                    finished = True
                    break
        finally:
            if not finished:
                run.request_save()
        if run.phase == FAILED and run.error is not None:
            raise run.error

    # -- the job thread --------------------------------------------------------------------------
    def _ahead(self, run: Run) -> int:
        if run not in self.queue:
            return 0
        return self.queue.index(run) + max(0, len(self.running) - self.slots + 1)

    def _main(self, run: Run, work) -> None:
        if self.on_thread_start is not None:
            try:
                self.on_thread_start()
            except Exception:  # never fatal
                log.warning("could not untie a job from its page event", exc_info=True)
        with self.lock:
            while True:
                if run.phase != QUEUED:
                    return  # cancelled while waiting
                if self.queue and self.queue[0] is run and len(self.running) < self.slots:
                    break
                ahead = self._ahead(run)
                if ahead != run.ahead or run.version == 0:
                    run.ahead = ahead
                    run.update(self.queued_text(ahead))
                self.lock.wait(1.0)
            self.queue.pop(0)
            self.running.append(run)
            run.phase = RUNNING
        try:
            for fields in work():
                run.update(fields)
            run.end(DONE)
        except LoraCodecError as exc:
            run.end(FAILED, JobFailed(str(exc)))
        except Exception as exc:  # a bug: logged with its traceback, said briefly on the page
            log.exception("internal error in a compress job")
            first = " ".join(str(exc).split())[:200]
            run.end(FAILED, JobFailed(f"internal error ({type(exc).__name__}: {first}). This is a bug in the app.",
                                      internal=True))
        finally:
            for name in (STOP_FILE, SAVE_FILE):
                (Path(run.dir) / name).unlink(missing_ok=True)
            with self.lock:
                if run in self.running:
                    self.running.remove(run)
                self.lock.notify_all()

    def _forget_old(self, keep: int = 500) -> None:
        if len(self.runs) > keep:
            done = sorted((r for r in self.runs.values() if not r.active), key=lambda r: r.started)
            for r in done[: len(self.runs) - keep]:
                self.runs.pop(r.key, None)
