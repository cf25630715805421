"""What a user entered on the page, checked and turned into the library's settings: whole numbers
in range, the size choice, the rate setting (a size target or a preset), the refinement choice and a
code given as a file or as text. Every refusal is a `LimitError` / `LoraCodecError` in plain words."""

from __future__ import annotations

from pathlib import Path

from .. import app_support as S
from .. import bitstream
from ..backbones import Geometry
from ..cli import parse_size
from ..errors import LimitError, LoraCodecError
from . import runtime as R

PRESETS = {  # API value -> (label, rate weight lambda; METHOD.md: ~3e-3 .. 15e-3)
    "small": ("small (λ = 0.015)", 15e-3),
    "balanced": ("balanced (λ = 0.005)", S.BALANCED_LAMBDA),
    "detailed": ("detailed (λ = 0.003)", 3e-3),
}
RATE_TARGET = "target"
RATE_CHOICES = [("size target (kB)", RATE_TARGET)] + [(label, key) for key, (label, _l) in PRESETS.items()]


MAX_SEGMENTS = int(__import__("os").environ.get("LORA_CODEC_APP_MAX_SEGMENTS", "12"))  # a long clip's segments per job


class CodeInputError(LoraCodecError):
    pass


def int_in(name: str, value, lo: int, hi: int) -> int:
    try:
        v = int(round(float(value)))
    except (TypeError, ValueError):
        raise LimitError(f"{name} must be a whole number") from None
    if not lo <= v <= hi:
        raise LimitError(f"{name} must be in {lo}..{hi}, got {v}")
    return v


def size_value(size) -> str:
    return f"{size[0]}x{size[1]}"


def size_choices() -> tuple[list[tuple[str, str]], str]:
    """The size presets with the GPU time of a default compress at each (cost model), and the default:
    the largest preset whose default fit needs at most a few GPU calls (`S.default_size`)."""
    c = R.costs()
    if c is None or not R.WAN:
        return [(size_value(sz), size_value(sz)) for sz in R.SIZES], size_value(R.SIZES[0] if R.WAN else R.SIZES[-1])
    choices = []
    for w, h in R.SIZES:
        p = S.plan_encode(c, R.BACKBONE, Geometry(R.DEFAULT_FRAMES, h, w), fit_steps=R.DEFAULT_FIT_STEPS,
                          batch=R.DEFAULT_BATCH, sample_steps=R.D.sample_steps)
        choices.append((f"{w}x{h} (~{S.fmt_seconds(p.total_s)} of GPU time, {p.calls} GPU calls by default)",
                        size_value((w, h))))
    best, _plan = S.default_size(c, R.BACKBONE, R.SIZES, frames=R.DEFAULT_FRAMES, fit_steps=R.DEFAULT_FIT_STEPS,
                                 batch=R.DEFAULT_BATCH, sample_steps=R.D.sample_steps)
    return choices, size_value(best)


def size_arg(size) -> tuple[int, int] | None:
    """The size dropdown's value -> (width, height), one of the presets (LimitError otherwise)."""
    if size in (None, "", "native"):
        return None
    wh = parse_size(str(size))
    if wh not in [tuple(x) for x in R.SIZES]:
        raise LimitError(f"size {size} is not offered here; choose one of: {', '.join(map(size_value, R.SIZES))}")
    return wh


def rate_kwargs(rate_mode: str, target_kb) -> dict:
    if rate_mode == RATE_TARGET:
        try:
            t = float(target_kb)
        except (TypeError, ValueError):
            raise LimitError("enter a size target in kB (1 kB = 1000 bytes)") from None
        if not (0.05 <= t <= S.LIMITS.max_code_kb):
            raise LimitError(f"the size target must be between 0.05 and {S.LIMITS.max_code_kb} kB")
        return {"target_kb": t}
    if rate_mode in PRESETS:
        return {"rate_lambda": PRESETS[rate_mode][1]}
    raise LimitError(f"unknown size setting {rate_mode!r}; choose one of: {RATE_TARGET}, {', '.join(PRESETS)}")


def check_caption(caption) -> str:
    caption = caption or ""
    if len(caption.encode("utf-8")) > S.LIMITS.max_caption_bytes:
        raise LimitError(f"the caption is longer than {S.LIMITS.max_caption_bytes} bytes")
    return caption


