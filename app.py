"""lora_codec in the browser: the Hugging Face Space entry point (Gradio, ZeroGPU-ready).

A thin UI: the page's layout and its callbacks. The work is in the package, `lora_codec/app/`
(one concern per module: `runtime` the model, `gpu` the GPU functions, `runner` jobs running on the
server independently of the page, `jobs` compress jobs in slices, `results` what a finished job shows,
`decoding` the Decode tab's work, `forms` input checks, `uploads` what is said at upload, `text` the
page's sentences) over the library API (`lora_codec.codec`).
Compress: a clip (or a picture; a long clip as segments) -> a code (file and text form), where its
bytes went, the reconstruction, and x265 (a picture codec for a picture) at the same number of bytes.
Decode: any code -> video, with another caption, a long clip's segment range, or merged with another
code if wanted (editing).

ZeroGPU: the backbone is loaded at import (`lora_codec.app.runtime`); every function that runs the
model is decorated with `spaces.GPU` (`lora_codec.app.gpu`). Off ZeroGPU the decorator is a no-op,
so the same file runs on a CPU with the tiny or small backbone (`python app.py`).

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

import contextlib  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from lora_codec import app_support as S  # noqa: E402
from lora_codec.app import decoding, jobs, uploads  # noqa: E402
from lora_codec.app.jobs import BUSY, EMPTY, READY  # noqa: E402
from lora_codec.app import forms as F  # noqa: E402
from lora_codec.app import text as T  # noqa: E402
from lora_codec.app.jobs import OUTPUT_KEYS  # noqa: E402,F401
from lora_codec.app.runtime import (BACKBONE, CONCURRENCY, COSTS, DECODE_HAS_REFINE, DEFAULT_BATCH,  # noqa: E402,F401
                                    DEFAULT_FIT_STEPS, DEFAULT_FRAMES, DEFAULT_TARGET_KB, FRAME_CHOICES, HAS_REFINE,
                                    LOAD_ERROR, REFINE_MAX_LOG2, TINY, WAN, D, model_lock)
from lora_codec.app.uploads import PREVIEW_FRAMES  # noqa: E402,F401
from lora_codec.errors import LoraCodecError  # noqa: E402

log = logging.getLogger("lora_codec.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = [
    [str(EXAMPLES_DIR / "bigbuckbunny_2s.mp4"),
     "A big grey cartoon rabbit crawls out of his burrow under a tree on a grassy hill and stretches, "
     "3D animation, soft morning light", 0.0],
]
LIMITS = S.LIMITS

# ---------------------------------------------------------------------------------------------
# errors as messages on the page


def _user_error(exc: BaseException) -> gr.Error:
    return gr.Error(T.plain(str(exc)) or type(exc).__name__, print_exception=False)


def _internal_error(exc: BaseException) -> gr.Error:
    log.exception("internal error")
    first = " ".join(str(exc).split())[:200]
    return gr.Error(f"internal error ({type(exc).__name__}: {first}). This is a bug in the app.",
                    print_exception=False)


def _as_gr_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, LoraCodecError) and not getattr(exc, "internal", False):
        return _user_error(exc)
    if isinstance(exc, LoraCodecError):  # a job's internal error, already logged where it happened
        return gr.Error(str(exc), print_exception=False)
    return _internal_error(exc)


@contextlib.contextmanager
def _errors_as_messages():
    """LoraCodecError -> a one-line gr.Error in the user's words; anything else -> a short 'internal error'."""
    try:
        yield
    except Exception as exc:
        raise _as_gr_error(exc) from None


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


def _session_key(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "anonymous") if request is not None else "anonymous"


def _new_dir(request, prefix: str):
    """A folder for this page session's files (deleted when the session ends)."""
    def make():
        wd = S.new_workdir(prefix)
        jobs.track_dir(_session_key(request), wd)
        return wd
    return make


def _end_session(request: gr.Request) -> None:
    jobs.end_session(_session_key(request))


def _untie_from_page_event() -> None:
    """In a job's thread: forget the page event that started it (its request stays, so that ZeroGPU
    still counts the visitor's quota): the fit must not end when that page goes away."""
    from gradio.context import LocalContext

    LocalContext.event_id.set(None)
    LocalContext.progress.set(None)


