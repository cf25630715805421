"""The functions that run the model, module level as ZeroGPU needs (`spaces.GPU` with a duration
computed from their arguments; a no-op off ZeroGPU). Inputs and outputs are plain values (bytes,
numpy arrays, JSON-able Python); model errors come back as {"error": message} so they cross the
ZeroGPU process boundary intact. A long fit runs as several `gpu_fit` calls that carry the resumable
fit state (a safetensors file in the job's folder)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from .. import app_support as S
from ..backbones import Geometry
from ..codec import EncodeSettings, decode, describe
from ..segments import LongEncode, SegmentSettings
from ..errors import LoraCodecError
from . import runtime as R


def plain(obj):
    """Plain JSON-able Python (no tensors, no numpy scalars, no inf/nan)."""
    def default(o):
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, (bytes, bytearray)):
            return o.hex()
        return str(o)

    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    return fix(json.loads(json.dumps(obj, default=default)))


def settings_from(job: dict) -> EncodeSettings:
    # `measure` always on (its default): the finish shows the encoder's own decode of the code it wrote
    return EncodeSettings(**{k: v for k, v in job["settings"].items() if k in R.ENCODE_FIELDS and k != "measure"})


def geom(job_or_code) -> Geometry:
    f, h, w = job_or_code["geometry"]
    return Geometry(int(f), int(h), int(w))


# ---------------------------------------------------------------------------------------------
# durations (seconds asked of ZeroGPU), from the cost model


def setup_estimate(job: dict) -> float:
    c = R.costs()
    if c is None:
        return 30.0
    g = geom(job)
    return c.setup(g.frames * g.height * g.width)


def fit_duration(job: dict, seconds: float, call_s: float | None = None) -> float:
    if call_s is not None:  # the caller planned the call (and may be retrying a shorter one)
        return float(call_s)
    return S.call_duration(setup_estimate(job) + float(seconds))


def finish_estimate(job: dict) -> float:
    c = R.costs()
    if c is None:
        return 60.0
    g = geom(job)
    tokens, pixels = S.video_tokens(R.BACKBONE, g), g.frames * g.height * g.width
    s = job["settings"]
    steps = s.get("sample_steps") or R.D.sample_steps
    finetune = job.get("finetune_steps", 0)
    refine = s.get("refine_steps") or (steps if s.get("refine_n") else 0)
    n = int(job.get("segments", 1) or 1)  # a long clip: every segment is decoded (each was finished in its fit)
    return (c.setup(pixels) + finetune * c.fit_step(tokens, int(s.get("batch") or R.D.batch))
            + refine * c.sample_step(tokens) + n * c.decode(tokens, pixels, steps))


def finish_duration(job: dict, call_s: float | None = None) -> float:
    return float(call_s) if call_s is not None else S.call_duration(finish_estimate(job))


def decode_estimate(code: bytes, steps: int | None, segments=None) -> float:
    c = R.costs()
    try:
        info = describe(code)
    except LoraCodecError:
        return 20.0
    if c is None:
        return 60.0
    g = Geometry(info.get("segment_frames") or info["frames"], info["height"], info["width"])
    try:
        tokens = S.video_tokens(R.BACKBONE, g)
    except Exception:
        return 60.0
    n = int(steps or info["sample_steps"])
    count = int(info.get("segments") or 1)
    if segments is not None:
        from ..segments import parse_segment_range

        try:
            a, b = parse_segment_range(segments, count)
            count = b - a
        except LoraCodecError:
            pass
    return count * c.decode(tokens, g.frames * g.height * g.width, n)


def decode_duration(code: bytes, steps: int | None = None, caption: str | None = None, refine=None,
                    call_s: float | None = None, segments=None, merge=None, weights=None, merge_names=None) -> float:
    return float(call_s) if call_s is not None else S.call_duration(decode_estimate(code, steps, segments))


# ---------------------------------------------------------------------------------------------
# the GPU functions


def resume_session(job: dict) -> LongEncode:
    """The job's encode session as the last GPU call left it: clip + settings + saved fit state (and
    the caption embedding the first call cached in the job folder). A clip of at most the native
    length is one `EncodeSession` inside; a long clip's job codes its segments one after the other
    (segments.py), the state recording the finished ones."""
    session = LongEncode.start(S.load_clip(job), settings_from(job), SegmentSettings(max_seconds=None, overlap=1),
                               backbone=R.BACKBONE, caption_cache=Path(job["dir"]) / "caption.safetensors")
    try:
        state = Path(job["state"])
        if state.exists():
            session.load_state(state)
    except BaseException:
        session.close()
        raise
    return session


@S.gpu(duration=fit_duration)
def gpu_fit(job: dict, seconds: float, call_s: float | None = None):
    """Rebuild the encode session from the stored clip + settings + fit state, fit for up to
    `seconds` (or until done / stopped), save the state. Yields progress dicts. `call_s`: the call's
    requested duration; on ZeroGPU the fit stops in time to save the state before it ends."""
    try:
        t0 = time.perf_counter()  # the call's own start: the deadline counts from here
        hard = float(call_s) if call_s is not None else fit_duration(job, seconds)
        session = resume_session(job)
        state = Path(job["state"])
        try:
            target = int(job["target_steps"])
            total = session.total_steps
            if target > total:  # keep improving past the schedule: a longer stage 2
                session.extend(target - total)
            setup_s = time.perf_counter() - t0
            yield {"kind": "setup", "setup_s": setup_s, "step": session.steps_done, "total": target,
                   "notes": list(session.notes), "segments": session.segments}
            stop_file = Path(job["dir"]) / "STOP"
            save_file = Path(job["dir"]) / "SAVE"  # asked for when the page that follows the fit goes away
            # on ZeroGPU the call is ended at its requested duration: stop early enough to save the state
            if not S.ON_ZEROGPU:
                hard = None
            start = last_save = time.perf_counter()
            step_s = 0.0
            last_p = None
            while (session.steps_done < target and not session.done
                   and time.perf_counter() - start < float(seconds) and not stop_file.exists()):
                if hard is not None and S.fit_deadline_reached(time.perf_counter() - t0, hard, step_s):
                    break
                ts = time.perf_counter()
                seg = session.fitting_segment
                session.fit(max_steps=1)  # (a long clip: may also finish a segment, or open the next)
                step_s = time.perf_counter() - ts
                if session.done or (session.last_progress is None and seg is not None):  # a segment just ended
                    session.save_state(state)
                    last_save = time.perf_counter()
                if session.done:
                    break
                p = session.last_progress or last_p
                if p is None:
                    continue
                last_p = p
                # the size of the code a stop now would write, at every step (quantise + entropy-code: ms)
                size = session.code_bytes_estimate()
                yield {"kind": "step", "step": session.steps_done, "total": target, "stage": p.stage, "loss": p.loss,
                       "mse": p.mse, "est_payload_bytes": p.est_payload_bytes, "code_bytes": size,
                       "step_s": step_s, "fit_seconds": p.elapsed,
                       "segment": (session.fitting_segment or 0) + 1, "segments": session.segments}
                asked = save_file.exists()
                if asked or time.perf_counter() - last_save > 30.0:
                    session.save_state(state)
                    save_file.unlink(missing_ok=True)
                    last_save = time.perf_counter()
                    yield {"kind": "checkpoint", "step": session.steps_done, "total": target}
            session.save_state(state)
            yield {"kind": "saved", "step": session.steps_done, "total": target,
                   "done": bool(session.done or session.steps_done >= target), "stopped": stop_file.exists()}
        finally:
            session.close()
    except LoraCodecError as exc:
        yield {"kind": "error", "message": str(exc)}


@S.gpu(duration=finish_duration)
def gpu_finish(job: dict, call_s: float | None = None) -> dict:
    """Quantise (rate control to the target if set, the refinement track if asked), write the code,
    and decode it exactly as a receiver would. Returns bytes, the report and uint8 frames."""
    try:
        t0 = time.perf_counter()
        session = resume_session(job)
        timer = S.StepTimer()
        try:
            # finish() decodes the code it wrote exactly as a receiver would (report['decoded_psnr']): that
            # decode is the one shown, not a second one
            result = session.finish(decode_progress=timer)
        finally:
            session.close()
        dec = result.decoded
        dec_s = float(result.report["measure_seconds"])
        finish_s = time.perf_counter() - t0 - dec_s
        step_s, fixed_s = timer.split(dec_s)
        return {"code": bytes(result.data), "report": plain(result.report), "frames": np.ascontiguousarray(dec.frames),
                "finish_s": finish_s, "decode_s": dec_s, "decode_step_s": step_s, "decode_fixed_s": fixed_s,
                "notes": list(result.notes)}
    except LoraCodecError as exc:
        return {"error": str(exc)}


@S.gpu(duration=decode_duration)
def gpu_decode(code: bytes, steps: int | None = None, caption: str | None = None, refine=None,
               call_s: float | None = None, segments=None, merge=None, weights=None, merge_names=None) -> dict:
    """Decode a code (`segments`: a long clip's range, e.g. '2-3'; `merge`: other codes applied at once
    with `weights`, the decoded code's first - editing)."""
    try:
        kwargs = {}
        if refine is not None and R.DECODE_HAS_REFINE:
            kwargs["refine"] = refine
        if segments is not None:
            kwargs["segments"] = segments
        if merge:
            kwargs.update(merge=merge, weights=weights, merge_names=merge_names)
        timer = S.StepTimer()
        t0 = time.perf_counter()
        res = decode(code, steps=steps, caption=caption, backbone=R.BACKBONE, progress=timer, **kwargs)
        total = time.perf_counter() - t0
        step_s, fixed_s = timer.split(total)
        return {"frames": np.ascontiguousarray(res.frames), "fps": [res.fps.numerator, res.fps.denominator],
                "report": plain(res.report), "decode_s": total, "decode_step_s": step_s, "decode_fixed_s": fixed_s}
    except LoraCodecError as exc:
        return {"error": str(exc)}