def encode_settings(*, caption, rate_mode, target_kb, fit_steps, refine_log2, seed, sample_steps, batch,
                    refine_steps) -> dict:
    """The Compress form -> the job's settings (EncodeSettings fields, plain values)."""
    caption = check_caption(caption)
    fit_steps = int_in("fit steps", fit_steps, 1, S.LIMITS.max_fit_steps)
    sample_steps = int_in("sampling steps", sample_steps, 1, S.LIMITS.max_sample_steps)
    batch = int_in("batch", batch, 1, 16)
    seed = int_in("seed", seed, 0, 2**31 - 1)
    refine_log2 = int_in("refinement candidates (log2 N)", refine_log2 or 0, 0, R.REFINE_MAX_LOG2)
    settings = dict(model=R.BACKBONE.name, caption=caption, seed=seed, fit_steps=fit_steps,
                    sample_steps=sample_steps, batch=batch, **rate_kwargs(rate_mode, target_kb))
    if refine_log2 > 0:
        if not R.HAS_REFINE:
            raise LimitError("this build of lora_codec has no refinement track yet; set N to off")
        settings["refine_n"] = 2 ** refine_log2
        rs = int_in("refinement steps", refine_steps or 0, 0, 10000)
        if rs:
            settings["refine_steps"] = rs
    return settings


def planned_geometry(video, start_seconds, frames, size=None) -> tuple[Geometry, str]:
    """The geometry a compress with these inputs will code, and a few words on the source."""
    frames = int_in("frames to code", frames, 1, R.BACKBONE.native.frames)
    wh = size_arg(size)
    if video:
        from ..stills import is_still_image, read_image

        if is_still_image(video):  # a picture: one frame (the geometry rules for one frame)
            pic = read_image(video, limits=S.LIMITS.video_limits())
            h, w = pic.frames.shape[1:3]
            g = R.BACKBONE.coded_geometry(1, h, w, size=S.oriented(wh, h, w) if wh else None)
            return g, f"a still picture {w}x{h}: one frame"
        info = S.probe(video)
        avail = frames
        if info.frames:
            left = info.frames - int(float(start_seconds or 0) * info.fps)
            avail = max(1, min(frames, left))
        g = R.BACKBONE.coded_geometry(avail, info.height, info.width,
                                      size=S.oriented(wh, info.height, info.width) if wh else None)
        return g, f"source {info.width}x{info.height}, {info.fps:.3g} fps" + (
            f", {info.seconds:.2f} s" if info.seconds else "")
    return R.BACKBONE.coded_geometry(frames, R.BACKBONE.native.height, R.BACKBONE.native.width, size=wh), "no clip yet"


def read_code_input(code_file, code_text) -> bytes:
    """A code given as an uploaded file or as pasted text -> its bytes."""
    if code_file:
        p = Path(code_file)
        if not p.is_file():
            raise CodeInputError("the uploaded code file is missing on the server (upload it again)")
        size = p.stat().st_size
        if size > S.LIMITS.max_code_kb * 1000 * 2:
            raise LimitError(f"the file is {size / 1e6:.1f} MB - too large to be a code here "
                             f"(codes up to {S.LIMITS.max_code_kb} kB)")
        return bitstream.load_code_bytes(p.read_bytes())
    if code_text and code_text.strip():
        if len(code_text) > S.LIMITS.max_code_kb * 1000 * 2:
            raise LimitError("the pasted text is too long to be a code here")
        return bitstream.load_code_bytes(code_text.strip())
    raise CodeInputError("no code: upload a code file or paste its text form (vov1:...)")


def refine_arg(mode: str, k):
    """The Decode tab's refinement choice -> `decode(refine=...)` ("all", "none" or K steps)."""
    if not R.DECODE_HAS_REFINE:
        return None
    if mode == "all":
        return "all"
    if mode == "none":
        return "none"
    return int_in("refinement steps to replay", k, 0, 100000)


def merge_inputs(merge_file, weights_text) -> tuple[list[bytes], list[float] | None]:
    """The Decode tab's merge: another code file and the weights ('1, 0.5': the decoded code's first;
    empty = 1 each) -> (codes to merge, weights or None)."""
    from ..merge import parse_weights

    if not merge_file:
        if (weights_text or "").strip() not in ("", "1", "1,1", "1, 1"):
            raise LimitError("merge weights are for a merge: add the code to merge with")
        return [], None
    other = read_code_input(merge_file, None)
    return [other], parse_weights((weights_text or "").strip() or None, 2)


def segments_arg(text):
    """The Decode tab's segment range ('' / 'all' = every segment; '2-3', 1-based)."""
    t = (text or "").strip()
    return None if t.lower() in ("", "all") else t
