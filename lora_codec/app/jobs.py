"""Compress jobs: a job is one clip's fit, in a folder holding the clip as coded, the settings, the
resumable fit state and the last result (`app_support.save_job` / `load_job`). A fit runs in slices
(one `gpu.gpu_fit` call each, the state saved at the end of each), then one `gpu.gpu_finish` call,
then the CPU comparison (`results`). Stop early, Keep improving and a page reload work on the saved
state.

The generators here yield *fields*: dicts keyed by the page's output names (`OUTPUT_KEYS`), which
`app.py` maps to its components. `session` is the page session's key (Gradio's session hash)."""

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

OUTPUT_KEYS = ("job", "status", "notes", "code_file", "code_text", "bytes_table", "original", "recon",
               "baseline", "baseline_file", "metrics", "summary")
# A still picture's result also holds its three pictures (None for a video). They are not outputs of
# /encode (its outputs stay as they were); app.py shows them from the job after a compress.
PICTURE_KEYS = ("original_image", "recon_image", "baseline_image")

ACTIVE: dict[str, str] = {}  # session key or "job:<id>" -> job folder being fitted (for Stop)
SESSION_DIRS: dict[str, set] = {}  # session key -> folders to delete when the session ends


# ---------------------------------------------------------------------------------------------
# folders of a page session


def track_dir(session: str, path) -> None:
    if len(SESSION_DIRS) > 1000:  # sessions that never said goodbye (API clients): forget swept folders
        for key in [k for k, dirs in SESSION_DIRS.items() if not any(Path(d).exists() for d in dirs)]:
            SESSION_DIRS.pop(key, None)
    SESSION_DIRS.setdefault(session, set()).add(str(path))


def end_session(session: str) -> None:
    ACTIVE.pop(session, None)
    for d in SESSION_DIRS.pop(session, set()):
        S.remove_workdir(d)


def delete_job(job) -> None:
    # a job kept for the browser (job_id) outlives the session (a page reload); it expires by age
    if isinstance(job, dict) and not job.get("job_id"):
        S.remove_workdir(job.get("dir"))


def not_running(jid: str | None) -> None:
    if jid and ACTIVE.get(f"job:{jid}"):
        raise LimitError("this browser's fit is already running (in another tab?): wait for it, or stop it first")


# ---------------------------------------------------------------------------------------------
# the fit, the finish, the results


def run_job(job: dict, session: str):
    """Fit a job to its target (in slices, one GPU call each), finish, compare. Yields fields."""
    keys = [session] + ([f"job:{job['job_id']}"] if job.get("job_id") else [])
    stop_file = Path(job["dir"]) / "STOP"
    stop_file.unlink(missing_ok=True)
    for k in keys:
        ACTIVE[k] = job["dir"]
    S.save_job(job)
    t_start = time.perf_counter()
    c = R.costs()
    g = G.geom(job)
    B = R.BACKBONE
    batch = int(job["settings"].get("batch") or R.D.batch)
    if job["settings"].get("target_kb") is not None:  # rate control fine-tunes briefly (for the estimate)
        fs = job["settings"].get("finetune_steps")
        job["finetune_steps"] = fs if fs is not None else max(5, int(job["target_steps"]) // 5)
    try:
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
                        yield {"status": f"**Fitting** - {R.CALL} {call} started (step {p['step']} / {p['total']})"}
                    elif kind == "step":
                        if not first_step:  # the first step of a call carries warm-up
                            R.COSTS.observe_fit(B, g, batch, step_s=p["step_s"])
                        first_step = False
                        job["steps_done"] = p["step"]
                        yield {"status": T.status_line(p, call, calls_est, t_start)}
                    elif kind == "saved":
                        job["steps_done"] = p["step"]
                        job["fit_done"] = p["done"]
                        done = p["done"]
                        stopped = p["stopped"]
                        S.save_job(job)
            if not done and not stopped and int(job.get("steps_done", 0)) <= before:
                raise LimitError("a GPU call ended before it could make one fit step (its set-up took too long); "
                                 "try fewer frames, or run the fit with the CLI on your own GPU")
            if not done and call >= 1000:
                raise LimitError("the fit did not finish in 1000 GPU calls")
        yield {"status": ("**Stopped early** at step %d - " % job["steps_done"] if stopped else "**Fit done** - ")
               + "quantising, writing the code and decoding it as a receiver would "
               + f"(~{S.fmt_seconds(G.finish_estimate(job))})..."}
    finally:
        for k in keys:
            ACTIVE.pop(k, None)
        stop_file.unlink(missing_ok=True)

    # finish (GPU): the code and its reconstruction
    need = G.finish_estimate(job)
    with R.model_lock():
        out = S.gpu_call(lambda cs: G.gpu_finish(job, cs), S.call_duration(need, job.get("max_call_s")), need_s=need,
                         on_shorter=lambda cs: job.update(max_call_s=cs))
    if "error" in out:
        raise LoraCodecError(out["error"])
    R.COSTS.observe_decode(B, g, out.get("decode_step_s"), out.get("decode_fixed_s"))
    yield {"status": "**Code written** - coding the same clip with x265 at the same size (CPU)..."}
    last = results(job, out, stopped)
    job["last"] = last
    S.save_job(job)  # a page reload shows this result again (job id in the browser)
    yield {"job": job} | last


def compress(video, caption, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, seed, sample_steps,
             frames, batch, refine_steps, size=None, job=None, job_id=None, segments=1, *,
             session: str = "anonymous"):
    """A new job from the Compress form: read the clip, then `run_job`. Yields fields. `segments` > 1
    codes that many consecutive segments of a long clip (each with `fit_steps` steps) into one code."""
    path = S.check_upload(video)
    segments = F.int_in("segments", segments or 1, 1, F.MAX_SEGMENTS)
    settings = F.encode_settings(caption=caption, rate_mode=rate_mode, target_kb=target_kb, fit_steps=fit_steps,
                                 refine_log2=refine_log2, seed=seed, sample_steps=sample_steps, batch=batch,
                                 refine_steps=refine_steps)
    fit_steps = settings["fit_steps"]
    jid = S.check_job_id(job_id) if job_id else None  # from the browser (BrowserState) or an API client
    not_running(jid)
    if isinstance(job, dict) and job.get("job_id") != jid:  # a new compress replaces the previous job
        delete_job(job)
    if jid:  # kept across a page reload, under the browser's job id; expires by age
        wd = S.fresh_job_dir(jid)
    else:
        wd = S.new_workdir("job")
        track_dir(session, wd)
    yield {"status": "**Reading the clip...**"}
    rec = S.prepare_clip(path, wd, R.BACKBONE, start_seconds=start_seconds, max_frames=frames, size=F.size_arg(size),
                         segments=segments)
    settings["size"] = list(rec["size"])  # every GPU call codes the stored clip at this size
    if rec.get("segments", 1) > 1 and settings.get("refine_n"):
        raise LimitError("a refinement track is for one-segment codes: set the refinement candidates to off, or code "
                         "one segment")
    new = dict(rec)
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(path).stem)[:40] or "clip"
    new.update(dir=str(wd), state=str(wd / "fit_state.safetensors"), settings=settings,
               target_steps=fit_steps * int(rec.get("segments", 1)), steps_done=0, fit_done=False, name=stem,
               version=0, job_id=jid)
    if R.TINY:
        new["notes"] = list(new["notes"]) + ["tiny backbone: random weights, no visual knowledge - the "
                                             "reconstruction is not meaningful"]
    yield {"job": new, "original": rec["original"], "notes": T.bullets(new["notes"]),
           "status": "**Starting the fit...**"}
    yield from run_job(new, session)


