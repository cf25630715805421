"""lora_codec in the browser: the Hugging Face Space entry point (Gradio, ZeroGPU-ready).

A thin UI over the `lora_codec` API. Compress: a clip -> a code (file and text form), where its bytes
went, the reconstruction, and x265 at the same number of bytes. Decode: any code -> video, with
another caption if wanted.

ZeroGPU: the backbone is loaded at import; every function that runs the model is decorated with
`spaces.GPU` and a duration computed from its arguments; a long fit runs as several GPU calls that
carry the resumable fit state (a safetensors file in the session's job folder); GPU functions return
only bytes, numpy arrays and plain Python values. Off ZeroGPU the decorator is a no-op, so the same
file runs on a CPU with the tiny backbone (`python app.py`).

Stable API names (gradio_client): /encode, /keep_improving, /stop, /estimate, /decode, /describe_code.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # ZeroGPU wants `spaces` imported before torch; off a Space it is optional
    import spaces  # noqa: F401
except Exception:  # pragma: no cover - not installed
    if os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true"):
        raise  # on a ZeroGPU Space the GPU functions cannot run without it: fail loudly
    spaces = None

import dataclasses  # noqa: E402
import contextlib
import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from lora_codec import app_support as S  # noqa: E402
from lora_codec import bitstream  # noqa: E402
from lora_codec.backbones import Geometry, load_backbone  # noqa: E402
from lora_codec.cli import parse_size  # noqa: E402
from lora_codec.codec import EncodeSession, EncodeSettings, decode, describe  # noqa: E402
from lora_codec.errors import BackboneError, LimitError, LoraCodecError  # noqa: E402

log = logging.getLogger("lora_codec.app")
for _noisy in ("diffusers", "transformers", "peft"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = [
    [str(EXAMPLES_DIR / "bigbuckbunny_2s.mp4"),
     "A big grey cartoon rabbit crawls out of his burrow under a tree on a grassy hill and stretches, "
     "3D animation, soft morning light", 0.0],
]
EXAMPLE_CREDIT = ("Example: *Big Buck Bunny* (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC BY 3.0; "
                  "cut to 2 s, resampled to 16 fps, scaled and re-encoded (see `examples/LICENSE.md`).")

# ---------------------------------------------------------------------------------------------
# The model, loaded at import (ZeroGPU moves it to the GPU inside each GPU call)

MODEL = os.environ.get("LORA_CODEC_MODEL", "auto")
LOAD_ERROR: str | None = None
try:
    BACKBONE = load_backbone(MODEL)
except BackboneError as _exc:
    if MODEL.lower() != "auto":
        raise
    LOAD_ERROR = str(_exc)
    log.warning("falling back to the small backbone: %s", LOAD_ERROR)
    BACKBONE = load_backbone("small")

TINY = BACKBONE.is_tiny
WAN = not (BACKBONE.is_tiny or BACKBONE.is_small)  # the real model (the CPU backbones code their native size)
CALL = "GPU call" if BACKBONE.device.type == "cuda" else "slice"  # what one fit slice is called on the page
LIMITS = S.LIMITS
ENCODE_FIELDS = {f.name for f in dataclasses.fields(EncodeSettings)}
HAS_REFINE = {"refine_n"} <= ENCODE_FIELDS
DECODE_HAS_REFINE = "refine" in inspect.signature(decode).parameters

# One model, one user at a time in this process. On ZeroGPU every GPU call runs in its own worker
# process, so the lock is only needed (and only taken) off ZeroGPU. Never taken inside a GPU function.
MODEL_LOCK = threading.Lock()
CONCURRENCY = int(os.environ.get("LORA_CODEC_APP_CONCURRENCY", "2" if S.ON_ZEROGPU else "1"))


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def model_lock():
    return _NoLock() if S.ON_ZEROGPU else MODEL_LOCK


COSTS = S.Costs()


def _calibrate() -> None:
    try:
        with MODEL_LOCK:
            COSTS.set(S.calibrate(BACKBONE))
    except Exception as exc:  # never fatal: fall back to no estimate
        log.warning("calibration failed: %s", exc)
        COSTS.error = str(exc)
        COSTS.ready.set()


_native_tokens = S.video_tokens(BACKBONE, BACKBONE.native)
_native_pixels = BACKBONE.native.frames * BACKBONE.native.height * BACKBONE.native.width
if TINY or BACKBONE.device.type == "cpu":
    threading.Thread(target=_calibrate, name="lora_codec-calibrate", daemon=True).start()
else:
    COSTS.set(S.wan_costs(_native_tokens, _native_pixels))  # a GPU check's measurements, else the estimate

# UI defaults per backbone
FRAME_CHOICES = S.allowed_frame_counts(BACKBONE)
D = BACKBONE.defaults
APP_DEFAULTS = S.app_defaults(BACKBONE)
DEFAULT_FRAMES = APP_DEFAULTS.frames
DEFAULT_FIT_STEPS = APP_DEFAULTS.fit_steps
DEFAULT_BATCH = APP_DEFAULTS.batch
DEFAULT_TARGET_KB = 32.0 if WAN else (1.0 if TINY else 2.0)
SIZES = S.size_presets(BACKBONE)


def _size_value(size) -> str:
    return f"{size[0]}x{size[1]}"


def _size_choices() -> tuple[list[tuple[str, str]], str]:
    """The size presets with the GPU time of a default compress at each (cost model), and the default:
    the largest preset whose default fit needs at most a few GPU calls (`S.default_size`)."""
    c = _costs()
    if c is None or not WAN:
        return [(_size_value(sz), _size_value(sz)) for sz in SIZES], _size_value(SIZES[0] if WAN else SIZES[-1])
    choices = []
    for w, h in SIZES:
        p = S.plan_encode(c, BACKBONE, Geometry(DEFAULT_FRAMES, h, w), fit_steps=DEFAULT_FIT_STEPS, batch=DEFAULT_BATCH,
                          sample_steps=D.sample_steps)
        choices.append((f"{w}x{h} (~{S.fmt_seconds(p.total_s)} of GPU time, {p.calls} GPU calls by default)",
                        _size_value((w, h))))
    best, _plan = S.default_size(c, BACKBONE, SIZES, frames=DEFAULT_FRAMES, fit_steps=DEFAULT_FIT_STEPS,
                                 batch=DEFAULT_BATCH, sample_steps=D.sample_steps)
    return choices, _size_value(best)


def _size_arg(size) -> tuple[int, int] | None:
    """The size dropdown's value -> (width, height), one of the presets (LimitError otherwise)."""
    if size in (None, "", "native"):
        return None
    wh = parse_size(str(size))
    if wh not in [tuple(x) for x in SIZES]:
        raise LimitError(f"size {size} is not offered here; choose one of: {', '.join(map(_size_value, SIZES))}")
    return wh


SIZE_NOTE = ("" if not WAN else "Wan2.1-1.3B was trained at 480p (832x480): smaller sizes cost quality, and much "
             "less GPU time.")
