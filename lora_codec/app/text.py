"""Every sentence the page builds from numbers (the estimate, the live status line, a code's
description) and the page's fixed texts. Markdown strings; no UI library."""

from __future__ import annotations

import html
import re
import time

from .. import app_support as S
from . import forms as F
from . import runtime as R
from ..errors import LimitError
from ..units import format_kb, format_rate, shown_frames

INTRO = """# lora_codec - a video as one small adapter

A clip is stored as a small set of numbers that *adjust* a video-generating model until it redraws the
clip; decoding runs the adjusted model again. A code is about 1-3 kB (the CPU `small` model, 9 frames at
128x80) to 32 kB (the real model, Wan2.1, 81 frames at 832x480). Method: *Compression as Adaptation*
(He, Guo et al., 2026).
"""

HOW_IT_WORKS = """\
**Compress** teaches a frozen video model (Wan2.1-T2V-1.3B, or a small stand-in on a CPU) your clip: a
*fit* adjusts a small adapter - one vector of numbers (UniLoRA; the code's *theta*) shared by all of the
model's layers - until the model, started from a noise pattern fixed by the seed, redraws the clip. The
fit has two phases: first it learns the clip, then it rounds the numbers (quantises them) and trades
picture quality against size. The **rate weight** (lambda, under Advanced) sets that trade: larger means a
smaller file and a softer picture; the quality presets are rate weights, and a **size target** picks the
rounding that lands just under the size you ask for. The rounded numbers are packed with an entropy coder
into the **code**: a header (clip size, frame rate, model, sampler), the caption, a table of how often each
number occurs (the *prior*) and the numbers themselves (the *payload*).

**Decode** rebuilds the adapter from the code and runs the model for the stored number of *sampling steps*;
the caption guides it. An optional **refinement track** stores, for some of those steps, which of N random
candidates came closest to your clip (log2 N bits per step): a little more size for a closer picture.

The model sees the clip in small blocks (about 16x16 pixels x 4 frames each); the time a fit takes grows
with their number. It reads the caption as *tokens* (word pieces; single characters on the CPU models) and
only up to a fixed number of them. *Stop early* gives a valid code at any moment; *Keep improving* fits on
from there.
"""

EXAMPLE_CREDIT = ("Example: *Big Buck Bunny* (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC BY 3.0; "
                  "cut to 2 s, resampled to 16 fps, scaled and re-encoded (see `examples/LICENSE.md`).")

CLIP_HINT = ("Any video file: mp4, mov, mkv, webm, avi, mpg, m2ts/mts, raw .h264/.hevc streams... - or a "
             "picture (PNG, JPEG, WebP: a one-frame code). The server reads its content (the name's extension does "
             "not matter).")

SIZE_NOTE = ("" if not R.WAN else "Wan2.1-1.3B was trained at 480p (832x480): smaller sizes cost quality, and much "
             "less GPU time.")

UNKNOWN_JOB = ("this browser's previous fit is no longer on this server (fits are kept "
               f"{S.JOB_MAX_AGE_S / 3600:g} h after their last use, and a server restart may remove them); "
               "compress the clip again to start a fresh fit")
LOST_JOB = ("*Your previous fit is no longer on this server* (fits are kept "
            f"{S.JOB_MAX_AGE_S / 3600:g} h after their last use, and a server restart may remove them): nothing "
            "of it was kept here. Compress the clip again to start a new fit; a code you downloaded still decodes.")
CANCELLED = "**Cancelled** before it started: nothing was fitted. Press Compress to start again."


# ---------------------------------------------------------------------------------------------
# messages in the user's words: no server paths, no error numbers, no command-line flags, no
# internal parameter names