def keep_improving(extra_steps, job, job_id=None, *, session: str = "anonymous"):
    """More fitting from the saved state (the fit is anytime), then a new code. `job_id`: the
    browser's job id (kept across a page reload), to continue a fit made in an earlier session."""
    if job_id:
        jid = S.check_job_id(job_id)
        if not (isinstance(job, dict) and job.get("job_id") == jid):
            job = S.load_job(jid)
        if job is None:
            raise LimitError(T.UNKNOWN_JOB)
        not_running(jid)
    if not isinstance(job, dict) or not Path(job.get("state", "")).exists():
        raise LimitError("compress a clip first (there is no fit to continue in this session)")
    extra = F.int_in("extra steps", extra_steps, 1, S.LIMITS.max_fit_steps)
    job = dict(job)
    job["steps_done"] = S.state_step(job["state"])  # the saved state is the truth (a call may have failed)
    job["target_steps"] = job["steps_done"] + extra
    if int(job["target_steps"]) > S.LIMITS.max_fit_steps * 4:
        raise LimitError("this fit is already at the app's limit; continue it with the CLI (--resume)")
    job["fit_done"] = False
    yield {"status": f"**Keep improving** - {extra} more steps from step {job.get('steps_done', 0)}..."}
    yield from run_job(job, session)


def stop(job_id=None, *, session: str = "anonymous") -> str:
    """Stop the running fit after its current step; the code is then written from the state so far."""
    wd = ACTIVE.get(f"job:{S.check_job_id(job_id)}") if job_id else None
    wd = wd or ACTIVE.get(session)
    if not wd:
        return "Nothing is fitting in this session."
    (Path(wd) / "STOP").write_text("stop")
    return "**Stopping** after the current step..."


def pictures(job) -> dict | None:
    """A finished picture job's three pictures ({"original_image", "recon_image", "baseline_image"}),
    None when the job's last result is a video (or there is none)."""
    last = (job or {}).get("last") or {} if isinstance(job, dict) else {}
    if not last.get("recon_image"):
        return None
    return {k: last.get(k) for k in PICTURE_KEYS}


def restore(job_id) -> tuple[str, dict | None, dict]:
    """On page load: the browser's job id (a new one if it has none), its saved job (or None) and the
    fields to show (its last result, or a status saying what was kept); fields not in the dict stay."""
    try:
        jid = S.check_job_id(job_id) if job_id else None
    except LimitError:
        jid = None
    job = S.load_job(jid) if jid else None
    if job is None:
        fields = {}
        if jid:
            fields["status"] = f"*{T.UNKNOWN_JOB[0].upper()}{T.UNKNOWN_JOB[1:]}.*"
        return S.new_job_id(), None, fields
    last = job.get("last") or {}
    fields = {k: v for k, v in last.items() if k in OUTPUT_KEYS and k != "job"}
    try:
        step = S.state_step(job["state"]) if Path(job["state"]).exists() else 0
    except Exception:
        step = int(job.get("steps_done", 0))
    if last:
        fields["status"] = f"*Restored after a page reload.* {last.get('status', '')}"
    else:
        fields["original"] = job.get("original")
        fields["status"] = (f"*Restored after a page reload:* the fit is saved at step {step} (no code written yet); "
                            "*Keep improving* continues it.")
    if ACTIVE.get(f"job:{jid}"):
        fields["status"] = f"**A fit of this job is still running** (saved at step {step}). " + fields["status"]
    return jid, job, fields