PRESETS = {  # API value -> (label, rate weight lambda; METHOD.md: ~3e-3 .. 15e-3)
    "small": ("small (λ = 0.015)", 15e-3),
    "balanced": ("balanced (λ = 0.005)", S.BALANCED_LAMBDA),
    "detailed": ("detailed (λ = 0.003)", 3e-3),
}
RATE_TARGET = "target"
RATE_CHOICES = [("size target (kB)", RATE_TARGET)] + [(label, key) for key, (label, _l) in PRESETS.items()]
REFINE_MAX_LOG2 = 10

ACTIVE: dict[str, str] = {}  # session hash -> job folder being fitted (for Stop)
SESSION_DIRS: dict[str, set] = {}  # session hash -> folders to delete when the session ends


# ---------------------------------------------------------------------------------------------
# helpers


def _user_error(exc: BaseException) -> gr.Error:
    return gr.Error(" ".join(str(exc).split()) or type(exc).__name__, print_exception=False)


def _internal_error(exc: BaseException) -> gr.Error:
    log.exception("internal error")
    first = " ".join(str(exc).split())[:200]
    return gr.Error(f"internal error ({type(exc).__name__}: {first}). This is a bug in the app.",
                    print_exception=False)


@contextlib.contextmanager
def _errors_as_messages():
    """LoraCodecError -> a one-line gr.Error; anything else -> a short 'internal error'."""
    try:
        yield
    except gr.Error:
        raise
    except LoraCodecError as exc:
        raise _user_error(exc) from None
    except Exception as exc:
        raise _internal_error(exc) from None