jobs.RUNNER.on_thread_start = _untie_from_page_event


# ---------------------------------------------------------------------------------------------
# callbacks (their parameter names are the API's)


@_guarded
def estimate(video, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, sample_steps, frames, batch,
             refine_steps=0, size=None, segments=1, caption=None) -> str:
    """Markdown: what a compress with these settings will cost, before it starts (per segment for a
    long clip; a size target that cannot be met is said here, before any work)."""
    return T.estimate_markdown(video, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, sample_steps,
                               frames, batch, refine_steps, size, segments, caption)


def clip_preview(path, request: gr.Request = None):
    """The Preview player's video for an uploaded clip (`uploads.clip_preview`)."""
    from gradio import processing_utils

    return uploads.clip_preview(path, _new_dir(request, "preview"), playable=processing_utils.video_is_playable)


def _controls(state: str, job=None) -> list:
    """[Compress, Stop early, More steps, Keep improving, the hint]: what can act now, and why not."""
    resume = isinstance(job, dict) and jobs.interrupted(job)
    long_clip = isinstance(job, dict) and int(job.get("segments") or 1) > 1 and not resume
    more = state == READY and not long_clip
    return [gr.update(interactive=state != BUSY), gr.update(interactive=state == BUSY),
            gr.update(interactive=more and not resume), gr.update(interactive=more),
            T.actions_hint(state, job)]


def _state_of(job, job_id, request) -> str:
    jid = job_id if isinstance(job_id, str) and S.JOB_ID_RE.fullmatch(job_id) else None
    if jobs.RUNNER.active(jobs.run_key(jid, _session_key(request))) or (
            jid and jobs.RUNNER.active(jobs.run_key(None, _session_key(request)))):
        return BUSY
    ok = isinstance(job, dict) and job.get("dir") and Path(job["dir"]).is_dir()
    return READY if ok else EMPTY


def controls_now(job, job_id, request: gr.Request = None) -> list:
    return _controls(_state_of(job, job_id, request), job)


def controls_busy() -> list:
    return _controls(BUSY)


def ensure_job_id(job_id):
    """The browser's job id, made when it first compresses (none before: no phantom fit)."""
    return job_id if isinstance(job_id, str) and S.JOB_ID_RE.fullmatch(job_id) else S.new_job_id()


NO_JOB = "none"  # the browser's job id when its compress made no job (the browser keeps only non-empty values)


def settle_job_id(job_id):
    """After a compress: keep the id only if the server holds a job under it, so that a reload after a
    compress that failed before making its job says nothing about a 'previous fit'."""
    ok = isinstance(job_id, str) and S.JOB_ID_RE.fullmatch(job_id) and S.job_dir(job_id).is_dir()
    return job_id if ok else NO_JOB


def _stream(ui, fields_iter, status, *, what: str, controls: list | None = None, job=None, clear: dict | None = None):
    """Follow a job's fields onto components. A failure is written into the status area (it stays
    there) and raised as a message; `controls` (button components) get the job's `controls`.
    `clear` (a new compress: `jobs.cleared()`, what its first update empties): a failure's update
    empties again those of these outputs that the job has not filled since, in the same update as
    the error, so that the page never shows an error next to the previous run's results."""
    restate = dict(clear or {})
    try:
        for n, fields in enumerate(fields_iter):
            for k in fields if n else ():  # filled by the job after its clearing update: keep it
                restate.pop(k, None)
            out = {ui[k]: v for k, v in fields.items() if k in ui}
            if controls is not None and "controls" in fields:
                out.update(zip(controls, _controls(fields["controls"], fields.get("job", job))))
            if out:
                yield out
    except Exception as exc:
        err = _as_gr_error(exc)
        upd = {ui[k]: v for k, v in restate.items() if k in ui}
        upd[status] = T.error_status(err.message, what=what)
        if controls is not None:
            upd.update(zip(controls, _controls(READY if isinstance(job, dict) else EMPTY, job)))
        yield upd
        raise err from None


PICTURES = (("original", "original_image"), ("recon", "recon_image"), ("baseline", "baseline_image"))


