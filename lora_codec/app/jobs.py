"""Compress jobs: a job is one clip's fit, in a folder holding the clip as coded, the settings, the
resumable fit state and the last result (`app_support.save_job` / `load_job`). A fit runs in slices
(one `gpu.gpu_fit` call each, the state saved at the end of each), then one `gpu.gpu_finish` call,
then the CPU comparison (`results`). Jobs run on the server (`runner.Runner`), not in the request
that started them: the page follows them, and re-attaches after a reload (`attach`).

The generators here yield *fields*: dicts keyed by the page's output names (`OUTPUT_KEYS`), which
`app.py` maps to its components, plus `controls` (which actions make sense now: `CONTROLS`).
`session` is the page session's key (Gradio's session hash)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from .. import app_support as S
from ..errors import LimitError, LoraCodecError
from . import forms as F
from . import gpu as G
from . import runtime as R
from . import text as T
from .results import results
from .runner import SAVE_FILE, STOP_FILE, Runner  # noqa: F401

OUTPUT_KEYS = ("job", "status", "notes", "code_file", "code_text", "bytes_table", "original", "recon",
               "baseline", "baseline_file", "metrics", "summary")
RESULT_KEYS = ("notes", "code_file", "code_text", "bytes_table", "original", "recon", "baseline", "baseline_file",
               "metrics", "summary")
# A still picture's result also holds its three pictures (None for a video). They are not outputs of
# /encode (its outputs stay as they were); app.py shows them from the job after a compress.
PICTURE_KEYS = ("original_image", "recon_image", "baseline_image")
# what the page's buttons can do: no fit yet / a fit queued or running / a fit to continue or improve
EMPTY, BUSY, READY = "empty", "busy", "ready"

RUNNER = Runner(R.CONCURRENCY, queued_text=lambda ahead: {"status": T.queued_line(ahead)},
                cancelled_text=lambda: {"status": T.CANCELLED, "controls": EMPTY})
SESSION_DIRS: dict[str, set] = {}  # session key -> folders to delete when the session ends


def cleared() -> dict:
    """The result fields of no result (a new compress clears the previous run's)."""
    return {"notes": "", "code_file": None, "code_text": "", "bytes_table": {"headers": S.BYTE_HEADERS, "data": []},
            "original": None, "recon": None, "baseline": None, "baseline_file": None,
            "metrics": {"headers": S.METRIC_HEADERS, "data": []}, "summary": None}


def run_key(job_id: str | None, session: str) -> str:
    """The runner's key of a job: the browser's job id, else (API clients) the session."""
    return f"job:{job_id}" if job_id else f"session:{session}"


# ---------------------------------------------------------------------------------------------
# folders of a page session


def track_dir(session: str, path) -> None:
    if len(SESSION_DIRS) > 1000:  # sessions that never said goodbye (API clients): forget swept folders
        for key in [k for k, dirs in SESSION_DIRS.items() if not any(Path(d).exists() for d in dirs)]:
            SESSION_DIRS.pop(key, None)
    SESSION_DIRS.setdefault(session, set()).add(str(path))


def end_session(session: str) -> None:
    """A page session ended (tab closed or reloaded): a browser's job keeps running (the page
    re-attaches), asked to save its fit state now; a session's own job (an API client's) is stopped."""
    for run in list(RUNNER.runs.values()):
        if run.active and session in run.sessions:
            if run.key == run_key(None, session):
                RUNNER.stop(run.key)
            else:
                run.request_save()
    for d in SESSION_DIRS.pop(session, set()):
        S.remove_workdir(d)


def delete_job(job) -> None:
    # a job kept for the browser (job_id) outlives the session (a page reload); it expires by age
    if isinstance(job, dict) and not job.get("job_id") and not RUNNER.active(run_key(None, job.get("session", ""))):
        S.remove_workdir(job.get("dir"))


# ---------------------------------------------------------------------------------------------
# the fit, the finish, the results (runs in the runner's thread)


def run_job(job: dict):
    """Fit a job to its target (in slices, one GPU call each), finish, compare. Yields fields."""
    stop_file = Path(job["dir"]) / STOP_FILE
    S.save_job(job)
    t_start = time.perf_counter()
    c = R.costs()
    g = G.geom(job)
    B = R.BACKBONE
    batch = int(job["settings"].get("batch") or R.D.batch)
    if job["settings"].get("target_kb") is not None:  # rate control fine-tunes briefly (for the estimate)
        fs = job["settings"].get("finetune_steps")
        job["finetune_steps"] = fs if fs is not None else max(5, int(job["target_steps"]) // 5)
    job["stopped"] = False
    remaining = max(0, int(job["target_steps"]) - int(job.get("steps_done", 0)))
    per_step = c.fit_step(S.video_tokens(B, g), batch) if c else 1.0
    # the longest call this visitor's allowance took (a refused call is retried shorter)
    job.setdefault("max_call_s", float(S.LIMITS.max_gpu_call_s))
    call_s, slice_s = S.plan_call_seconds(c, B, g, batch, job["max_call_s"])
    calls_est = max(1, math.ceil(remaining * per_step / max(1.0, slice_s)))
    call = 0
    done = job.get("fit_done", False) and job["target_steps"] <= job.get("steps_done", 0)
    stopped = False

    def shorter(new_call_s: float) -> None:
        job["max_call_s"] = new_call_s
        S.save_job(job)

    def fit_call(max_call_s: float):
        cs, fit_s = S.plan_call_seconds(R.costs(), B, g, batch, max_call_s)
        return G.gpu_fit(job, fit_s, cs)

    yield {"status": T.fit_starting(job), "controls": BUSY}
    while not done and not stopped:
        call += 1
        call_s = float(job["max_call_s"])
        first_step = True
        before = int(job.get("steps_done", 0))
        with R.model_lock():
            for p in S.iter_gpu_call(fit_call, call_s, on_shorter=shorter):
                kind = p.get("kind")
                if kind == "error":
                    raise LoraCodecError(p["message"])
                if kind == "setup":
                    if call == 1:
                        R.COSTS.observe_fit(B, g, batch, step_s=0, setup_s=p["setup_s"])
                    yield {"status": T.call_started(call, p)}
                elif kind == "step":
                    if not first_step:  # the first step of a call carries warm-up
                        R.COSTS.observe_fit(B, g, batch, step_s=p["step_s"])
                    first_step = False
                    job["steps_done"] = p["step"]
                    yield {"status": T.status_line(p, call, calls_est, t_start, job)}
                elif kind == "checkpoint":  # the state was saved mid-call (asked, or every 30 s)
                    job["steps_done"] = p["step"]
                    S.save_job(job)
                elif kind == "saved":
                    job["steps_done"] = p["step"]
                    job["fit_done"] = p["done"]
                    done = p["done"]
                    stopped = p["stopped"]
                    job["stopped"] = bool(stopped)
                    S.save_job(job)
        if not done and not stopped and int(job.get("steps_done", 0)) <= before:
            raise LimitError("a GPU call ended before it could make one fit step (its set-up took too long); "
                             "try fewer frames, or run the fit with the command-line tool on your own GPU")
        if not done and call >= 1000:
            raise LimitError("the fit did not finish in 1000 GPU calls")
    stop_file.unlink(missing_ok=True)
    yield {"status": T.finishing(job, stopped, G.finish_estimate(job))}

    # finish (GPU): the code and its reconstruction
    need = G.finish_estimate(job)
    with R.model_lock():
        out = S.gpu_call(lambda cs: G.gpu_finish(job, cs), S.call_duration(need, job.get("max_call_s")), need_s=need,
                         on_shorter=lambda cs: job.update(max_call_s=cs))
    if "error" in out:
        raise LoraCodecError(out["error"])
    R.COSTS.observe_decode(B, g, out.get("decode_step_s"), out.get("decode_fixed_s"))
    yield {"status": "**Code written** - coding the same clip with x265 at the same size, for comparison..."}
    last = results(job, out, stopped)
    job["last"] = last
    S.save_job(job)  # a page reload shows this result again (job id in the browser)
    yield {"job": job, "controls": READY} | last


def _follow(job: dict, session: str, kind: str):
    run = RUNNER.submit(run_key(job.get("job_id"), session), job["dir"], lambda: run_job(job), session=session,
                        kind=kind)
    yield from RUNNER.follow(run)


# ---------------------------------------------------------------------------------------------
# what the page asks for


def compress(video, caption, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, seed, sample_steps,
             frames, batch, refine_steps, size=None, job=None, job_id=None, segments=1, *,
             session: str = "anonymous"):
    """A new job from the Compress form: check everything that can be checked before any work
    (inputs, the clip's limits, a size target below the smallest possible code), read the clip,
    then run the fit on the server and follow it. Yields fields; the first clears the previous run's
    results. `segments` > 1 codes that many consecutive segments of a long clip (each with
    `fit_steps` steps) into one code."""
    yield {"status": "**Checking the clip and the settings...**", "controls": BUSY} | cleared()
    path = S.check_upload(video)
    segments = F.int_in("segments", segments or 1, 1, F.MAX_SEGMENTS)
    settings = F.encode_settings(caption=caption, rate_mode=rate_mode, target_kb=target_kb, fit_steps=fit_steps,
                                 refine_log2=refine_log2, seed=seed, sample_steps=sample_steps, batch=batch,
                                 refine_steps=refine_steps)
    fit_steps = settings["fit_steps"]
    jid = S.check_job_id(job_id) if job_id else None  # from the browser (BrowserState) or an API client
    key = run_key(jid, session)
    if RUNNER.active(key):
        raise LimitError("a fit from this browser is already running (in another tab?): wait for it, or stop it "
                         "first")
    g, _src, info = F.planned_clip(path, start_seconds, frames, size)
    if segments == 1:
        F.check_size_target(settings, g, *F.clip_rate_and_source(info, g))
    if isinstance(job, dict) and job.get("job_id") != jid:  # a new compress replaces the previous job
        delete_job(job)
    if jid:  # kept across a page reload, under the browser's job id; expires by age
        wd = S.fresh_job_dir(jid)
    else:
        wd = S.new_workdir("job")
        track_dir(session, wd)
    yield {"status": "**Reading the clip...**", "job": None}
    try:
        rec = S.prepare_clip(path, wd, R.BACKBONE, start_seconds=start_seconds, max_frames=frames,
                             size=F.size_arg(size), segments=segments)
        if rec.get("segments", 1) > 1 and settings.get("refine_n"):
            raise LimitError("a refinement track is for one-segment codes: set the refinement candidates to off, or "
                             "code one segment")
    except BaseException:
        S.remove_workdir(wd)
        raise
    settings["size"] = list(rec["size"])  # every GPU call codes the stored clip at this size
    new = dict(rec)
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(path).stem)[:40] or "clip"
    new.update(dir=str(wd), state=str(wd / "fit_state.safetensors"), settings=settings,
               target_steps=fit_steps * int(rec.get("segments", 1)), steps_done=0, fit_done=False, name=stem,
               file_name=Path(path).name, version=0, job_id=jid, session=session)
    new["notes"] = [T.plain(n) for n in new["notes"]]
    if R.TINY:
        new["notes"] = list(new["notes"]) + ["tiny backbone: random weights, no visual knowledge - the "
                                             "reconstruction is not meaningful"]
    S.save_job(new)
    yield {"job": new, "original": rec["original"], "notes": T.bullets(new["notes"])}
    yield from _follow(new, session, "compress")


def keep_improving(extra_steps, job, job_id=None, *, session: str = "anonymous"):
    """More fitting from the saved state (the fit is anytime), then a new code. A fit that was
    interrupted (a server restart, a lost GPU call) first completes its original budget; `extra_steps`
    then does not count. `job_id`: the browser's job id (kept across a page reload)."""
    if job_id:
        jid = S.check_job_id(job_id)
        if RUNNER.active(run_key(jid, session)):
            raise LimitError("this fit is still running: wait for it, or press Stop early first")
        job = S.load_job(jid)  # the server's record is the truth (the page's copy may be older)
        if job is None:
            raise LimitError(T.UNKNOWN_JOB)
    elif RUNNER.active(run_key(None, session)):
        raise LimitError("this fit is still running: wait for it, or press Stop early first")
    if not isinstance(job, dict) or not Path(job.get("dir", "")).is_dir():
        raise LimitError("compress a clip first (there is no fit to continue in this session)")
    job = dict(job)
    has_state = Path(job["state"]).exists()
    job["steps_done"] = S.state_step(job["state"]) if has_state else 0  # the saved state is the truth
    if interrupted(job):
        target = int(job["target_steps"])
        msg = T.resuming(job["steps_done"], target)
    else:
        if not has_state:
            raise LimitError("compress a clip first (there is no fit to continue in this session)")
        extra = F.int_in("more steps", extra_steps, 1, S.LIMITS.max_fit_steps)
        target = job["steps_done"] + extra
        msg = f"**Keep improving** - {extra} more steps from step {job['steps_done']}..."
    if target > S.LIMITS.max_fit_steps * 4:
        raise LimitError("this fit is already at the app's limit; continue it on your own machine with the "
                         "command-line tool (it can resume the fit)")
    job["target_steps"] = target
    job["fit_done"] = False
    yield {"status": msg, "controls": BUSY}
    yield from _follow(job, session, "keep_improving")


def interrupted(job: dict) -> bool:
    """A fit that ended before its budget without being stopped (a restart, a lost GPU call, an error)."""
    return (not job.get("fit_done") and not job.get("stopped")
            and int(job.get("steps_done", 0)) < int(job.get("target_steps", 0)))


def stop(job_id=None, *, session: str = "anonymous") -> str:
    """Stop early: a waiting fit is cancelled; a running one stops after its current step and its
    code is written from the state so far."""
    jid = S.check_job_id(job_id) if job_id else None
    what = RUNNER.stop(run_key(jid, session)) if jid else None
    what = what or RUNNER.stop(run_key(None, session))
    if what == "cancelled":
        return T.CANCELLED
    if what == "stopping":
        return "**Stopping** after the current step; then the code is written from the fit so far..."
    return "Nothing is fitting or waiting right now."


def pictures(job) -> dict | None:
    """A finished picture job's three pictures ({"original_image", "recon_image", "baseline_image"}),
    None when the job's last result is a video (or there is none)."""
    last = (job or {}).get("last") or {} if isinstance(job, dict) else {}
    if not last.get("recon_image"):
        return None
    return {k: last.get(k) for k in PICTURE_KEYS}


def attach(job_id, *, session: str = "anonymous"):
    """On page load: what the browser's job is now. A running or waiting job is followed live (its
    fields as they change, until it ends); otherwise its saved state says what was kept. Yields fields
    (with `job` and `controls`). A browser that never compressed gets nothing but `controls`."""
    try:
        jid = S.check_job_id(job_id) if job_id else None
    except LimitError:
        jid = None
    if jid is None:
        yield {"controls": EMPTY}
        return
    run = RUNNER.get(run_key(jid, ""))
    if run is not None and run.active:
        run.sessions.add(session)
        job = S.load_job(jid)
        first = {"job": job, "controls": BUSY}
        if job is not None:
            first |= {k: v for k, v in (job.get("last") or {}).items() if k in RESULT_KEYS}
            first["original"] = job.get("original")
        yield first
        yield from RUNNER.follow(run)
        return
    job = S.load_job(jid)
    if job is None:
        if not S.job_dir(jid).is_dir():  # the browser had a job the server no longer has
            yield {"status": T.LOST_JOB, "controls": EMPTY, "job": None}
        else:
            yield {"controls": EMPTY}  # the last compress failed before its job was written
        return
    last = job.get("last") or {}
    fields = {k: v for k, v in last.items() if k in RESULT_KEYS}
    fields["original"] = job.get("original")
    has_state = Path(job["state"]).exists()
    step = S.state_step(job["state"]) if has_state else 0
    job["steps_done"] = step
    phase = run.phase if run is not None else None
    if interrupted(job):
        fields["status"] = T.interrupted_status(job, step, bool(last), phase=phase,
                                                error=str(run.error) if phase == "failed" and run.error else None)
    elif last:
        fields["status"] = f"*Restored after a page reload.* {last.get('status', '')}"
    else:
        fields["status"] = T.fit_saved_no_code(step)
    yield fields | {"job": job, "controls": READY}