def _guarded(fn):
    """Wrap a callback (plain or generator) in `_errors_as_messages`."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _errors_as_messages():
                yield from fn(*args, **kwargs)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _errors_as_messages():
                return fn(*args, **kwargs)
    return wrapper


def _plain(obj):
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


def _session_key(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "anonymous") if request is not None else "anonymous"


def _track_dir(request, path) -> None:
    if len(SESSION_DIRS) > 1000:  # sessions that never said goodbye (API clients): forget swept folders
        for key in [k for k, dirs in SESSION_DIRS.items() if not any(Path(d).exists() for d in dirs)]:
            SESSION_DIRS.pop(key, None)
    SESSION_DIRS.setdefault(_session_key(request), set()).add(str(path))


def _end_session(request: gr.Request) -> None:
    key = _session_key(request)
    ACTIVE.pop(key, None)
    for d in SESSION_DIRS.pop(key, set()):
        S.remove_workdir(d)


def _delete_job(job) -> None:
    # a job kept for the browser (job_id) outlives the session (a page reload); it expires by age
    if isinstance(job, dict) and not job.get("job_id"):
        S.remove_workdir(job.get("dir"))


def _settings_from(job: dict) -> EncodeSettings:
    return EncodeSettings(**{k: v for k, v in job["settings"].items() if k in ENCODE_FIELDS})


def _geom(job_or_code) -> Geometry:
    f, h, w = job_or_code["geometry"]
    return Geometry(int(f), int(h), int(w))


def _costs(wait: float = 0.0) -> S.CostModel | None:
    return COSTS.get(timeout=wait)


# ---------------------------------------------------------------------------------------------
# GPU functions (module level, as ZeroGPU needs). Inputs and outputs are plain values; model errors
# come back as {"error": message} so they cross the ZeroGPU process boundary intact.


def _setup_estimate(job: dict) -> float:
    c = _costs()
    if c is None:
        return 30.0
    g = _geom(job)
    return c.setup(g.frames * g.height * g.width)


def _resume_session(job: dict) -> EncodeSession:
    """The job's encode session as the last GPU call left it: clip + settings + saved fit state (and
    the caption embedding the first call cached in the job folder)."""
    session = EncodeSession.start(S.load_clip(job), _settings_from(job), backbone=BACKBONE,
                                  caption_cache=Path(job["dir"]) / "caption.safetensors")
    try:
        state = Path(job["state"])
        if state.exists():
            session.load_state(state)
    except BaseException:
        session.close()
        raise
    return session


def _fit_duration(job: dict, seconds: float, call_s: float | None = None) -> float:
    if call_s is not None:  # the caller planned the call (and may be retrying a shorter one)
        return float(call_s)
    return S.call_duration(_setup_estimate(job) + float(seconds))


@S.gpu(duration=_fit_duration)
def gpu_fit(job: dict, seconds: float, call_s: float | None = None):
    """Rebuild the encode session from the stored clip + settings + fit state, fit for up to
    `seconds` (or until done / stopped), save the state. Yields progress dicts. `call_s`: the call's
    requested duration; on ZeroGPU the fit stops in time to save the state before it ends."""
    try:
        t0 = time.perf_counter()  # the call's own start: the deadline counts from here
        hard = float(call_s) if call_s is not None else _fit_duration(job, seconds)
        session = _resume_session(job)
        state = Path(job["state"])
        try:
            target = int(job["target_steps"])
            total = session.fit_config.total_steps
            if target > total:  # keep improving past the schedule: a longer stage 2
                session.extend(target - total)
            setup_s = time.perf_counter() - t0
            fitter = session.fitter
            yield {"kind": "setup", "setup_s": setup_s, "step": fitter.step, "total": target,
                   "notes": list(session.notes)}
            stop_file = Path(job["dir"]) / "STOP"
            # on ZeroGPU the call is ended at its requested duration: stop early enough to save the state
            if not S.ON_ZEROGPU:
                hard = None
            start = last_save = last_size = time.perf_counter()
            size = None
            step_s = 0.0
            while (fitter.step < target and not fitter.done and time.perf_counter() - start < float(seconds)
                   and not stop_file.exists()):
                if hard is not None and S.fit_deadline_reached(time.perf_counter() - t0, hard, step_s):
                    break
                ts = time.perf_counter()
                session.fit(max_steps=1)
                now = time.perf_counter()
                step_s = now - ts
                if size is None or now - last_size > 2.0 or fitter.done:
                    size = len(session.code_bytes())
                    last_size = time.perf_counter()
                p = fitter.last
                yield {"kind": "step", "step": p.step, "total": target, "stage": p.stage, "loss": p.loss,
                       "mse": p.mse, "est_payload_bytes": p.est_payload_bytes, "code_bytes": size,
                       "step_s": step_s, "fit_seconds": fitter.elapsed}
                if time.perf_counter() - last_save > 30.0:
                    session.save_state(state)
                    last_save = time.perf_counter()
            session.save_state(state)
            yield {"kind": "saved", "step": fitter.step, "total": target,
                   "done": bool(fitter.done or fitter.step >= target), "stopped": stop_file.exists()}
        finally:
            session.close()
    except LoraCodecError as exc:
        yield {"kind": "error", "message": str(exc)}


def _finish_estimate(job: dict) -> float:
    c = _costs()
    if c is None:
        return 60.0
    g = _geom(job)
    tokens, pixels = S.video_tokens(BACKBONE, g), g.frames * g.height * g.width
    s = job["settings"]
    steps = s.get("sample_steps") or D.sample_steps
    finetune = job.get("finetune_steps", 0)
    refine = s.get("refine_steps") or (steps if s.get("refine_n") else 0)
    return (c.setup(pixels) + finetune * c.fit_step(tokens, int(s.get("batch") or D.batch))
            + refine * c.sample_step(tokens) + c.decode(tokens, pixels, steps))


def _finish_duration(job: dict, call_s: float | None = None) -> float:
    return float(call_s) if call_s is not None else S.call_duration(_finish_estimate(job))


@S.gpu(duration=_finish_duration)
def gpu_finish(job: dict, call_s: float | None = None) -> dict:
    """Quantise (rate control to the target if set, the refinement track if asked), write the code,
    and decode it exactly as a receiver would. Returns bytes, the report and uint8 frames."""
    try:
        t0 = time.perf_counter()
        session = _resume_session(job)
        timer = S.StepTimer()
        try:
            # finish() decodes the code it wrote as a receiver would (report['decoded_psnr']): reuse that decode
            result = session.finish(measure=True, decode_progress=timer)
        finally:
            session.close()
        dec = result.decoded
        dec_s = float(result.report["measure_seconds"])
        finish_s = time.perf_counter() - t0 - dec_s
        step_s, fixed_s = timer.split(dec_s)
        return {"code": bytes(result.data), "report": _plain(result.report), "frames": np.ascontiguousarray(dec.frames),
                "finish_s": finish_s, "decode_s": dec_s, "decode_step_s": step_s, "decode_fixed_s": fixed_s,
                "notes": list(result.notes)}
    except LoraCodecError as exc:
        return {"error": str(exc)}


def _decode_estimate(code: bytes, steps: int | None) -> float:
    c = _costs()
    try:
        info = describe(code)
    except LoraCodecError:
        return 20.0
    if c is None:
        return 60.0
    g = Geometry(info["frames"], info["height"], info["width"])
    try:
        tokens = S.video_tokens(BACKBONE, g)
    except Exception:
        return 60.0
    n = int(steps or info["sample_steps"])
    return c.decode(tokens, g.frames * g.height * g.width, n)


def _decode_duration(code: bytes, steps: int | None = None, caption: str | None = None, refine=None,
                     call_s: float | None = None) -> float:
    return float(call_s) if call_s is not None else S.call_duration(_decode_estimate(code, steps))


@S.gpu(duration=_decode_duration)
def gpu_decode(code: bytes, steps: int | None = None, caption: str | None = None, refine=None,
               call_s: float | None = None) -> dict:
    try:
        kwargs = {}
        if refine is not None and DECODE_HAS_REFINE:
            kwargs["refine"] = refine
        timer = S.StepTimer()
        t0 = time.perf_counter()
        res = decode(code, steps=steps, caption=caption, backbone=BACKBONE, progress=timer, **kwargs)
        total = time.perf_counter() - t0
        step_s, fixed_s = timer.split(total)
        return {"frames": np.ascontiguousarray(res.frames), "fps": [res.fps.numerator, res.fps.denominator],
                "report": _plain(res.report), "decode_s": total, "decode_step_s": step_s, "decode_fixed_s": fixed_s}
    except LoraCodecError as exc:
        return {"error": str(exc)}


# ---------------------------------------------------------------------------------------------
# Estimates


def _rate_kwargs(rate_mode: str, target_kb) -> dict:
    if rate_mode == RATE_TARGET:
        try:
            t = float(target_kb)
        except (TypeError, ValueError):
            raise LimitError("enter a size target in kB (1 kB = 1000 bytes)") from None
        if not (0.05 <= t <= LIMITS.max_code_kb):
            raise LimitError(f"the size target must be between 0.05 and {LIMITS.max_code_kb} kB")
        return {"target_kb": t}
    if rate_mode in PRESETS:
        return {"rate_lambda": PRESETS[rate_mode][1]}
    raise LimitError(f"unknown size setting {rate_mode!r}; choose one of: {RATE_TARGET}, {', '.join(PRESETS)}")


def _int_in(name: str, value, lo: int, hi: int) -> int:
    try:
        v = int(round(float(value)))
    except (TypeError, ValueError):
        raise LimitError(f"{name} must be a whole number") from None
    if not lo <= v <= hi:
        raise LimitError(f"{name} must be in {lo}..{hi}, got {v}")
    return v


def _planned_geometry(video, start_seconds, frames, size=None) -> tuple[Geometry, str]:
    frames = _int_in("frames to code", frames, 1, BACKBONE.native.frames)
    wh = _size_arg(size)
    if video:
        info = S.probe(video)
        avail = frames
        if info.frames:
            left = info.frames - int(float(start_seconds or 0) * info.fps)
            avail = max(1, min(frames, left))
        g = BACKBONE.coded_geometry(avail, info.height, info.width,
                                    size=S.oriented(wh, info.height, info.width) if wh else None)
        return g, f"source {info.width}x{info.height}, {info.fps:.3g} fps" + (
            f", {info.seconds:.2f} s" if info.seconds else "")
    return BACKBONE.coded_geometry(frames, BACKBONE.native.height, BACKBONE.native.width, size=wh), "no clip yet"


@_guarded
def estimate(video, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, sample_steps, frames, batch,
             refine_steps=0, size=None) -> str:
    """Markdown: what a compress with these settings will cost, before it starts."""
    c = _costs(wait=30.0)
    if c is None:
        return "*Time estimate unavailable (the start-up calibration failed).*"
    fit_steps = _int_in("fit steps", fit_steps, 1, LIMITS.max_fit_steps)
    batch = _int_in("batch", batch, 1, 16)
    sample_steps = _int_in("sampling steps", sample_steps, 1, LIMITS.max_sample_steps)
    g, src = _planned_geometry(video, start_seconds, frames, size)
    finetune = 0
    if rate_mode == RATE_TARGET:
        finetune = max(5, fit_steps // 5)
    refine_steps = (int(refine_steps or 0) or sample_steps) if (HAS_REFINE and int(refine_log2 or 0) > 0) else 0
    p = S.plan_encode(c, BACKBONE, g, fit_steps=fit_steps, batch=batch, sample_steps=sample_steps,
                      finetune_steps=finetune, refine_steps=refine_steps)
    where = "GPU time" if BACKBONE.device.type == "cuda" else f"time on this {BACKBONE.device.type.upper()}"
    kind = ("measured on this machine" if c.source == "measured"
            else "an estimate from the published architecture (METHOD.md section 7), not a measurement")
    calls = (f" in {p.calls} GPU calls" if BACKBONE.device.type == "cuda" else "")
    lines = [
        f"**Estimated {where}: ~{S.fmt_seconds(p.total_s)}**{calls} ({kind}).",
        "",
        f"- coded as {g.frames} frames {g.width}x{g.height} ({p.tokens:,} video tokens; {src})",
        f"- fit: {fit_steps} steps x batch {batch} at ~{p.per_step_s:.3g} s/step = ~{S.fmt_seconds(p.fit_s)}"
        + (f", split into GPU calls of <= {S.fmt_seconds(LIMITS.max_gpu_call_s if S.ON_ZEROGPU else LIMITS.slice_s)}"
           if p.calls > 2 else ""),
        f"- finish (quantise{', rate control' if finetune else ''}{', refinement track' if refine_steps else ''})"
        f" + decoding the reconstruction ({sample_steps} steps): ~{S.fmt_seconds(p.finish_s + p.decode_s + p.setup_s)}",
        "- then x265 at the same size and the metrics, on the CPU",
    ]
    if WAN:
        from lora_codec.recipes import paper

        P = paper(D)  # the published recipe (the default recipe is 1/10 of its samples: docs/FIT.md)
        full = S.plan_encode(c, BACKBONE, BACKBONE.coded_geometry(BACKBONE.native.frames, BACKBONE.native.height,
                             BACKBONE.native.width), fit_steps=P.stage1_steps + P.stage2_steps, batch=P.batch,
                             sample_steps=D.sample_steps)
        lines.append(f"- for scale: the paper's full setting ({P.stage1_steps + P.stage2_steps} steps x batch {P.batch}, "
                     f"{BACKBONE.native.frames} frames) is ~{S.fmt_seconds(full.total_s)} of GPU time - run it with "
                     "`python -m lora_codec encode` on your own GPU")
    if SIZE_NOTE:
        lines.append(f"- {SIZE_NOTE}")
    lines += ["", f"<small>{c.note}</small>"]
    return "\n".join(lines)


CLIP_HINT = ("Any video file: mp4, mov, mkv, webm, avi, mpg, m2ts/mts, raw .h264/.hevc streams... "
             "The server reads its content (the name's extension does not matter).")
PREVIEW_FRAMES = 81  # a preview the browser cannot play as uploaded: at most this many frames, re-encoded


def clip_preview(path, request: gr.Request = None):
    """What the Preview player shows for an uploaded clip: the file itself when browsers play it
    (mp4/webm/ogg with a codec they decode, as Gradio checks it), else the first frames re-encoded
    as H.264 mp4 (m2ts, mkv, mov, raw .h264/.hevc, no extension...). Only a preview: the clip is
    coded from the uploaded file. A file that is not a video shows nothing here; the estimate
    above the Compress button says why."""
    from gradio import processing_utils

    from lora_codec.video import read_video, write_video

    if not path:
        return None
    p = Path(path)
    if p.suffix.lower() in (".mp4", ".webm", ".ogg") and processing_utils.video_is_playable(str(p)):
        return str(p)
    try:
        S.check_upload(p)
        clip = read_video(p, max_frames=PREVIEW_FRAMES, limits=LIMITS.video_limits())
    except LoraCodecError:
        return None
    wd = S.new_workdir("preview")
    _track_dir(request, wd)
    out = wd / "preview.mp4"
    write_video(out, clip.frames, Fraction(clip.fps).limit_denominator(1 << 20), crf=23)
    return str(out)


# ---------------------------------------------------------------------------------------------
# Compress


OUTPUT_KEYS = ("job", "status", "notes", "code_file", "code_text", "bytes_table", "original", "recon",
               "baseline", "baseline_file", "metrics", "summary")


def _status_line(p: dict, call: int, calls_est: int, t_start: float) -> str:
    stage = {1: "stage 1 (fit)", 2: "stage 2 (quantise + rate)"}.get(p.get("stage"), "")
    size = p.get("code_bytes")
    size_s = f"{size / 1000:.2f} kB if stopped now" if size else f"payload ~{p['est_payload_bytes'] / 1000:.2f} kB"
    return (f"**Fitting** step {p['step']} / {p['total']} - {stage} - loss {p['loss']:.4f} - {size_s} - "
            f"{time.perf_counter() - t_start:.0f} s elapsed - {CALL} {call}"
            + (f" of ~{calls_est}" if calls_est > 1 else ""))


def _run_job(job: dict, request, ui):
    """Fit a job to its target (in slices, one GPU call each), finish, compare. Yields UI dicts."""
    key = _session_key(request)
    keys = [key] + ([f"job:{job['job_id']}"] if job.get("job_id") else [])
    stop_file = Path(job["dir"]) / "STOP"
    stop_file.unlink(missing_ok=True)
    for k in keys:
        ACTIVE[k] = job["dir"]
    S.save_job(job)
    t_start = time.perf_counter()
    c = _costs()
    g = _geom(job)
    batch = int(job["settings"].get("batch") or D.batch)
    if job["settings"].get("target_kb") is not None:  # rate control fine-tunes briefly (for the estimate)
        fs = job["settings"].get("finetune_steps")
        job["finetune_steps"] = fs if fs is not None else max(5, int(job["target_steps"]) // 5)
    try:
        remaining = max(0, int(job["target_steps"]) - int(job.get("steps_done", 0)))
        per_step = c.fit_step(S.video_tokens(BACKBONE, g), batch) if c else 1.0
        # the longest call this visitor's allowance took (a refused call is retried shorter)
        job.setdefault("max_call_s", float(LIMITS.max_gpu_call_s))
        call_s, slice_s = S.plan_call_seconds(c, BACKBONE, g, batch, job["max_call_s"])
        calls_est = max(1, math.ceil(remaining * per_step / max(1.0, slice_s)))
        call = 0
        done = job.get("fit_done", False) and job["target_steps"] <= job.get("steps_done", 0)
        stopped = False

        def shorter(new_call_s: float) -> None:
            job["max_call_s"] = new_call_s
            S.save_job(job)

        def fit_call(max_call_s: float):
            cs, fit_s = S.plan_call_seconds(_costs(), BACKBONE, g, batch, max_call_s)
            return gpu_fit(job, fit_s, cs)

        while not done and not stopped:
            call += 1
            call_s = float(job["max_call_s"])
            first_step = True
            before = int(job.get("steps_done", 0))
            with model_lock():
                for p in S.iter_gpu_call(fit_call, call_s, on_shorter=shorter):
                    kind = p.get("kind")
                    if kind == "error":
                        raise _user_error(LoraCodecError(p["message"]))
                    if kind == "setup":
                        if call == 1:
                            COSTS.observe_fit(BACKBONE, g, batch, step_s=0, setup_s=p["setup_s"])
                        yield {ui["status"]: f"**Fitting** - {CALL} {call} started (step {p['step']} / {p['total']})"}
                    elif kind == "step":
                        if not first_step:  # the first step of a call carries warm-up
                            COSTS.observe_fit(BACKBONE, g, batch, step_s=p["step_s"])
                        first_step = False
                        job["steps_done"] = p["step"]
                        yield {ui["status"]: _status_line(p, call, calls_est, t_start)}
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
        yield {ui["status"]: ("**Stopped early** at step %d - " % job["steps_done"] if stopped else "**Fit done** - ")
               + "quantising, writing the code and decoding it as a receiver would "
               + f"(~{S.fmt_seconds(_finish_estimate(job))})..."}
    finally:
        for k in keys:
            ACTIVE.pop(k, None)
        stop_file.unlink(missing_ok=True)

    # finish (GPU): the code and its reconstruction
    need = _finish_estimate(job)
    with model_lock():
        out = S.gpu_call(lambda cs: gpu_finish(job, cs), S.call_duration(need, job.get("max_call_s")), need_s=need,
                         on_shorter=lambda cs: job.update(max_call_s=cs))
    if "error" in out:
        raise _user_error(LoraCodecError(out["error"]))
    COSTS.observe_decode(BACKBONE, g, out.get("decode_step_s"), out.get("decode_fixed_s"))
    yield {ui["status"]: "**Code written** - coding the same clip with x265 at the same size (CPU)..."}
    yield _results(job, out, stopped, ui)


def _results(job: dict, out: dict, stopped: bool, ui) -> dict:
    from lora_codec.baselines import encode_at_budget
    from lora_codec.metrics import evaluate
    from lora_codec.video import write_video

    wd = Path(job["dir"])
    data: bytes = out["code"]
    report = describe(data)
    name = job.get("name") or "clip"
    version = int(job.get("version", 0)) + 1
    job["version"] = version
    code_path = wd / f"{name}-{version}.vov"
    code_path.write_bytes(data)
    text = bitstream.to_text(data)
    rows, parts_sum = S.byte_table(report)
    if parts_sum != report["total_bytes"]:  # would be a bug in the accounting: say so, do not hide it
        gr.Warning(f"the byte table adds up to {parts_sum} bytes but the code is {report['total_bytes']}")
    fps = Fraction(*job["fps"])
    recon = out["frames"]
    with np.load(job["clip"]) as z:
        ref = np.ascontiguousarray(z["frames"])
    recon_path = wd / f"{name}-{version}-reconstruction.mp4"
    write_video(recon_path, recon, fps, crf=12)
    m_ours = evaluate(ref, recon)
    base = encode_at_budget(ref, fps, "x265", len(data))
    base_file = wd / f"{name}-{version}-x265-{base.bytes}B.mp4"
    base_file.write_bytes(base.data)
    base_view = wd / f"{name}-{version}-x265-view.mp4"
    write_video(base_view, base.frames, fps, crf=12)
    m_base = evaluate(ref, base.frames)
    base_note = f"CRF {base.crf}, mp4 file" if base.fits else (
        f"x265 cannot get this small: its smallest file (CRF {base.crf}) is {base.bytes} bytes")
    ours_note = ("tiny backbone: no visual knowledge, not a meaningful reconstruction" if TINY
                 else f"{report['sample_steps']} sampling steps")
    metrics = [S.metric_row("lora_codec", len(data), m_ours, ours_note),
               S.metric_row("x265 (PyAV)", base.bytes, m_base, base_note)]
    notes = list(job.get("notes", [])) + [n for n in out.get("notes", []) if n not in job.get("notes", [])]
    notes += [n for n in m_ours.get("notes", [])]
    if m_ours.get("unavailable"):
        notes.append("LPIPS / DISTS not shown: their weights are not on this machine (nothing is downloaded)")
    steps_done = int(job.get("steps_done", 0))
    summary = {
        "code_text": text,
        "total_bytes": report["total_bytes"],
        "parts": {r[0]: r[1] for r in rows[:-1]},
        "parts_sum": parts_sum,
        "kbytes_per_second": report["kbytes_per_second"],
        "bits_per_pixel": report["bits_per_pixel"],
        "fit_steps": steps_done,
        "stopped_early": bool(stopped),
        "geometry": {"frames": report["frames"], "height": report["height"], "width": report["width"],
                     "fps": report["fps"]},
        "model": report["model"],
        "metrics": {"lora_codec": {k: m_ours.get(k) for k in ("psnr_rgb", "psnr_y", "ms_ssim")},
                    "x265": {k: m_base.get(k) for k in ("psnr_rgb", "psnr_y", "ms_ssim")} | {
                        "bytes": base.bytes, "crf": base.crf, "fits": base.fits}},
        "timing_s": {"finish": out.get("finish_s"), "decode": out.get("decode_s")},
        "notes": notes,
    }
    head = ("**Stopped early** - the code is valid (the fit is anytime); *Keep improving* continues from the saved "
            "state." if stopped else "**Done.**")
    status = (f"{head} {report['total_bytes']} bytes ({report['kbytes_per_second']:.3g} kB/s, "
              f"{report['bits_per_pixel']:.4g} bits per pixel) after {steps_done} fit steps.")
    last = _plain({
        "status": status,
        "notes": "\n".join(f"- {n}" for n in notes) if notes else "",
        "code_file": str(code_path),
        "code_text": text,
        "bytes_table": rows,
        "original": job["original"],
        "recon": str(recon_path),
        "baseline": str(base_view),
        "baseline_file": str(base_file),
        "metrics": metrics,
        "summary": summary,
    })
    job["last"] = last
    S.save_job(job)  # a page reload shows this result again (job id in the browser)
    return {ui["job"]: job} | {ui[k]: v for k, v in last.items()}


def make_compress(ui):
    @_guarded
    def compress(video, caption, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, seed, sample_steps,
                 frames, batch, refine_steps, size=None, job=None, job_id=None, request: gr.Request = None):
        """Fit a code to the clip (stoppable, resumable), then show the code, its bytes, the
        reconstruction and x265 at the same size."""
        path = S.check_upload(video)
        caption = caption or ""
        if len(caption.encode("utf-8")) > LIMITS.max_caption_bytes:
            raise LimitError(f"the caption is longer than {LIMITS.max_caption_bytes} bytes")
        fit_steps = _int_in("fit steps", fit_steps, 1, LIMITS.max_fit_steps)
        sample_steps = _int_in("sampling steps", sample_steps, 1, LIMITS.max_sample_steps)
        batch = _int_in("batch", batch, 1, 16)
        seed = _int_in("seed", seed, 0, 2**31 - 1)
        refine_log2 = _int_in("refinement candidates (log2 N)", refine_log2 or 0, 0, REFINE_MAX_LOG2)
        settings = dict(model=BACKBONE.name, caption=caption, seed=seed, fit_steps=fit_steps,
                        sample_steps=sample_steps, batch=batch, **_rate_kwargs(rate_mode, target_kb))
        if refine_log2 > 0:
            if not HAS_REFINE:
                raise LimitError("this build of lora_codec has no refinement track yet; set N to off")
            settings["refine_n"] = 2 ** refine_log2
            rs = _int_in("refinement steps", refine_steps or 0, 0, 10000)
            if rs:
                settings["refine_steps"] = rs
        jid = S.check_job_id(job_id) if job_id else None  # from the browser (BrowserState) or an API client
        _not_running(jid)
        if isinstance(job, dict) and job.get("job_id") != jid:  # a new compress replaces the previous job
            _delete_job(job)
        if jid:  # kept across a page reload, under the browser's job id; expires by age
            wd = S.fresh_job_dir(jid)
        else:
            wd = S.new_workdir("job")
            _track_dir(request, wd)
        yield {ui["status"]: "**Reading the clip...**"}
        rec = S.prepare_clip(path, wd, BACKBONE, start_seconds=start_seconds, max_frames=frames, size=_size_arg(size))
        settings["size"] = list(rec["size"])  # every GPU call codes the stored clip at this size
        new = dict(rec)
        stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(path).stem)[:40] or "clip"
        new.update(dir=str(wd), state=str(wd / "fit_state.safetensors"), settings=settings,
                   target_steps=fit_steps, steps_done=0, fit_done=False, name=stem, version=0, job_id=jid)
        if TINY:
            new["notes"] = list(new["notes"]) + ["tiny backbone: random weights, no visual knowledge - the "
                                                 "reconstruction is not meaningful"]
        yield {ui["job"]: new, ui["original"]: rec["original"],
               ui["notes"]: "\n".join(f"- {n}" for n in new["notes"]),
               ui["status"]: "**Starting the fit...**"}
        yield from _run_job(new, request, ui)

    return compress


def make_keep_improving(ui):
    @_guarded
    def keep_improving(extra_steps, job, job_id=None, request: gr.Request = None):
        """More fitting from the saved state (the fit is anytime), then a new code. `job_id`: the
        browser's job id (kept across a page reload), to continue a fit made in an earlier session."""
        if job_id:
            jid = S.check_job_id(job_id)
            if not (isinstance(job, dict) and job.get("job_id") == jid):
                job = S.load_job(jid)
            if job is None:
                raise LimitError(_UNKNOWN_JOB)
            _not_running(jid)
        if not isinstance(job, dict) or not Path(job.get("state", "")).exists():
            raise gr.Error("compress a clip first (there is no fit to continue in this session)",
                           print_exception=False)
        extra = _int_in("extra steps", extra_steps, 1, LIMITS.max_fit_steps)
        job = dict(job)
        job["steps_done"] = S.state_step(job["state"])  # the saved state is the truth (a call may have failed)
        job["target_steps"] = job["steps_done"] + extra
        if int(job["target_steps"]) > LIMITS.max_fit_steps * 4:
            raise LimitError("this fit is already at the app's limit; continue it with the CLI (--resume)")
        job["fit_done"] = False
        yield {ui["status"]: f"**Keep improving** - {extra} more steps from step {job.get('steps_done', 0)}..."}
        yield from _run_job(job, request, ui)

    return keep_improving


