"""lora_codec in the browser: the Hugging Face Space entry point (Gradio, ZeroGPU-ready).

A thin UI: the page's layout and its callbacks. The work is in the package, `lora_codec/app/`
(one concern per module: `runtime` the model, `gpu` the GPU functions, `jobs` compress jobs in
slices, `results` what a finished job shows, `decoding` the Decode tab's work, `forms` input checks,
`uploads` the clip preview, `text` the page's sentences) over the library API (`lora_codec.codec`).
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


# ---------------------------------------------------------------------------------------------
# callbacks (their parameter names are the API's)


@_guarded
def estimate(video, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, sample_steps, frames, batch,
             refine_steps=0, size=None, segments=1) -> str:
    """Markdown: what a compress with these settings will cost, before it starts (per segment for a
    long clip)."""
    return T.estimate_markdown(video, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, sample_steps,
                               frames, batch, refine_steps, size, segments)


def clip_preview(path, request: gr.Request = None):
    """The Preview player's video for an uploaded clip (`uploads.clip_preview`)."""
    from gradio import processing_utils

    return uploads.clip_preview(path, _new_dir(request, "preview"), playable=processing_utils.video_is_playable)


PICTURES = (("original", "original_image"), ("recon", "recon_image"), ("baseline", "baseline_image"))


def _to(ui, fields: dict) -> dict:
    return {ui[k]: v for k, v in fields.items() if k in OUTPUT_KEYS}


def show_pictures(job):
    """After a compress (or a reload): a picture's code is shown as pictures - the three picture
    components visible with the job's pictures, the three videos hidden; a video's the other way."""
    pics = jobs.pictures(job)
    if pics is None:
        return [gr.update(visible=True) for _ in PICTURES] + [gr.update(value=None, visible=False) for _ in PICTURES]
    return [gr.update(visible=False) for _ in PICTURES] + [gr.update(value=pics[img], visible=True)
                                                           for _vid, img in PICTURES]


def make_compress(ui):
    @_guarded
    def compress(video, caption, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, seed, sample_steps,
                 frames, batch, refine_steps, size=None, job=None, job_id=None, segments=1,
                 request: gr.Request = None):
        """Fit a code to the clip (stoppable, resumable), then show the code, its bytes, the
        reconstruction and x265 at the same size (a picture: a picture codec). `segments` > 1: that
        many segments of a long clip in one code."""
        for fields in jobs.compress(video, caption, start_seconds, rate_mode, target_kb, fit_steps, refine_log2,
                                    seed, sample_steps, frames, batch, refine_steps, size, job, job_id, segments,
                                    session=_session_key(request)):
            yield _to(ui, fields)

    return compress


def make_keep_improving(ui):
    @_guarded
    def keep_improving(extra_steps, job, job_id=None, request: gr.Request = None):
        """More fitting from the saved state (the fit is anytime), then a new code. `job_id`: the
        browser's job id (kept across a page reload), to continue a fit made in an earlier session."""
        for fields in jobs.keep_improving(extra_steps, job, job_id, session=_session_key(request)):
            yield _to(ui, fields)

    return keep_improving


@_guarded
def stop(job_id=None, request: gr.Request = None) -> str:
    """Stop the running fit after its current step; the code is then written from the state so far."""
    return jobs.stop(job_id, session=_session_key(request))


def restore_job(job_id):
    """On page load: the browser's job id (a new one if it has none), and its saved fit and last
    result if the server still has them (a page reload keeps the fit)."""
    jid, job, fields = jobs.restore(job_id)
    return [jid, job] + [fields.get(k, gr.update()) for k in OUTPUT_KEYS if k != "job"]


@_guarded
def describe_code(code_file, code_text):
    """What a code holds (no model needed); a code that does not parse is reported in the text."""
    md, info, k = decoding.describe_code(code_file, code_text)
    return md, info, gr.update(**k) if k else gr.update()


@_guarded
def decode_code(code_file, code_text, steps, refine_mode, refine_k, caption, segments=None, merge_file=None,
                merge_weights=None, request: gr.Request = None):
    """Decode a code (file or text) to a video; optionally other sampling steps, part of the
    refinement track, another caption (editing), a long clip's segments ('2-3'), or merged with
    another code (editing: the updates add, `merge_weights` '0.5, 0.5', this code's first)."""
    path, msg, rep = decoding.decode_code(code_file, code_text, steps, refine_mode, refine_k, caption,
                                          _new_dir(request, "decode")(), segments, merge_file, merge_weights)
    return path, path, msg, rep


# ---------------------------------------------------------------------------------------------
# The page

CSS = """
.lc-banner {border-left: 4px solid var(--color-accent); padding: 6px 12px; background: var(--block-background-fill);}
.lc-status {min-height: 2.2em; padding: 4px 10px; border-radius: 6px; background: var(--block-background-fill);}
"""