def show_pictures(job):
    """Whenever the job changes (a compress, a reload): a picture's code is shown as pictures - the
    three picture components visible with the job's pictures, the three videos hidden; a video's the
    other way."""
    pics = jobs.pictures(job)
    if pics is None:
        return [gr.update(visible=True) for _ in PICTURES] + [gr.update(value=None, visible=False) for _ in PICTURES]
    return [gr.update(visible=False) for _ in PICTURES] + [gr.update(value=pics[img], visible=True)
                                                           for _vid, img in PICTURES]


def make_compress(ui):
    def compress(video, caption, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, seed, sample_steps,
                 frames, batch, refine_steps, size=None, job=None, job_id=None, segments=1,
                 request: gr.Request = None):
        """Fit a code to the clip (on the server: stoppable, resumable, kept across a page reload),
        then show the code, its bytes, the reconstruction and x265 at the same size (a picture: a
        picture codec). `segments` > 1: that many segments of a long clip in one code."""
        fields = jobs.compress(video, caption, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, seed,
                               sample_steps, frames, batch, refine_steps, size, job, job_id, segments,
                               session=_session_key(request))
        yield from _stream(ui, fields, ui["status"], what="Could not compress", clear=jobs.cleared())

    return compress


def make_keep_improving(ui):
    def keep_improving(extra_steps, job, job_id=None, request: gr.Request = None):
        """More fitting from the saved state (the fit is anytime), then a new code; an interrupted fit
        first completes its original budget. `job_id`: the browser's job id (kept across a reload)."""
        fields = jobs.keep_improving(extra_steps, job, job_id, session=_session_key(request))
        yield from _stream(ui, fields, ui["status"], what="Could not keep improving")

    return keep_improving


def make_attach(ui, controls):
    def attach(job_id, request: gr.Request = None):
        """On page load: re-attach to this browser's running fit (live progress), or show what the
        server kept of it."""
        yield from _stream(ui, jobs.attach(job_id, session=_session_key(request)), ui["status"], what="The fit failed",
                           controls=controls)

    return attach


@_guarded
def stop(job_id=None, request: gr.Request = None) -> str:
    """Stop early: cancels a fit that is still waiting; a running fit stops after its current step and
    its code is written from the state so far."""
    return jobs.stop(job_id, session=_session_key(request))


def restore_job(job_id):
    """The page-load view of a browser's job without following it: [job id, job, output values...]
    (what `attach` shows first; for tests and scripts)."""
    fields = {}
    for f in jobs.attach(job_id):
        fields.update(f)
        break
    return [job_id if fields.get("job") else None, fields.get("job")] + [
        fields.get(k, gr.update()) for k in OUTPUT_KEYS if k != "job"]


def kept_settings(job, video, caption, start_seconds, frames, size, rate_mode, target_kb, seed, sample_steps, batch,
                  refine_log2):
    form = dict(caption=caption, start_seconds=start_seconds, frames=frames, size=size, rate_mode=rate_mode,
                target_kb=target_kb, seed=seed, sample_steps=sample_steps, batch=batch, refine_log2=refine_log2)
    return T.kept_settings(job, form, Path(video).name if video else None)


def size_controls(size_by):
    target = size_by == F.RATE_TARGET
    return gr.update(visible=target), gr.update(visible=not target)


def preset_weight(preset):
    return F.PRESETS.get(preset, F.PRESETS["balanced"])[1]


def clip_check(video, start_seconds, frames, size, segments=1):
    return uploads.clip_check(video, start_seconds, frames, size, segments) if video else T.CLIP_HINT


