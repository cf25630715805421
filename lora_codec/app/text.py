"""Every sentence the page builds from numbers (the estimate, the live status line, a code's
description) and the page's fixed texts. Markdown strings; no UI library."""

from __future__ import annotations

import time

from .. import app_support as S
from . import forms as F
from . import runtime as R

INTRO = """# lora_codec - a video as one small adapter

A clip is encoded as **one quantised vector** for a UniLoRA adapter on a frozen video diffusion model
(Wan2.1-T2V-1.3B); decoding samples the adapted model from a stored noise seed. A code is about 1-3 kB (the
CPU `small` model, 9 frames at 128x80) to 32 kB (Wan, 81 frames at 832x480). Method: *Compression as Adaptation* (He, Guo et al., 2026).
"""

EXAMPLE_CREDIT = ("Example: *Big Buck Bunny* (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC BY 3.0; "
                  "cut to 2 s, resampled to 16 fps, scaled and re-encoded (see `examples/LICENSE.md`).")

CLIP_HINT = ("Any video file: mp4, mov, mkv, webm, avi, mpg, m2ts/mts, raw .h264/.hevc streams... - or a "
             "picture (PNG, JPEG, WebP: a one-frame code). The server reads its content (the name's extension does "
             "not matter).")

SIZE_NOTE = ("" if not R.WAN else "Wan2.1-1.3B was trained at 480p (832x480): smaller sizes cost quality, and much "
             "less GPU time.")

UNKNOWN_JOB = ("this browser's previous fit is unknown on this server or has expired (fits are kept "
               f"{S.JOB_MAX_AGE_S / 3600:g} h after their last use, and not across a server restart); "
               "compress the clip again to start a fresh fit")


def bullets(notes) -> str:
    return "\n".join(f"- {n}" for n in notes) if notes else ""