_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"()]+/)+([^\s/:'\"()]+)")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
_FLAG_WORDS = {
    "target-kb": "the size target", "steps": "the sampling steps", "refine": "the refinement track choice",
    "refine-n": "the refinement candidates", "refine-steps": "the refinement steps",
    "refine-indexed": "the refined steps", "refine-select": "the refinement choice", "seed": "the seed",
    "noise-mode": "the noise mode (command-line tool only)", "lambda": "the rate weight", "size": "the size",
    "caption": "the caption", "resume": "a saved fit", "start": "the start time", "frames": "the frames",
}
_PARAMS = [
    (re.compile(r"\(max_frames=(\d+)\)"), r"(the model codes at most \1 frames)"),
    (re.compile(r"start_seconds=([\d.]+)"), r"the start time (\1 s)"),
    (re.compile(r"\bmax_frames\b"), "frames to code"),
    (re.compile(r"\bstart_seconds\b"), "start time"),
    (re.compile(r"\btarget_kb\b"), "size target"),
    (re.compile(r"\brate_lambda\b"), "rate weight"),
]


_PHRASES = [
    ("decode with --refine none, or encode with --noise-mode random to use the track",
     "decode with the refinement track set to 'none' (the command-line tool can fit with random noise instead)"),
]


def plain(message: str) -> str:
    """A library or system message in the page's words: a server path becomes the file's name, error
    numbers and command-line flags go, internal parameter names become what the page calls them."""
    msg = " ".join(str(message).split())
    for a, b in _PHRASES:
        msg = msg.replace(a, b)
    msg = _ERRNO.sub("", msg)
    msg = _PATH.sub(lambda m: m.group(1), msg)
    msg = re.sub(r"--([a-z][a-z0-9-]*)(?:\s+(?=[\d.]+\b)([\d.]+))?",
                 lambda m: _FLAG_WORDS.get(m.group(1), m.group(1).replace("-", " "))
                 + (f" {m.group(2)}" + (" kB" if m.group(1) == "target-kb" else "") if m.group(2) else ""), msg)
    for rx, rep in _PARAMS:
        msg = rx.sub(rep, msg)
    return msg


def error_status(message: str, *, what: str = "Could not compress") -> str:
    """The status area's text for a failure: it stays there (the toast is only a notice)."""
    return f"**{what}:** {html.escape(plain(message), quote=False)}"


def bullets(notes) -> str:
    return "\n".join(f"- {n}" for n in notes) if notes else ""


def kb(nbytes: float) -> str:
    return format_kb(nbytes)


# ---------------------------------------------------------------------------------------------
# before a compress: the estimate, the clip, the caption