def build_demo() -> gr.Blocks:
    frames_min, frames_max = FRAME_CHOICES[0], FRAME_CHOICES[-1]
    with gr.Blocks(title="lora_codec", delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        gr.Markdown(T.INTRO)
        gr.Markdown(S.describe_backbone(BACKBONE, LOAD_ERROR), elem_classes=["lc-banner"], elem_id="backbone-banner")
        job = gr.State(None, time_to_live=S.JOB_MAX_AGE_S, delete_callback=jobs.delete_job)
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
                        gr.Markdown(T.CLIP_HINT, elem_id="clip-hint")
                        clip_view = gr.Video(label="Preview", interactive=False, elem_id="clip-preview",
                                             height=260)
                        examples_slot = gr.Column()
                        gr.Markdown(T.EXAMPLE_CREDIT)
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
                            segments = gr.Slider(1, F.MAX_SEGMENTS, value=1, step=1, label="Segments (long clips)",
                                                 elem_id="segments",
                                                 info=f"more than 1: that many segments of {frames_max} frames from "
                                                      "the start time, a fit each, in one code")
                        size_choices, size_default = F.size_choices()
                        size = gr.Dropdown(size_choices, value=size_default, label="Size (width x height)",
                                           elem_id="size",
                                           info=("portrait clips are coded at the transposed size. " + T.SIZE_NOTE).strip(),
                                           interactive=len(size_choices) > 1)
                        with gr.Row():
                            rate_mode = gr.Dropdown(F.RATE_CHOICES, value="balanced", label="Size",
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
                    # a still picture's code: shown as pictures (the videos are hidden then)
                    original_image = gr.Image(label="Original picture (as coded)", interactive=False, height=240,
                                              visible=False, elem_id="original-image", type="filepath")
                    recon_image = gr.Image(label="lora_codec reconstruction", interactive=False, height=240,
                                           visible=False, elem_id="recon-image", type="filepath")
                    baseline_image = gr.Image(label="a picture codec at the same bytes", interactive=False, height=240,
                                              visible=False, elem_id="baseline-image", type="filepath")
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
                        d_segments = gr.Textbox(label="Segments of a long clip (e.g. 2-3; empty = all)", max_lines=1,
                                                elem_id="decode-segments")
                        with gr.Accordion("Merge with another code (editing)", open=False):
                            d_merge = gr.File(label="Code to merge (.vov): both adapters at once, the updates add",
                                              file_types=[".vov", ".txt", ".bin"], elem_id="decode-merge")
                            d_weights = gr.Textbox(label="Weights (this code, the merged one)", value="1, 1",
                                                   max_lines=1, elem_id="decode-weights",
                                                   info="e.g. 0.5, 0.5; same backbone, geometry and adapter "
                                                        "structure needed")
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
        views = [original, recon, baseline, original_image, recon_image, baseline_image]

        est_inputs = [video, start, rate_mode, target_kb, fit_steps, refine, sample_steps, frames, batch, refine_steps,
                      size, segments]
        gr.on([demo.load] + [comp.change for comp in est_inputs], estimate, est_inputs, estimate_md,
              api_name="estimate", show_progress="hidden", concurrency_id="light", concurrency_limit=8,
              trigger_mode="always_last")

        video.change(clip_preview, video, clip_view, api_visibility="private", show_progress="minimal",
                     concurrency_id="light", concurrency_limit=8, trigger_mode="always_last")

        go.click(make_compress(ui),
                 [video, caption, start, rate_mode, target_kb, fit_steps, refine, seed, sample_steps, frames, batch,
                  refine_steps, size, job, job_id, segments],
                 outputs, api_name="encode", concurrency_id="model", concurrency_limit=CONCURRENCY,
                 show_progress="minimal", show_progress_on=[status]).then(
            show_pictures, job, views, api_visibility="private", queue=False)
        stop_btn.click(stop, job_id, status, api_name="stop", queue=False)
        more_btn.click(make_keep_improving(ui), [extra, job, job_id], outputs, api_name="keep_improving",
                       concurrency_id="model", concurrency_limit=CONCURRENCY, show_progress="minimal",
                       show_progress_on=[status]).then(show_pictures, job, views, api_visibility="private",
                                                       queue=False)
        send.click(lambda text: (text, None, gr.Tabs(selected="decode")), code_text, [in_text, in_file, tabs],
                   api_visibility="private", queue=False)

        gr.on([in_file.change, in_text.change], describe_code, [in_file, in_text], [code_info, d_info, d_refine_k],
              api_name="describe_code", show_progress="hidden", concurrency_id="light", concurrency_limit=8,
              trigger_mode="always_last")
        d_go.click(decode_code, [in_file, in_text, d_steps, d_refine_mode, d_refine_k, d_caption, d_segments, d_merge,
                                 d_weights],
                   [d_video, d_file, d_status, d_report], api_name="decode", concurrency_id="model",
                   concurrency_limit=CONCURRENCY)
        demo.load(restore_job, job_id, [job_id] + outputs, api_visibility="private", queue=False).then(
            show_pictures, job, views, api_visibility="private", queue=False)
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