def estimate_markdown(video, start_seconds, rate_mode, target_kb, fit_steps, refine_log2, sample_steps, frames,
                      batch, refine_steps=0, size=None, segments=1) -> str:
    """Markdown: what a compress with these settings will cost, before it starts."""
    c = R.costs(wait=30.0)
    if c is None:
        return "*Time estimate unavailable (the start-up calibration failed).*"
    fit_steps = F.int_in("fit steps", fit_steps, 1, S.LIMITS.max_fit_steps)
    batch = F.int_in("batch", batch, 1, 16)
    sample_steps = F.int_in("sampling steps", sample_steps, 1, S.LIMITS.max_sample_steps)
    segments = F.int_in("segments", segments or 1, 1, F.MAX_SEGMENTS)
    g, src = F.planned_geometry(video, start_seconds, frames if segments == 1 else R.BACKBONE.native.frames, size)
    finetune = 0
    if rate_mode == F.RATE_TARGET:
        finetune = max(5, fit_steps // 5)
    refine_steps = (int(refine_steps or 0) or sample_steps) if (R.HAS_REFINE and int(refine_log2 or 0) > 0) else 0
    p = S.plan_encode(c, R.BACKBONE, g, fit_steps=fit_steps, batch=batch, sample_steps=sample_steps,
                      finetune_steps=finetune, refine_steps=refine_steps)
    where = "GPU time" if R.BACKBONE.device.type == "cuda" else f"time on this {R.BACKBONE.device.type.upper()}"
    kind = ("measured on this machine" if c.source == "measured"
            else "an estimate from the published architecture (METHOD.md section 7), not a measurement")
    calls = (f" in {p.calls} GPU calls" if R.BACKBONE.device.type == "cuda" else "")
    per_segment = p.total_s
    if segments > 1:  # a long clip: every segment is its own fit and decode
        total_s = segments * p.total_s
        lines = [
            f"**Estimated {where}: ~{S.fmt_seconds(total_s)}** for {segments} segments, ~{S.fmt_seconds(per_segment)} "
            f"each ({kind}).",
            "",
            f"- a long clip: {segments} segments of {g.frames} frames {g.width}x{g.height} (consecutive segments share "
            f"a frame; {segments * (g.frames - 1) + 1} frames from the start time; {p.tokens:,} video tokens each; "
            f"{src})",
        ]
    else:
        lines = [
            f"**Estimated {where}: ~{S.fmt_seconds(p.total_s)}**{calls} ({kind}).",
            "",
            f"- coded as {g.frames} frames {g.width}x{g.height} ({p.tokens:,} video tokens; {src})",
        ]
    lines += [
        f"- fit{' per segment' if segments > 1 else ''}: {fit_steps} steps x batch {batch} at ~{p.per_step_s:.3g} "
        f"s/step = ~{S.fmt_seconds(p.fit_s)}"
        + (f", split into GPU calls of <= {S.fmt_seconds(S.LIMITS.max_gpu_call_s if S.ON_ZEROGPU else S.LIMITS.slice_s)}"
           if p.calls > 2 else ""),
        f"- finish (quantise{', rate control' if finetune else ''}{', refinement track' if refine_steps else ''})"
        f" + decoding the reconstruction ({sample_steps} steps): ~{S.fmt_seconds(p.finish_s + p.decode_s + p.setup_s)}",
        "- then x265 at the same size and the metrics, on the CPU",
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
        D, B = R.D, R.BACKBONE
        full = S.plan_encode(c, B, B.coded_geometry(B.native.frames, B.native.height, B.native.width),
                             fit_steps=D.stage1_steps + D.stage2_steps, batch=D.batch, sample_steps=D.sample_steps)
        lines.append(f"- for scale: the paper's full setting ({D.stage1_steps + D.stage2_steps} steps x batch {D.batch}, "
                     f"{B.native.frames} frames) is ~{S.fmt_seconds(full.total_s)} of GPU time - run it with "
                     "`python -m lora_codec encode` on your own GPU")
    if SIZE_NOTE:
        lines.append(f"- {SIZE_NOTE}")
    lines += ["", f"<small>{c.note}</small>"]
    return "\n".join(lines)


def status_line(p: dict, call: int, calls_est: int, t_start: float) -> str:
    """The live status of a fit from one progress dict of `gpu_fit`."""
    stage = {1: "stage 1 (fit)", 2: "stage 2 (quantise + rate)"}.get(p.get("stage"), "")
    size = p.get("code_bytes")
    size_s = f"{size / 1000:.2f} kB if stopped now" if size else f"payload ~{p['est_payload_bytes'] / 1000:.2f} kB"
    seg = f"segment {p['segment']} / {p['segments']} - " if int(p.get("segments") or 1) > 1 else ""
    return (f"**Fitting** {seg}step {p['step']} / {p['total']} - {stage} - loss {p['loss']:.4f} - {size_s} - "
            f"{time.perf_counter() - t_start:.0f} s elapsed - {R.CALL} {call}"
            + (f" of ~{calls_est}" if calls_est > 1 else ""))


def code_markdown(info: dict) -> str:
    """What a code holds (from `codec.describe`)."""
    lines = [
        f"**{info['total_bytes']} bytes** - model `{info['model']}` - {info['frames']} frames "
        f"{info['width']}x{info['height']} at {info['fps']:.3g} fps ({info['seconds']:.2f} s) - "
        f"{info['kbytes_per_second']:.3g} kB/s, {info['bits_per_pixel']:.4g} bits per pixel",
        f"- caption: *{info['caption'] or '(empty)'}*",
        f"- sampling steps stored: {info['sample_steps']}; adapter: rank {info['rank']}, theta {info['theta_length']}",
    ]
    if int(info.get("segments") or 1) > 1:
        lines.append(f"- a long clip: **{info['segments']} segments** of {info['segment_frames']} frames (a fitted "
                     f"adapter each), starting at frames {', '.join(map(str, info['segment_starts']))}; decode all of "
                     "them or a range")
    if info.get("frames") == 1:
        lines.append("- a still picture (one frame)")
    if info.get("refine_n"):
        first, stop_ = info.get("refine_indexed") or (0, 0)
        lines.append(f"- refinement track: N = {info['refine_n']} candidates, recorded on {info.get('refine_steps')} "
                     f"sampling steps, {stop_ - first} indexed steps, {info.get('refine_bits')} bits "
                     f"({info.get('refine_bytes')} bytes in the file)")
    else:
        lines.append("- no refinement track")
    if info["model"] != R.BACKBONE.name:
        lines.append(f"- **this server runs `{R.BACKBONE.name}`: it cannot decode a `{info['model']}` code**")
    return "\n".join(lines)


def decoded_markdown(rep: dict, decode_s: float, caption: str | None) -> str:
    frames = rep.get("decode_frames") or rep["frames"]
    msg = (f"**Decoded** {frames} frames {rep['width']}x{rep['height']} with {rep.get('decode_steps')} steps "
           f"in {decode_s:.1f} s" + (f", caption *{rep.get('decode_caption')}*" if caption else "") + ".")
    if int(rep.get("segments") or 1) > 1:
        a, b = rep.get("decode_segments") or (1, rep["segments"])
        msg += (f" Segments {a}-{b} of {rep['segments']} (from {rep.get('decode_start_seconds', 0):.2f} s)."
                if (a, b) != (1, rep["segments"]) else f" All {rep['segments']} segments, blended where they meet.")
    if rep.get("decode_merge"):
        msg += f" Merged: {rep['decode_merge']} (the updates add)."
    if rep.get("model") == "tiny":
        msg += " (tiny backbone: no visual knowledge - the frames are not a meaningful reconstruction.)"
    return msg