def estimate_markdown(video, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, sample_steps, frames,
                      batch, refine_steps=0, size=None, segments=1, caption=None) -> str:
    """Markdown: what a compress with these settings will cost, before it starts (per segment for a
    long clip; and a size target that cannot be met, said before any work)."""
    c = R.costs(wait=30.0)
    if c is None:
        return "*Time estimate unavailable (the start-up calibration failed).*"
    fit_steps = F.int_in("fit steps", fit_steps, 1, S.LIMITS.max_fit_steps)
    batch = F.int_in("batch", batch, 1, 16)
    sample_steps = F.int_in("sampling steps", sample_steps, 1, S.LIMITS.max_sample_steps)
    segments = F.int_in("segments", segments or 1, 1, F.MAX_SEGMENTS)
    g, src, info = F.planned_clip(video, start_seconds, frames if segments == 1 else R.BACKBONE.native.frames, size)
    finetune = 0
    if rate_mode == F.RATE_TARGET:
        finetune = max(5, fit_steps // 5)
    refine_steps = (int(refine_steps or 0) or sample_steps) if (R.HAS_REFINE and int(refine_log2 or 0) > 0) else 0
    p = S.plan_encode(c, R.BACKBONE, g, fit_steps=fit_steps, batch=batch, sample_steps=sample_steps,
                      finetune_steps=finetune, refine_steps=refine_steps)
    on_gpu = R.BACKBONE.device.type == "cuda"
    where = "GPU time" if on_gpu else f"time on this {R.BACKBONE.device.type.upper()}"
    kind = ("measured on this machine" if c.source == "measured"
            else "an estimate from the model's published size, not a measurement")
    calls = (f" in {p.calls} GPU calls" if on_gpu else "")
    lines = []
    if rate_mode == F.RATE_TARGET and segments == 1:
        try:
            settings = F.encode_settings(caption=caption, rate_mode=rate_mode, target_kb=target_kb,
                                         fit_steps=fit_steps, refine_log2=refine_log2, seed=0,
                                         sample_steps=sample_steps, batch=batch, refine_steps=refine_steps)
            F.check_size_target(settings, g, *F.clip_rate_and_source(info, g))
        except LimitError as exc:
            lines += [f"**Cannot compress with these settings:** {plain(str(exc))}.", ""]
    if segments > 1:  # a long clip: every segment is its own fit and decode
        lines += [
            f"**Estimated {where}: ~{S.fmt_seconds(segments * p.total_s)}** for {segments} segments, "
            f"~{S.fmt_seconds(p.total_s)} each ({kind}).",
            "",
            f"- a long clip: {segments} segments of {g.frames} frames at {g.width}x{g.height} (consecutive segments "
            f"share a frame; {segments * (g.frames - 1) + 1} frames from the start time; {src})",
        ]
    else:
        lines += [
            f"**Estimated {where}: ~{S.fmt_seconds(p.total_s)}**{calls} ({kind}).",
            "",
            f"- coded: {'one frame' if g.frames == 1 else f'{g.frames} frames'} at {g.width}x{g.height} ({src})",
        ]
    lines += [
        f"- fit{' per segment' if segments > 1 else ''}: {fit_steps} steps of {batch} sample{'s' if batch > 1 else ''} "
        f"at ~{p.per_step_s:.3g} s a step = ~{S.fmt_seconds(p.fit_s)}"
        + (f", in parts of <= {S.fmt_seconds(S.LIMITS.max_gpu_call_s if S.ON_ZEROGPU else S.LIMITS.slice_s)}"
           if p.calls > 2 else ""),
        f"- then writing the code ({'landing on the size target, ' if finetune else ''}"
        f"{'the refinement track, ' if refine_steps else ''}decoding it as a receiver would, {sample_steps} steps): "
        f"~{S.fmt_seconds(p.finish_s + p.decode_s + p.setup_s)}",
        ("- then a picture codec (AVIF or WebP) at the same size, for comparison" if g.frames == 1 and info is None
         and video else "- then x265 (a classic codec) at the same size, for comparison"),
    ]
    if video and segments == 1:
        try:
            info = S.probe(video)
        except Exception:
            info = None
        if info and info.frames and info.frames > R.BACKBONE.native.frames:
            left = max(1, info.frames - int(float(start_seconds or 0) * info.fps))
            need = max(1, -(-(left - 1) // (R.BACKBONE.native.frames - 1)))
            lines.append(f"- this clip is longer than the model's {R.BACKBONE.native.frames} frames: all of it from the "
                         f"start time is {need} segments, ~{S.fmt_seconds(p.total_s)} of {where} each - set "
                         "*Segments* to code more of it")
    if R.WAN:
        from ..recipes import paper

        D, B = R.D, R.BACKBONE
        P = paper(D)  # the published recipe (the default needs a tenth of its fit samples: docs/FIT.md)
        full = S.plan_encode(c, B, B.coded_geometry(B.native.frames, B.native.height, B.native.width),
                             fit_steps=P.stage1_steps + P.stage2_steps, batch=P.batch, sample_steps=D.sample_steps)
        lines.append(f"- for scale: the paper's full setting ({P.stage1_steps + P.stage2_steps} steps of {P.batch}, "
                     f"{B.native.frames} frames) is ~{S.fmt_seconds(full.total_s)} of GPU time - run it with the "
                     "command-line tool (`python -m lora_codec encode`) on your own GPU")
    if SIZE_NOTE:
        lines.append(f"- {SIZE_NOTE}")
    lines += ["", f"<small>{c.note}</small>"]
    return "\n".join(lines)


def clip_report(name: str, info, geom, start_seconds: float, native_frames: int, segments: int = 1) -> str:
    """What will be coded of an uploaded clip, said at upload (and when start, frames, size or segments change)."""
    start = float(start_seconds or 0)
    coded_s = geom.frames / info.fps if info.fps else 0.0
    dur = f"{info.seconds:.3g} s" if info.seconds else "a clip of unknown length"
    head = f"**{html.escape(name)}**: {dur}, {info.width}x{info.height} at {info.fps:.3g} fps."
    if info.seconds and start >= info.seconds:
        return (f"{head} **The start time ({start:g} s) is past its end**: choose a start below "
                f"{info.seconds:.2f} s.")
    if segments > 1:  # a long clip: consecutive segments share a frame (as the estimate says)
        total = segments * (geom.frames - 1) + 1
        lines = [f"{head} {segments} segments of {geom.frames} frames: up to {total} frames "
                 f"({total / info.fps if info.fps else 0.0:.2f} s) from {start:g} s will be coded."]
    elif info.seconds and info.seconds > coded_s + start + 0.5 / max(info.fps, 1e-9):
        what = ("the first" if start == 0 else f"from {start:g} s,") + f" {coded_s:.2f} s will be coded"
        lines = [f"{head} {what[0].upper()}{what[1:]} ({geom.frames} frames, the most this model codes is "
                 f"{native_frames}); choose the start time to code another part."]
    else:
        lines = [f"{head} {geom.frames} frames ({coded_s:.2f} s) from {start:g} s will be coded."]
    if info.width < geom.width or info.height < geom.height:
        lines.append(f"**A tiny source**: {info.width}x{info.height} pixels will be *upscaled* to the coded size "
                     f"{geom.width}x{geom.height}; expect a blurred picture.")
    else:
        lines.append(f"Coded at {geom.width}x{geom.height}.")
    return " ".join(lines)


def caption_counter(caption: str) -> str:
    """The caption's length counter: bytes stored in the code, and how much of it the model reads."""
    caption = caption or ""
    nbytes = len(caption.encode("utf-8"))
    cap = S.LIMITS.max_caption_bytes
    if not caption.strip():
        return "*No caption yet: a caption that says what the clip shows helps the fit (it is stored in the code).*"
    if nbytes > cap:
        return f"**{nbytes} / {cap} bytes: too long** - a code holds at most {cap} bytes of caption; shorten it."
    n, limit, reach = F.caption_reach(caption)
    if reach is None:
        return f"{nbytes} / {cap} bytes stored in the code; the model reads all of it ({n} of its {limit} tokens)."
    return (f"{nbytes} / {cap} bytes stored in the code. **The model reads only the first {limit} tokens** (this "
            f"caption has {n}): up to *...{html.escape(reach)}*; the rest is stored but not used - shorten it to "
            "say what matters first.")


# ---------------------------------------------------------------------------------------------
# during a fit


def queued_line(ahead: int) -> str:
    if ahead <= 0:
        return "**Waiting for the model**... (*Stop early* cancels)"
    return (f"**Waiting for the model**: {ahead} fit{'s' if ahead > 1 else ''} ahead of yours "
            "(*Stop early* cancels; it has not started).")


def fit_starting(job: dict) -> str:
    return f"**Starting the fit** (step {job.get('steps_done', 0)} of {job['target_steps']})..."


def call_started(call: int, p: dict) -> str:
    return f"**Fitting** - {R.CALL} {call} started (step {p['step']} of {p['total']})"


PHASES = {1: "learning the clip", 2: "making the code small"}


def if_stopped_now(p: dict, job: dict | None) -> str:
    """The size a code written now would have (what Stop early gives), current at this step."""
    target = ((job or {}).get("settings") or {}).get("target_kb")
    if target is not None:
        return f"~{target:g} kB if stopped now (your size target)"
    size = p.get("code_bytes")
    if size:
        return f"{kb(size)} if stopped now"
    return f"~{kb(p['est_payload_bytes'])} payload if stopped now"


def status_line(p: dict, call: int, calls_est: int, t_start: float, job: dict | None = None) -> str:
    """The live status of a fit from one progress dict of `gpu_fit`."""
    phase = PHASES.get(p.get("stage"), "")
    seg = f"segment {p['segment']} of {p['segments']} - " if int(p.get("segments") or 1) > 1 else ""
    return (f"**Fitting** {seg}step {p['step']} of {p['total']} - {phase} - {if_stopped_now(p, job)} - "
            f"loss {p['loss']:.4f} (lower is closer) - {time.perf_counter() - t_start:.0f} s - {R.CALL} {call}"
            + (f" of ~{calls_est}" if calls_est > 1 else ""))


def finishing(job: dict, stopped: bool, need_s: float) -> str:
    head = (f"**Stopped early** at step {job['steps_done']} - " if stopped else "**Fit done** - ")
    return head + f"writing the code and decoding it as a receiver would (~{S.fmt_seconds(need_s)})..."


def resuming(step: int, target: int) -> str:
    return (f"**Continuing the interrupted fit** from step {step} to its budget of {target} steps "
            "(More steps is not used for this)...")


# ---------------------------------------------------------------------------------------------
# after a page reload: what was kept


def interrupted_status(job: dict, step: int, has_result: bool, *, phase: str | None = None,
                       error: str | None = None) -> str:
    target = int(job["target_steps"])
    name = html.escape(job.get("file_name") or job.get("name") or "your clip")
    kept = f"the clip ({name}) and its settings are kept"
    if phase == "cancelled":
        why = "Your fit was **cancelled before it started** (nothing was fitted)"
    elif phase == "failed":
        why = f"Your fit **stopped with an error** ({plain(error or 'unknown')})"
    else:
        why = "Your fit **was interrupted** (the server restarted or lost the connection to its GPU)"
    saved = (f"it was saved at step {step} of {target}" if step else "no fit progress had been saved yet")
    also = " The result below is from before it." if has_result else ""
    return (f"{why}: {kept}; {saved}. *Keep improving* continues it to its budget of {target} steps; *Compress* "
            f"starts a new fit.{also}")


def fit_saved_no_code(step: int) -> str:
    return (f"*Restored after a page reload:* the fit is saved at step {step} (no code written yet); "
            "*Keep improving* continues it.")


# ---------------------------------------------------------------------------------------------
# the buttons and what Keep improving keeps

KEPT_KEYS = ("caption", "start", "frames", "size", "rate", "seed", "sample_steps", "batch", "refine")


def actions_hint(state: str, job: dict | None = None) -> str:
    """Why a button is (not) available, next to the buttons."""
    if state == "busy":
        return ("*Stop early* ends the fit after its current step and writes a valid code from it (or cancels a fit "
                "that is still waiting). *Compress* and *Keep improving* wait until the fit has ended.")
    if state == "ready" and job:
        from .jobs import interrupted

        if interrupted(job):
            return (f"*Keep improving* continues the interrupted fit to its budget of {job['target_steps']} steps. "
                    "*Stop early* works while a fit runs.")
        if int(job.get("segments") or 1) > 1:
            return ("*Keep improving* is for one-part fits (a long clip's finished parts are already rounded): "
                    "compress it again with a larger fit budget. *Stop early* works while a fit runs.")
        return "*Keep improving* fits on from where the fit ended. *Stop early* works while a fit runs."
    return ("*Stop early* works while a fit runs or waits; *Keep improving* needs a fit: press *Compress* first.")


def _form_view(form: dict) -> dict:
    rate = form.get("rate_mode")
    if rate == F.RATE_TARGET:
        rate_s = f"size target {form.get('target_kb')} kB"
    elif rate in F.PRESETS:
        rate_s = f"{F.PRESETS[rate][0]} (rate weight {F.PRESETS[rate][1]:g})"
    else:
        rate_s = f"rate weight {rate}"
    return {"caption": form.get("caption") or "", "start": float(form.get("start_seconds") or 0),
            "frames": int(float(form.get("frames") or 0)), "size": str(form.get("size") or ""), "rate": rate_s,
            "seed": int(float(form.get("seed") or 0)), "sample_steps": int(float(form.get("sample_steps") or 0)),
            "batch": int(float(form.get("batch") or 0)), "refine": int(float(form.get("refine_log2") or 0))}


def job_view(job: dict) -> dict:
    s = job.get("settings") or {}
    if s.get("target_kb") is not None:
        rate_s = f"size target {s['target_kb']:g} kB"
    else:
        lam = s.get("rate_lambda")
        named = [k for k, (_l, v) in F.PRESETS.items() if lam is not None and abs(v - lam) <= 1e-9]
        rate_s = (f"{F.PRESETS[named[0]][0]} (rate weight {lam:g})" if named else f"rate weight {lam:g}"
                  if lam is not None else "default rate weight")
    n = s.get("refine_n")
    size = s.get("size") or [0, 0]
    return {"caption": s.get("caption") or "", "start": float(job.get("start_seconds") or 0),
            "frames": int(job["geometry"][0]), "size": f"{size[0]}x{size[1]}", "rate": rate_s,
            "seed": int(s.get("seed") or 0), "sample_steps": int(s.get("sample_steps") or 0),
            "batch": int(s.get("batch") or 0), "refine": (int(n).bit_length() - 1) if n else 0}


KEPT_WORDS = {"caption": "caption", "start": "start time", "frames": "frames", "size": "picture size",
              "rate": "file size setting", "seed": "seed", "sample_steps": "sampling steps", "batch": "fit batch",
              "refine": "refinement"}


def kept_settings(job: dict | None, form: dict, file_name: str | None = None) -> str:
    """Which settings Keep improving keeps (all of the fit's), and which inputs on the form differ
    from them: those are used only by a new Compress, never silently dropped."""
    if not isinstance(job, dict) or not job.get("settings"):
        return ""
    jv = job_view(job)
    fv = _form_view(form)
    name = html.escape(job.get("file_name") or job.get("name") or "the clip")
    cap = jv["caption"]
    cap_s = f'"{html.escape(cap[:60])}{"..." if len(cap) > 60 else ""}"' if cap else "no caption"
    # a one-frame code (a still picture): the form's frames and start time do not apply to it
    picture = jv["frames"] == 1
    what = f"a picture at {jv['size']}" if picture else f"{jv['frames']} frames from {jv['start']:g} s at {jv['size']}"
    kept = (f"**Keep improving keeps this fit's settings:** {name}, {what}, {cap_s}, {jv['rate']}, seed {jv['seed']}, {jv['sample_steps']} sampling steps; only "
            "*More steps* is new.")
    # a field the form does not send (the size dropdown before the clip is probed...) is not a change
    changed = [KEPT_WORDS[k] for k in KEPT_KEYS
               if k in fv and fv[k] != jv[k] and not (k == "size" and not fv[k])
               and not (picture and k in ("frames", "start"))]
    if file_name and file_name != job.get("file_name"):
        changed.insert(0, "clip")
    if changed:
        kept += (f" ⚠ **Changed on the form since:** {', '.join(changed)} - Keep improving ignores these; "
                 "*Compress* starts a new fit with them.")
    return kept


# ---------------------------------------------------------------------------------------------
# codes


def code_markdown(info: dict) -> str:
    """What a code holds (from `codec.describe`)."""
    lines = [
        f"**{info['total_bytes']} bytes** ({kb(info['total_bytes'])}) - model `{info['model']}` - "
        + (f"a {info['width']}x{info['height']} picture - " if info["frames"] == 1 else
           f"{info['frames']} frames {info['width']}x{info['height']} at {info['fps']:.3g} fps "
           f"({info['seconds']:.2f} s) - {format_rate(info['total_bytes'], info['seconds'])}, ")
        + f"{info['bits_per_pixel']:.4g} bits per pixel",
        f"- caption: *{html.escape(info['caption']) if info['caption'] else '(empty)'}*",
        f"- {info['sample_steps']} sampling steps stored; {info['theta_length']:,} adapter numbers",
    ]
    if int(info.get("segments") or 1) > 1:
        lines.append(f"- a long clip: **{info['segments']} segments** of {info['segment_frames']} frames (a fitted "
                     f"adapter each), starting at frames {', '.join(map(str, info['segment_starts']))}; decode all of "
                     "them or a range")
    if info.get("frames") == 1:
        lines.append("- a still picture (one frame)")
    if info.get("refine_n"):
        first, stop_ = info.get("refine_indexed") or (0, 0)
        lines.append(f"- refinement track: best of {info['refine_n']} candidates on {stop_ - first} of its "
                     f"{info.get('refine_steps')} sampling steps ({info.get('refine_bytes')} bytes)")
    else:
        lines.append("- no refinement track")
    if info["model"] != R.BACKBONE.name:
        lines.append(f"- **this server runs `{R.BACKBONE.name}`: it cannot decode a `{info['model']}` code**")
    return "\n".join(lines)


def refine_words(rep: dict) -> str:
    """Which refinement the decode used, from its report."""
    if not rep.get("refine_n"):
        return "no refinement track in this code"
    mode, used = rep.get("decode_refine"), rep.get("decode_refined_steps") or 0
    if mode == "none" or not used:
        return "refinement track not replayed (mode 'none')"
    if mode == "all":
        return f"refinement track replayed in full ({used} steps, mode 'all')"
    return f"refinement track replayed on its first {used} steps (mode 'first K steps')"


def decoded_markdown(rep: dict, decode_s: float, caption: str | None) -> str:
    frames = rep.get("decode_frames") or rep["frames"]
    msg = (f"**Decoded** {shown_frames(frames, rep['width'], rep['height'])} with {rep.get('decode_steps')} "
           f"sampling steps in {decode_s:.1f} s; {refine_words(rep)}"
           + (f"; caption *{html.escape(rep.get('decode_caption') or '')}*" if caption else "") + ".")
    if int(rep.get("segments") or 1) > 1:
        a, b = rep.get("decode_segments") or (1, rep["segments"])
        msg += (f" Segments {a}-{b} of {rep['segments']} (from {rep.get('decode_start_seconds', 0):.2f} s)."
                if (a, b) != (1, rep["segments"]) else f" All {rep['segments']} segments, blended where they meet.")
    if rep.get("decode_merge"):
        msg += f" Merged: {rep['decode_merge']} (the updates add)."
    if rep.get("model") == "tiny":
        msg += " (tiny backbone: no visual knowledge - the frames are not a meaningful reconstruction.)"
    return msg


SHARE_MAX_CHARS = 8000  # a link longer than this is not reliably carried by chat apps, mail and servers


def share_note(code_text: str) -> str:
    if not code_text:
        return ""
    if len(code_text) > SHARE_MAX_CHARS:
        return (f"This code's text is {len(code_text):,} characters: **too long for a link** (links work up to "
                f"about {SHARE_MAX_CHARS:,}). Share the code file instead (download it above).")
    return "Anyone with this link opens the Decode tab with the code filled in, and decodes it with one click."

SHARED_CODE = "**A shared code is filled in.** Press **Decode** to see its video."