@_guarded
def describe_code(code_file, code_text):
    """What a code holds (no model needed); a code that does not parse is reported in the text."""
    md, info, track = decoding.describe_code(code_file, code_text)
    k = gr.update(maximum=max(1, track["count"]), value=min(track["count"], max(1, track["count"] // 2))) \
        if track["track"] else gr.update()
    return md, info, k


def decode_controls(code_file, code_text):
    """The Decode tab's controls reflect the code: the refinement choice off (with the reason) for a
    code without a track; the segment range only for a long clip's code."""
    _md, _info, track = decoding.describe_code(code_file, code_text)
    n = track["segments"]
    seg = gr.update(visible=n > 1, label=f"Segments to decode (this code has {n}; e.g. 2-3; empty = all)")
    if not track["valid"]:
        return (gr.update(interactive=False, info="enter a code first"), gr.update(interactive=False),
                gr.update(info="0 = as stored in the code"), seg)
    if not track["track"]:
        return (gr.update(value="all", interactive=False, info="this code has no refinement track"),
                gr.update(interactive=False, visible=False),
                gr.update(info="0 = as stored in the code"), seg)
    return (gr.update(interactive=R_DECODE_REFINE, info=f"the track covers {track['count']} of its "
                      f"{track['steps']} sampling steps"),
            gr.update(interactive=R_DECODE_REFINE, visible=True, maximum=max(1, track["count"])),
            gr.update(info=f"0 = as stored; replaying the track needs its {track['steps']} steps"), seg)


R_DECODE_REFINE = DECODE_HAS_REFINE


def remember_code(code_file, code_text):
    """The Decode tab's code as text (a file's too), kept in the browser so that it survives a reload."""
    from lora_codec import bitstream

    try:
        data = F.read_code_input(code_file, code_text)
    except LoraCodecError:
        return (code_text or "")[:200_000]
    text = bitstream.to_text(data)
    return text if len(text) <= 200_000 else ""


def open_page(request: gr.Request = None):
    """On page load: a share link (`?code=vov1:...`) opens the Decode tab (LOAD_CODE_JS fills in its
    code; without a link, the code the Decode tab had before the reload)."""
    try:
        code = request.query_params.get("code") if request is not None else None
    except Exception:
        code = None
    if code:
        return gr.Tabs(selected="decode"), T.SHARED_CODE
    return gr.update(), gr.update()


DECODE_KEY = "lora_codec_decode_code"
SAVE_CODE_JS = f"""(text) => {{ try {{ localStorage.setItem({DECODE_KEY!r}, text || ""); }} catch (e) {{}} }}"""
LOAD_CODE_JS = f"""() => {{
  const shared = new URLSearchParams(window.location.search).get("code");
  if (shared) return shared.trim();
  try {{ return localStorage.getItem({DECODE_KEY!r}) || ""; }} catch (e) {{ return ""; }}
}}"""


def decode_code(code_file, code_text, steps, refine_mode, refine_k, caption, segments=None, merge_file=None,
                merge_weights=None, request: gr.Request = None):
    """Decode a code (file or text) to a video; optionally other sampling steps, part of the
    refinement track, another caption (editing), a long clip's segments ('2-3'), or merged with
    another code (editing: the updates add, `merge_weights` '0.5, 0.5', this code's first). The
    status says what was used."""
    yield None, None, "**Decoding...**", None
    try:
        path, msg, rep = decoding.decode_code(code_file, code_text, steps, refine_mode, refine_k, caption,
                                              _new_dir(request, "decode")(), segments, merge_file, merge_weights)
    except Exception as exc:
        err = _as_gr_error(exc)
        yield None, None, T.error_status(err.message, what="Could not decode"), None
        raise err from None
    yield path, path, msg, rep


def result_actions(code_text):
    """Open in Decode and the share link exist only with a code; a code too long for a link says so."""
    has = bool(code_text)
    fits = has and len(code_text) <= T.SHARE_MAX_CHARS
    return gr.update(interactive=has), gr.update(visible=fits), T.share_note(code_text)


SHARE_JS = f"""(code) => {{
  if (!code) return "";
  if (code.length > {T.SHARE_MAX_CHARS}) return "";
  const safe = /^vov1:[A-Za-z0-9_=-]*$/.test(code) ? code : encodeURIComponent(code);
  return window.location.origin + window.location.pathname + "?code=" + safe;
}}"""


# ---------------------------------------------------------------------------------------------
# The page

CSS = """
.lc-banner {border-left: 4px solid var(--color-accent); padding: 6px 12px; background: var(--block-background-fill);}
.lc-status {min-height: 2.2em; padding: 4px 10px; border-radius: 6px; background: var(--block-background-fill);}
#decode-text textarea {max-height: 6.5em; overflow-y: auto !important;}
#code-text textarea {max-height: 8em; overflow-y: auto !important;}
@media (max-width: 640px) {
  .lc-buttons {flex-wrap: wrap !important;}
  .lc-buttons > * {min-width: 45% !important;}
}
"""


def build_demo() -> gr.Blocks:
    frames_min, frames_max = FRAME_CHOICES[0], FRAME_CHOICES[-1]
    with gr.Blocks(title="lora_codec", delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        gr.Markdown(T.INTRO)
        with gr.Accordion("How it works (the words used on this page)", open=False, elem_id="how-it-works"):
            gr.Markdown(T.HOW_IT_WORKS)
        gr.Markdown(S.describe_backbone(BACKBONE, LOAD_ERROR), elem_classes=["lc-banner"], elem_id="backbone-banner")
        job = gr.State(None, time_to_live=S.JOB_MAX_AGE_S, delete_callback=jobs.delete_job)
        # the browser's job id (localStorage, encrypted), made at its first Compress: the fit and its
        # last result survive a reload, and a running fit is re-attached
        secret = os.environ.get("LORA_CODEC_APP_SECRET") or None
        job_id = gr.BrowserState(None, storage_key="lora_codec_job_id", secret=secret)
        with gr.Tabs() as tabs:
            with gr.Tab("Compress", id="compress"):
                with gr.Row():
                    with gr.Column(scale=1):
                        # any file (no type filter: raw .h264/.hevc, m2ts, no extension...); the server probes
                        # the content. /encode's first parameter stays `video` (a file, as before).
                        video = gr.File(label="Clip", file_count="single", type="filepath", elem_id="clip-in",
                                        height=120)
                        clip_md = gr.Markdown(T.CLIP_HINT, elem_id="clip-check")
                        clip_view = gr.Video(label="Preview", interactive=False, elem_id="clip-preview",
                                             height=260)
                        examples_slot = gr.Column()
                        gr.Markdown(T.EXAMPLE_CREDIT)
                    with gr.Column(scale=1):
                        caption = gr.Textbox(label="Caption", lines=2, elem_id="caption",
                                             placeholder="what the clip shows (stored in the code; it guides the model)")
                        caption_md = gr.Markdown(T.caption_counter(""), elem_id="caption-count")
                        with gr.Row():
                            start = gr.Number(0.0, label="Start time (s)", minimum=0, step=0.5, precision=2,
                                              info="where the coded part begins", elem_id="start")
                            frames = gr.Slider(frames_min, frames_max, value=DEFAULT_FRAMES, step=4,
                                               label="Frames to code", elem_id="frames",
                                               info=f"at most {frames_max} (1 more than a multiple of 4)")
                        segments = gr.Slider(1, F.MAX_SEGMENTS, value=1, step=1, label="Segments (long clips)",
                                             elem_id="segments",
                                             info=f"more than 1: that many consecutive parts of {frames_max} frames "
                                                  "from the start time, a fit each, in one code")
                        size_choices, size_default = F.size_choices()
                        size = gr.Dropdown(size_choices, value=size_default, label="Picture size (width x height)",
                                           elem_id="size",
                                           info=("a portrait clip is coded turned to portrait. " + T.SIZE_NOTE).strip(),
                                           interactive=len(size_choices) > 1)
                        with gr.Group(elem_id="file-size"):
                            size_by = gr.Radio([("a target size in kB", F.RATE_TARGET), ("a quality preset", "preset")],
                                               value="preset", label="File size: set by", elem_id="size-by")
                            with gr.Row():
                                target_kb = gr.Number(DEFAULT_TARGET_KB, label="Target size (kB, 1 kB = 1000 bytes)",
                                                      minimum=0.05, step=0.1, visible=False, elem_id="target-kb",
                                                      info="the code lands between 90 % and 100 % of it")
                                preset = gr.Dropdown(F.PRESET_CHOICES, value="balanced", label="Quality preset",
                                                     elem_id="preset",
                                                     info="smaller file = softer picture; balanced = this model's default")
                            # /encode's `rate_mode`: "target", a preset, or a rate weight (from Advanced)
                            rate_mode = gr.Textbox("balanced", visible=False, elem_id="rate-mode")
                        with gr.Row():
                            fit_steps = gr.Slider(10, 3000 if WAN else 1000, value=DEFAULT_FIT_STEPS, step=1,
                                                  elem_id="fit-steps", label="Fit budget (steps)",
                                                  info="more steps: closer picture, longer wait; stop any time")
                            refine = gr.Slider(0, REFINE_MAX_LOG2, value=0, step=1, elem_id="refine",
                                               label="Refinement: best of N = 2^k (0 = off)",
                                               info=("k bits per sampling step buy a closer picture"
                                                     if HAS_REFINE else "not available in this build yet"),
                                               interactive=HAS_REFINE)
                        with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                            with gr.Row():
                                rate_weight = gr.Number(F.PRESETS["balanced"][1], label="Rate weight (lambda)",
                                                        minimum=F.LAMBDA_RANGE[0], maximum=F.LAMBDA_RANGE[1],
                                                        step=0.001, elem_id="rate-weight",
                                                        info="set by the preset; larger = smaller file, softer "
                                                             "picture (not used with a target size)")
                                seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="seed",
                                                 info="fixes the noise the model starts from")
                            with gr.Row():
                                sample_steps = gr.Slider(1, 100, value=D.sample_steps, step=1, elem_id="sample-steps",
                                                         label="Sampling steps stored in the code")
                                batch = gr.Slider(1, 8, value=DEFAULT_BATCH, step=1, label="Fit batch",
                                                  elem_id="batch", info="samples per fit step")
                            refine_steps = gr.Number(0, label="Refinement schedule steps (0 = the sampling steps)",
                                                     precision=0, minimum=0, interactive=HAS_REFINE)
                with examples_slot:
                    gr.Examples(EXAMPLES, inputs=[video, caption, start], label="Example clip (click to use)",
                                cache_examples=False, elem_id="examples")
                estimate_md = gr.Markdown("*estimating...*", label="estimate", elem_id="estimate")
                with gr.Row(equal_height=True, elem_classes=["lc-buttons"]):
                    go = gr.Button("Compress", variant="primary", elem_id="compress-btn", scale=2)
                    stop_btn = gr.Button("Stop early", variant="stop", elem_id="stop-btn", scale=1,
                                         interactive=False)
                    extra = gr.Number(DEFAULT_FIT_STEPS, label="More steps", precision=0, minimum=1,
                                      scale=1, elem_id="more-steps", interactive=False)
                    more_btn = gr.Button("Keep improving", elem_id="more-btn", scale=1, interactive=False)
                actions_md = gr.Markdown(T.actions_hint(EMPTY), elem_id="actions-hint")
                kept_md = gr.Markdown("", elem_id="kept")
                status = gr.Markdown("", label="status", elem_id="status", elem_classes=["lc-status"])
                notes = gr.Markdown("", label="notes", elem_id="notes")
                with gr.Row():
                    with gr.Column(scale=1):
                        code_file = gr.File(label="Code file (download)", elem_id="code-file", interactive=False)
                        code_text = gr.Textbox(label="Code as text (copy and paste it anywhere)", lines=3,
                                               max_lines=4, buttons=["copy"], elem_id="code-text",
                                               interactive=False)
                        send = gr.Button("Open in Decode", size="sm", elem_id="open-decode", interactive=False)
                        share_link = gr.Textbox(label="Share link (opens this code in the Decode tab)", lines=1,
                                                max_lines=1, buttons=["copy"], elem_id="share-link",
                                                interactive=False, visible=False)
                        share_md = gr.Markdown("", elem_id="share-note")
                    with gr.Column(scale=2):
                        # widths in pixels, not percentages (on a phone those squeezed a column to a
                        # character a line): a narrow screen scrolls the table sideways
                        bytes_table = gr.DataFrame(headers=S.BYTE_HEADERS, label="Where the bytes went",
                                                   interactive=False, elem_id="bytes-table", wrap=True,
                                                   column_widths=["120px", "70px", "72px", "78px", "86px", "290px"])
                with gr.Row():
                    original = gr.Video(label="Original (as coded)", interactive=False, height=240,
                                        elem_id="original")
                    recon = gr.Video(label="lora_codec reconstruction", interactive=False, height=240,
                                     buttons=["download"], elem_id="recon")
                    baseline = gr.Video(label="x265 at the same bytes (shown as H.264)", interactive=False,
                                        height=240, elem_id="baseline")
                    # a still picture's code: shown as pictures (the videos are hidden then)
                    original_image = gr.Image(label="Original picture (as coded)", interactive=False, height=240,
                                              visible=False, elem_id="original-image", type="filepath")
                    recon_image = gr.Image(label="lora_codec reconstruction", interactive=False, height=240,
                                           visible=False, elem_id="recon-image", type="filepath")
                    baseline_image = gr.Image(label="a picture codec at the same bytes", interactive=False, height=240,
                                              visible=False, elem_id="baseline-image", type="filepath")
                metrics = gr.DataFrame(headers=S.METRIC_HEADERS, label="Quality at equal size",
                                       interactive=False, elem_id="metrics", wrap=True,
                                       column_widths=["120px", "80px", "100px", "90px", "460px"])
                with gr.Accordion("The x265 file and details", open=False):
                    baseline_file = gr.File(label="x265 file (HEVC mp4; most browsers cannot play it)",
                                            interactive=False)
                    summary = gr.JSON(label="Summary (JSON)")
            with gr.Tab("Decode", id="decode"):
                with gr.Row():
                    with gr.Column(scale=1):
                        in_file = gr.File(label="Code file (.vov)", file_types=[".vov", ".txt", ".bin"],
                                          elem_id="decode-file", height=120)
                        in_text = gr.Textbox(label="...or paste the text form (vov1:...)", lines=3, max_lines=3,
                                             elem_id="decode-text")
                        d_go = gr.Button("Decode", variant="primary", elem_id="decode-btn")
                        code_info = gr.Markdown("", label="code info", elem_id="code-info")
                        d_steps = gr.Slider(0, 100, value=0, step=1, label="Sampling steps",
                                            elem_id="decode-steps", info="0 = as stored in the code")
                        with gr.Row():
                            d_refine_mode = gr.Radio(["all", "none", "first K steps"], value="all",
                                                     label="Refinement track to replay", elem_id="decode-refine",
                                                     interactive=False, info="enter a code first")
                            d_refine_k = gr.Slider(0, 100, value=10, step=1, label="K", interactive=False,
                                                   elem_id="decode-k")
                        d_caption = gr.Textbox(label="Decode with another caption (editing; empty = the stored one)",
                                               lines=2, elem_id="decode-caption")
                        d_segments = gr.Textbox(label="Segments of a long clip (e.g. 2-3; empty = all)", max_lines=1,
                                                elem_id="decode-segments", visible=False)  # a long clip's code
                        with gr.Accordion("Merge with another code (editing)", open=False):
                            d_merge = gr.File(label="Code to merge (.vov): both adapters at once, the updates add",
                                              file_types=[".vov", ".txt", ".bin"], elem_id="decode-merge")
                            d_weights = gr.Textbox(label="Weights (this code, the merged one)", value="1, 1",
                                                   max_lines=1, elem_id="decode-weights",
                                                   info="e.g. 0.5, 0.5; same backbone, geometry and adapter "
                                                        "structure needed")
                    with gr.Column(scale=2):
                        d_status = gr.Markdown("", label="decode status", elem_id="decode-status",
                                               elem_classes=["lc-status"])
                        d_video = gr.Video(label="Decoded video (download with the arrow)", interactive=False,
                                           buttons=["download"], elem_id="decoded", height=320)
                        d_file = gr.File(label="Decoded video (mp4)", interactive=False, visible=False)  # the API's
                        with gr.Accordion("Details (JSON)", open=False):
                            d_info = gr.JSON(label="Code")
                            d_report = gr.JSON(label="Decode report")
                        # the Decode tab's code as text, kept in the browser's storage (survives a reload)
                        decode_saved = gr.Textbox("", visible=False, elem_id="decode-saved")

        ui = dict(job=job, status=status, notes=notes, code_file=code_file, code_text=code_text,
                  bytes_table=bytes_table, original=original, recon=recon, baseline=baseline,
                  baseline_file=baseline_file, metrics=metrics, summary=summary)
        outputs = [ui[k] for k in OUTPUT_KEYS]
        controls = [go, stop_btn, extra, more_btn, actions_md]
        light = dict(concurrency_id="light", concurrency_limit=8, trigger_mode="always_last", show_progress="hidden")
        # following a fit holds no model (a thread each, of Gradio's 40): many pages may follow theirs at once
        follow = dict(concurrency_id="follow", concurrency_limit=16, show_progress="hidden")
        views = [original, recon, baseline, original_image, recon_image, baseline_image]

        # -- before a compress: the estimate, the clip, the caption, the size controls
        est_inputs = [video, start, rate_mode, target_kb, fit_steps, refine, sample_steps, frames, batch, refine_steps,
                      size, segments, caption]
        gr.on([demo.load] + [comp.change for comp in est_inputs], estimate, est_inputs, estimate_md,
              api_name="estimate", **light)
        video.change(clip_preview, video, clip_view, api_visibility="private", concurrency_id="light",
                     concurrency_limit=8, trigger_mode="always_last", show_progress="minimal")
        gr.on([video.change, start.change, frames.change, size.change, segments.change], clip_check,
              [video, start, frames, size, segments],
              clip_md, api_visibility="private", **light)
        caption.change(T.caption_counter, caption, caption_md, api_visibility="private", **light)
        quick = dict(api_visibility="private", queue=False, show_progress="hidden")
        size_by.change(size_controls, size_by, [target_kb, preset], **quick)
        preset.change(preset_weight, preset, rate_weight, **quick)
        gr.on([size_by.change, preset.change, rate_weight.change], F.rate_mode_of, [size_by, preset, rate_weight],
              rate_mode, **quick)
        kept_inputs = [job, video, caption, start, frames, size, rate_mode, target_kb, seed, sample_steps, batch,
                       refine]
        gr.on([c.change for c in kept_inputs], kept_settings, kept_inputs, kept_md, **quick)

        # -- compress, stop, keep improving (the fit runs on the server; the page follows it)
        # (gradio runs .then only after a success: .failure resets the buttons after an error)
        run = go.click(ensure_job_id, job_id, job_id, **quick).then(controls_busy, None, controls, **quick).then(
            make_compress(ui),
            [video, caption, start, rate_mode, target_kb, fit_steps, refine, seed, sample_steps, frames, batch,
             refine_steps, size, job, job_id, segments],
            outputs, api_name="encode", **follow)
        run.then(controls_now, [job, job_id], controls, **quick)
        run.failure(controls_now, [job, job_id], controls, **quick)
        run.failure(settle_job_id, job_id, job_id, **quick)
        stop_btn.click(stop, job_id, status, api_name="stop", queue=False)
        run = more_btn.click(controls_busy, None, controls, **quick).then(
            make_keep_improving(ui), [extra, job, job_id], outputs, api_name="keep_improving", **follow)
        run.then(controls_now, [job, job_id], controls, **quick)
        run.failure(controls_now, [job, job_id], controls, **quick)

        # -- the result: open in Decode, share link
        send.click(lambda text: (text, None, gr.Tabs(selected="decode")), code_text, [in_text, in_file, tabs],
                   **quick)
        code_text.change(None, code_text, share_link, js=SHARE_JS, **quick)
        code_text.change(result_actions, code_text, [send, share_link, share_md], **quick)

        # -- decode
        gr.on([in_file.change, in_text.change], describe_code, [in_file, in_text], [code_info, d_info, d_refine_k],
              api_name="describe_code", **light)
        gr.on([in_file.change, in_text.change], decode_controls, [in_file, in_text],
              [d_refine_mode, d_refine_k, d_steps, d_segments], api_visibility="private", **light)
        gr.on([in_file.change, in_text.change], remember_code, [in_file, in_text], decode_saved,
              api_visibility="private", **light)
        decode_saved.change(None, decode_saved, None, js=SAVE_CODE_JS, **quick)
        in_text.change(None, in_text, None, js=SAVE_CODE_JS, **quick)  # at once (a file's text: above)
        d_go.click(decode_code, [in_file, in_text, d_steps, d_refine_mode, d_refine_k, d_caption, d_segments, d_merge,
                                 d_weights],
                   [d_video, d_file, d_status, d_report], api_name="decode", concurrency_id="model",
                   concurrency_limit=CONCURRENCY, show_progress="hidden")

        # -- page load: a share link or the Decode tab's code; re-attach to this browser's fit
        demo.load(None, None, in_text, js=LOAD_CODE_JS, **quick)
        demo.load(open_page, None, [tabs, d_status], **quick)
        demo.load(make_attach(ui, controls), job_id, outputs + controls, api_visibility="private", **follow)
        job.change(show_pictures, job, views, **quick)  # a picture's code is shown as pictures
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