_UNKNOWN_JOB = ("this browser's previous fit is unknown on this server or has expired (fits are kept "
                f"{S.JOB_MAX_AGE_S / 3600:g} h after their last use, and not across a server restart); "
                "compress the clip again to start a fresh fit")


def _not_running(jid: str | None) -> None:
    if jid and ACTIVE.get(f"job:{jid}"):
        raise LimitError("this browser's fit is already running (in another tab?): wait for it, or stop it first")


@_guarded
def stop(job_id=None, request: gr.Request = None) -> str:
    """Stop the running fit after its current step; the code is then written from the state so far."""
    wd = ACTIVE.get(f"job:{S.check_job_id(job_id)}") if job_id else None
    wd = wd or ACTIVE.get(_session_key(request))
    if not wd:
        return "Nothing is fitting in this session."
    (Path(wd) / "STOP").write_text("stop")
    return "**Stopping** after the current step..."


def restore_job(job_id):
    """On page load: the browser's job id (a new one if it has none), and its saved fit and last
    result if the server still has them (a page reload keeps the fit)."""
    keys = [k for k in OUTPUT_KEYS if k != "job"]
    blank = {k: gr.update() for k in keys}
    try:
        jid = S.check_job_id(job_id) if job_id else None
    except LimitError:
        jid = None
    job = S.load_job(jid) if jid else None
    if job is None:
        if jid:
            blank["status"] = f"*{_UNKNOWN_JOB[0].upper()}{_UNKNOWN_JOB[1:]}.*"
        return [S.new_job_id(), None] + [blank[k] for k in keys]
    out = dict(blank)
    last = job.get("last") or {}
    for k in keys:
        if k in last:
            out[k] = last[k]
    try:
        step = S.state_step(job["state"]) if Path(job["state"]).exists() else 0
    except Exception:
        step = int(job.get("steps_done", 0))
    if last:
        out["status"] = f"*Restored after a page reload.* {last.get('status', '')}"
    else:
        out["original"] = job.get("original")
        out["status"] = (f"*Restored after a page reload:* the fit is saved at step {step} (no code written yet); "
                         "*Keep improving* continues it.")
    if ACTIVE.get(f"job:{jid}"):
        out["status"] = f"**A fit of this job is still running** (saved at step {step}). " + out["status"]
    return [jid, job] + [out[k] for k in keys]


# ---------------------------------------------------------------------------------------------
# Decode


def _read_code_input(code_file, code_text) -> bytes:
    if code_file:
        p = Path(code_file)
        if not p.is_file():
            raise CodeInputError("the uploaded code file is missing on the server (upload it again)")
        size = p.stat().st_size
        if size > LIMITS.max_code_kb * 1000 * 2:
            raise LimitError(f"the file is {size / 1e6:.1f} MB - too large to be a code here "
                             f"(codes up to {LIMITS.max_code_kb} kB)")
        return bitstream.load_code_bytes(p.read_bytes())
    if code_text and code_text.strip():
        if len(code_text) > LIMITS.max_code_kb * 1000 * 2:
            raise LimitError("the pasted text is too long to be a code here")
        return bitstream.load_code_bytes(code_text.strip())
    raise CodeInputError("no code: upload a code file or paste its text form (vov1:...)")


class CodeInputError(LoraCodecError):
    pass


def _code_markdown(info: dict) -> str:
    lines = [
        f"**{info['total_bytes']} bytes** - model `{info['model']}` - {info['frames']} frames "
        f"{info['width']}x{info['height']} at {info['fps']:.3g} fps ({info['seconds']:.2f} s) - "
        f"{info['kbytes_per_second']:.3g} kB/s, {info['bits_per_pixel']:.4g} bits per pixel",
        f"- caption: *{info['caption'] or '(empty)'}*",
        f"- sampling steps stored: {info['sample_steps']}; adapter: rank {info['rank']}, theta {info['theta_length']}",
    ]
    if info.get("refine_n"):
        first, stop_ = info.get("refine_indexed") or (0, 0)
        lines.append(f"- refinement track: N = {info['refine_n']} candidates, recorded on {info.get('refine_steps')} "
                     f"sampling steps, {stop_ - first} indexed steps, {info.get('refine_bits')} bits "
                     f"({info.get('refine_bytes')} bytes in the file)")
    else:
        lines.append("- no refinement track")
    if info["model"] != BACKBONE.name:
        lines.append(f"- **this server runs `{BACKBONE.name}`: it cannot decode a `{info['model']}` code**")
    return "\n".join(lines)


@_guarded
def describe_code(code_file, code_text):
    """What a code holds (no model needed). A code that does not parse is reported in the text (this
    runs while the user types or pastes), not as an error."""
    if not code_file and not (code_text or "").strip():
        return "", {}, gr.update()
    try:
        info = describe(_read_code_input(code_file, code_text))
    except LoraCodecError as exc:
        return f"**Not a valid code:** {' '.join(str(exc).split())}", {"error": str(exc)}, gr.update()
    k = gr.update()
    if info.get("refine_indexed"):
        count = info["refine_indexed"][1] - info["refine_indexed"][0]
        k = gr.update(maximum=max(1, count), value=min(count, max(1, count // 2)))
    return _code_markdown(info), _plain(info), k


def _refine_arg(mode: str, k):
    if not DECODE_HAS_REFINE:
        return None
    if mode == "all":
        return "all"
    if mode == "none":
        return "none"
    return _int_in("refinement steps to replay", k, 0, 100000)


@_guarded
def decode_code(code_file, code_text, steps, refine_mode, refine_k, caption, request: gr.Request):
    """Decode a code (file or text) to a video; optionally other sampling steps, part of the
    refinement track, or another caption (editing)."""
    from lora_codec.video import write_video

    data = _read_code_input(code_file, code_text)
    info = describe(data)
    steps = _int_in("sampling steps", steps or 0, 0, LIMITS.max_sample_steps) or None
    caption = caption if (caption or "").strip() else None
    if caption is not None and len(caption.encode("utf-8")) > LIMITS.max_caption_bytes:
        raise LimitError(f"the caption is longer than {LIMITS.max_caption_bytes} bytes")
    refine = _refine_arg(refine_mode, refine_k)
    track_steps = info.get("refine_steps")
    if track_steps and refine != "none" and steps is not None and steps != track_steps:
        raise LimitError(f"this code's refinement track is recorded on {track_steps} sampling steps: set the steps "
                         f"to 0 (as stored) or {track_steps}, or replay none of the track to use other steps")
    if isinstance(refine, int) and refine > 0 and not info.get("refine_n"):
        raise LimitError("this code has no refinement track: choose 'all' or 'none'")
    if isinstance(refine, int) and info.get("refine_indexed"):
        count = info["refine_indexed"][1] - info["refine_indexed"][0]
        if refine > count:
            raise LimitError(f"the refinement track has {count} indexed steps; K must be at most {count}")
    need = _decode_estimate(data, steps)
    with model_lock():
        out = S.gpu_call(lambda cs: gpu_decode(data, steps, caption, refine, cs), S.call_duration(need), need_s=need,
                         saved=False)
    if "error" in out:
        raise _user_error(LoraCodecError(out["error"]))
    g = Geometry(info["frames"], info["height"], info["width"])
    COSTS.observe_decode(BACKBONE, g, out.get("decode_step_s"), out.get("decode_fixed_s"))
    wd = S.new_workdir("decode")
    _track_dir(request, wd)
    path = wd / "decoded.mp4"
    write_video(path, out["frames"], Fraction(*out["fps"]), crf=12)
    rep = out["report"]
    msg = (f"**Decoded** {rep['frames']} frames {rep['width']}x{rep['height']} with {rep.get('decode_steps')} steps "
           f"in {out['decode_s']:.1f} s" + (f", caption *{rep.get('decode_caption')}*" if caption else "") + ".")
    if rep.get("model") == "tiny":
        msg += " (tiny backbone: no visual knowledge - the frames are not a meaningful reconstruction.)"
    return str(path), str(path), msg, _plain(rep)


# ---------------------------------------------------------------------------------------------
# The page


INTRO = """# lora_codec - a video as one small adapter

A clip is encoded as **one quantised vector** for a UniLoRA adapter on a frozen video diffusion model
(Wan2.1-T2V-1.3B); decoding samples the adapted model from a stored noise seed. A code is about 1-3 kB (the
CPU `small` model, 9 frames at 128x80) to 32 kB (Wan, 81 frames at 832x480). Method: *Compression as Adaptation* (He, Guo et al., 2026).
"""

CSS = """
.lc-banner {border-left: 4px solid var(--color-accent); padding: 6px 12px; background: var(--block-background-fill);}
.lc-status {min-height: 2.2em; padding: 4px 10px; border-radius: 6px; background: var(--block-background-fill);}
"""


def build_demo() -> gr.Blocks:
    frames_min, frames_max = FRAME_CHOICES[0], FRAME_CHOICES[-1]
    with gr.Blocks(title="lora_codec", delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(S.describe_backbone(BACKBONE, LOAD_ERROR), elem_classes=["lc-banner"], elem_id="backbone-banner")
        job = gr.State(None, time_to_live=S.JOB_MAX_AGE_S, delete_callback=_delete_job)
        # the browser's job id (localStorage, encrypted): the fit and its last result survive a reload
        job_id = gr.BrowserState(None, storage_key="lora_codec_job_id",
                                 secret=os.environ.get("LORA_CODEC_APP_SECRET") or None)
        with gr.Tabs() as tabs:
            with gr.Tab("Compress", id="compress"):
                with gr.Row():
                    with gr.Column(scale=1):
                        # any file (no type filter: raw .h264/.hevc, m2ts, no extension...); the server probes
                        # the content. /encode's first parameter stays `video` (a file, as before).
                        video = gr.File(label="Clip", file_count="single", type="filepath", elem_id="clip-in",
                                        height=120)
                        gr.Markdown(CLIP_HINT, elem_id="clip-hint")
                        clip_view = gr.Video(label="Preview", interactive=False, elem_id="clip-preview",
                                             height=260)
                        examples_slot = gr.Column()
                        gr.Markdown(EXAMPLE_CREDIT)
                    with gr.Column(scale=1):
                        caption = gr.Textbox(label="Caption", lines=2, max_length=LIMITS.max_caption_bytes,
                                             placeholder="what the clip shows (stored in the code)",
                                             elem_id="caption")
                        with gr.Row():
                            start = gr.Number(0.0, label="Start time (s)", minimum=0, step=0.5, precision=2,
                                              info="where the coded frames begin")
                            frames = gr.Slider(frames_min, frames_max, value=DEFAULT_FRAMES, step=4,
                                               label="Frames to code",
                                               info=f"4k+1, at most the model's native {frames_max}")
                        size_choices, size_default = _size_choices()
                        size = gr.Dropdown(size_choices, value=size_default, label="Size (width x height)",
                                           elem_id="size",
                                           info=("portrait clips are coded at the transposed size. " + SIZE_NOTE).strip(),
                                           interactive=len(size_choices) > 1)
                        with gr.Row():
                            rate_mode = gr.Dropdown(RATE_CHOICES, value="balanced", label="Size",
                                                    info="a size target (rate control) or a preset rate weight",
                                                    elem_id="rate-mode")
                            target_kb = gr.Number(DEFAULT_TARGET_KB, label="Size target (kB = 1000 bytes)",
                                                  minimum=0.05, step=0.1, info="used when Size is 'size target'")
                        with gr.Row():
                            fit_steps = gr.Slider(10, 3000 if WAN else 1000, value=DEFAULT_FIT_STEPS, step=1,
                                                  elem_id="fit-steps", label="Fit budget (optimiser steps)",
                                                  info="anytime: stop early or keep improving later")
                            refine = gr.Slider(0, REFINE_MAX_LOG2, value=0, step=1,
                                               label="Refinement candidates N = 2^k (0 = off)",
                                               info=("inference-time scaling: log2 N bits per sampling step"
                                                     if HAS_REFINE else "not available in this build yet"),
                                               interactive=HAS_REFINE)
                        with gr.Accordion("Advanced", open=False):
                            with gr.Row():
                                seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                                sample_steps = gr.Slider(1, 100, value=D.sample_steps, step=1, elem_id="sample-steps",
                                                         label="Sampling steps stored in the code")
                            with gr.Row():
                                batch = gr.Slider(1, 8, value=DEFAULT_BATCH, step=1, label="Fit batch")
                                refine_steps = gr.Number(0, label="Refinement schedule steps (0 = sampling steps)",
                                                         precision=0, minimum=0, interactive=HAS_REFINE)
                with examples_slot:
                    gr.Examples(EXAMPLES, inputs=[video, caption, start], label="Example clip (click to use)",
                                cache_examples=False, elem_id="examples")
                estimate_md = gr.Markdown("*estimating...*", label="estimate", elem_id="estimate")
                with gr.Row(equal_height=True):
                    go = gr.Button("Compress", variant="primary", elem_id="compress-btn", scale=2)
                    stop_btn = gr.Button("Stop early", variant="stop", elem_id="stop-btn", scale=1)
                    extra = gr.Number(DEFAULT_FIT_STEPS, label="More steps (keep improving)", precision=0, minimum=1,
                                      scale=1, elem_id="more-steps")
                    more_btn = gr.Button("Keep improving", elem_id="more-btn", scale=1)
                status = gr.Markdown("", label="status", elem_id="status", elem_classes=["lc-status"])
                notes = gr.Markdown("", label="notes", elem_id="notes")
                with gr.Row():
                    with gr.Column(scale=1):
                        code_file = gr.File(label="Code file (download)", elem_id="code-file", interactive=False)
                        code_text = gr.Textbox(label="Code as text (copy and paste it anywhere)", lines=3,
                                               max_lines=6, buttons=["copy"], elem_id="code-text",
                                               interactive=False)
                    with gr.Column(scale=2):
                        bytes_table = gr.DataFrame(headers=S.BYTE_HEADERS, label="Where the bytes went",
                                                   interactive=False, elem_id="bytes-table", wrap=True,
                                                   column_widths=["17%", "9%", "9%", "9%", "13%", "43%"])
                with gr.Row():
                    original = gr.Video(label="Original (as coded)", interactive=False, height=240,
                                        elem_id="original")
                    recon = gr.Video(label="lora_codec reconstruction", interactive=False, height=240,
                                     buttons=["download"], elem_id="recon")
                    baseline = gr.Video(label="x265 at the same bytes (shown as H.264)", interactive=False,
                                        height=240, elem_id="baseline")
                metrics = gr.DataFrame(headers=S.METRIC_HEADERS, label="Quality at equal size",
                                       interactive=False, elem_id="metrics", wrap=True)
                with gr.Accordion("The x265 file and details", open=False):
                    baseline_file = gr.File(label="x265 file (HEVC mp4; most browsers cannot play it)",
                                            interactive=False)
                    summary = gr.JSON(label="Summary (JSON)")
                    send = gr.Button("Open this code in the Decode tab")
            with gr.Tab("Decode", id="decode"):
                with gr.Row():
                    with gr.Column(scale=1):
                        in_file = gr.File(label="Code file (.vov)", file_types=[".vov", ".txt", ".bin"],
                                          elem_id="decode-file")
                        in_text = gr.Textbox(label="...or paste the text form (vov1:...)", lines=3,
                                             elem_id="decode-text")
                        code_info = gr.Markdown("", label="code info", elem_id="code-info")
                        d_steps = gr.Slider(0, 100, value=0, step=1, label="Sampling steps (0 = as stored)")
                        with gr.Row():
                            d_refine_mode = gr.Radio(["all", "none", "first K steps"], value="all",
                                                     label="Refinement track to replay",
                                                     interactive=DECODE_HAS_REFINE,
                                                     info=None if DECODE_HAS_REFINE else
                                                     "not available in this build yet")
                            d_refine_k = gr.Slider(0, 100, value=10, step=1, label="K",
                                                   interactive=DECODE_HAS_REFINE)
                        d_caption = gr.Textbox(label="Decode with another caption (editing; empty = the stored one)",
                                               lines=2, max_length=LIMITS.max_caption_bytes, elem_id="decode-caption")
                        d_go = gr.Button("Decode", variant="primary", elem_id="decode-btn")
                    with gr.Column(scale=2):
                        d_status = gr.Markdown("", label="decode status", elem_id="decode-status")
                        d_video = gr.Video(label="Decoded video", interactive=False, buttons=["download"],
                                           elem_id="decoded", height=320)
                        d_file = gr.File(label="Decoded video (mp4 download)", interactive=False)
                        with gr.Accordion("Details (JSON)", open=False):
                            d_info = gr.JSON(label="Code")
                            d_report = gr.JSON(label="Decode report")

        ui = dict(job=job, status=status, notes=notes, code_file=code_file, code_text=code_text,
                  bytes_table=bytes_table, original=original, recon=recon, baseline=baseline,
                  baseline_file=baseline_file, metrics=metrics, summary=summary)
        outputs = [ui[k] for k in OUTPUT_KEYS]

        est_inputs = [video, start, rate_mode, target_kb, fit_steps, refine, sample_steps, frames, batch, refine_steps,
                      size]
        gr.on([demo.load] + [comp.change for comp in est_inputs], estimate, est_inputs, estimate_md,
              api_name="estimate", show_progress="hidden", concurrency_id="light", concurrency_limit=8,
              trigger_mode="always_last")

        video.change(clip_preview, video, clip_view, api_visibility="private", show_progress="minimal",
                     concurrency_id="light", concurrency_limit=8, trigger_mode="always_last")

        go.click(make_compress(ui),
                 [video, caption, start, rate_mode, target_kb, fit_steps, refine, seed, sample_steps, frames, batch,
                  refine_steps, size, job, job_id],
                 outputs, api_name="encode", concurrency_id="model", concurrency_limit=CONCURRENCY,
                 show_progress="minimal", show_progress_on=[status])
        stop_btn.click(stop, job_id, status, api_name="stop", queue=False)
        more_btn.click(make_keep_improving(ui), [extra, job, job_id], outputs, api_name="keep_improving",
                       concurrency_id="model", concurrency_limit=CONCURRENCY, show_progress="minimal",
                       show_progress_on=[status])
        send.click(lambda text: (text, None, gr.Tabs(selected="decode")), code_text, [in_text, in_file, tabs],
                   api_visibility="private", queue=False)

        gr.on([in_file.change, in_text.change], describe_code, [in_file, in_text], [code_info, d_info, d_refine_k],
              api_name="describe_code", show_progress="hidden", concurrency_id="light", concurrency_limit=8,
              trigger_mode="always_last")
        d_go.click(decode_code, [in_file, in_text, d_steps, d_refine_mode, d_refine_k, d_caption],
                   [d_video, d_file, d_status, d_report], api_name="decode", concurrency_id="model",
                   concurrency_limit=CONCURRENCY)
        demo.load(restore_job, job_id, [job_id] + outputs, api_visibility="private", queue=False)
        demo.unload(_end_session)
    # room for a burst of requests (they wait their turn; a full queue rejects them)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=int(os.environ.get("LORA_CODEC_APP_QUEUE", "64")))
    return demo


demo = build_demo()


def launch_kwargs() -> dict:
    return dict(max_file_size=f"{LIMITS.max_upload_mb}mb", allowed_paths=[str(EXAMPLES_DIR)], css=CSS,
                ssr_mode=False, show_error=True, footer_links=["api", "gradio"])


def serve(port: int | None = None, host: str = "127.0.0.1"):
    """Launch in this process without blocking (tests); returns the base URL."""
    if getattr(demo, "_lc_url", None):
        return demo._lc_url
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    demo._lc_url = demo.local_url.rstrip("/") + "/"
    return demo._lc_url


if __name__ == "__main__":
    demo.launch(**launch_kwargs())
