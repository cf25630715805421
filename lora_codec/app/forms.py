"""What a user entered on the page, checked and turned into the library's settings: whole numbers
in range, the size choice, the rate setting (a size target or a preset), the refinement choice and a
code given as a file or as text. Every refusal is a `LimitError` / `LoraCodecError` in plain words."""

from __future__ import annotations

import math
from pathlib import Path

from .. import app_support as S
from .. import bitstream
from ..backbones import Geometry
from ..cli import parse_size
from ..errors import LimitError, LoraCodecError
from ..units import ceil_kb
from . import runtime as R

# The quality presets, in plain words; "balanced" is this backbone's own default rate weight (lambda,
# METHOD.md: ~3e-3 .. 15e-3 on Wan), the others a smaller file or more detail around it.
PRESET_FACTORS = {"small": ("smaller file", 3.0), "balanced": ("balanced", 1.0), "detailed": ("more detail", 0.6)}
PRESETS = {key: (label, round(R.APP_DEFAULTS.rate_lambda * f, 6)) for key, (label, f) in PRESET_FACTORS.items()}
RATE_TARGET = "target"
PRESET_CHOICES = [(label, key) for key, (label, _l) in PRESETS.items()]
RATE_CHOICES = [("size target (kB)", RATE_TARGET)] + PRESET_CHOICES  # /encode's rate_mode values (+ a number)
LAMBDA_RANGE = (1e-4, 1.0)


def rate_mode_of(size_by: str, preset: str, rate_weight) -> str:
    """The page's size controls -> /encode's `rate_mode`: "target", a preset's key, or the rate
    weight itself (a number, from Advanced) when it differs from the preset's."""
    if size_by == RATE_TARGET:
        return RATE_TARGET
    preset = preset if preset in PRESETS else "balanced"
    try:
        lam = float(rate_weight)
    except (TypeError, ValueError):
        return preset
    return preset if math.isclose(lam, PRESETS[preset][1], rel_tol=1e-3) else f"{lam:g}"


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
    """`rate_mode` ("target", a preset's key, or a rate weight as a number) -> EncodeSettings fields."""
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
    try:
        lam = float(rate_mode)
    except (TypeError, ValueError):
        lam = None
    if lam is not None and math.isfinite(lam):
        lo, hi = LAMBDA_RANGE
        if not lo <= lam <= hi:
            raise LimitError(f"the rate weight must be between {lo:g} and {hi:g}")
        return {"rate_lambda": lam}
    raise LimitError(f"unknown size setting {rate_mode!r}; choose a size target or one of the presets: "
                     f"{', '.join(PRESETS)}")


def smallest_code_bytes(settings: dict, geom, fps=None, src=None) -> int:
    """The smallest code these settings can make for a clip coded at `geom` (`codec.minimum_code_bytes`:
    header, caption, the smallest prior, an empty payload, the refinement track if asked for). Known
    before any fitting: a size target below it is impossible."""
    from ..codec import EncodeSettings, minimum_code_bytes

    s = EncodeSettings(**{k: v for k, v in settings.items() if k in R.ENCODE_FIELDS})
    return minimum_code_bytes(R.BACKBONE, s.caption or "", s, geometry=geom, fps=fps, src=src)


def clip_rate_and_source(info, geom) -> tuple:
    """(fps, (source width, height, frames)) of a probed clip for `smallest_code_bytes`, or (None, None)."""
    if info is None:
        return None, None
    from fractions import Fraction

    return Fraction(info.fps).limit_denominator(1 << 20), (info.width, info.height, info.frames or geom.frames)


def check_size_target(settings: dict, geom, fps=None, src=None) -> None:
    """Refuse, before any work, a size target below the smallest possible code (LimitError)."""
    t = settings.get("target_kb")
    if t is None:
        return
    least = smallest_code_bytes(settings, geom, fps, src)
    if t * 1000 < least:
        raise LimitError(size_target_message(t, least, settings))


def size_target_message(target_kb: float, least: int, settings: dict) -> str:
    parts = "the header, the caption" + (" and the refinement track" if settings.get("refine_n") else "")
    return (f"a size target of {target_kb:g} kB cannot be met: the smallest possible code for this clip and "
            f"caption is {least} bytes ({least / 1000:.2f} kB: {parts} and an empty adapter); "
            f"choose at least {ceil_kb(least):.2f} kB, or a shorter caption")


def check_caption(caption) -> str:
    caption = caption or ""
    n = len(caption.encode("utf-8"))
    if n > S.LIMITS.max_caption_bytes:
        raise LimitError(f"the caption is {n} bytes long; a code holds at most {S.LIMITS.max_caption_bytes}: "
                         "shorten it")
    return caption


def caption_tokens(caption: str) -> int:
    """How many tokens the backbone's text encoder sees for `caption` (before its cut-off)."""
    tok = R.BACKBONE.pipe.tokenizer
    return len(tok(caption or "", add_special_tokens=True, verbose=False)["input_ids"])


def caption_reach(caption: str) -> tuple[int, int, str | None]:
    """(tokens, the model's limit, the caption's last words the model still reads when it is cut,
    else None). The whole caption is stored in the code either way; the model reads only the first
    `limit` tokens of it."""
    limit = int(R.BACKBONE.max_sequence_length)
    n = caption_tokens(caption)
    if n <= limit:
        return n, limit, None
    words = caption.split()
    lo, hi = 0, len(words)  # the most words whose tokens fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if caption_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return n, limit, " ".join(words[max(0, lo - 4):lo])


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
    """The geometry a compress with these inputs will code, and a few words on the source
    (`planned_clip` also gives the probe)."""
    g, src, _info = planned_clip(video, start_seconds, frames, size)
    return g, src


def planned_clip(video, start_seconds, frames, size=None):
    """(geometry, a few words on the source, `app_support.ClipInfo` or None without a clip)."""
    frames = int_in("frames to code", frames, 1, R.BACKBONE.native.frames)
    wh = size_arg(size)
    if video:
        from ..stills import is_still_image, read_image

        if is_still_image(video):  # a picture: one frame (the geometry rules for one frame)
            pic = read_image(video, limits=S.LIMITS.video_limits())
            h, w = pic.frames.shape[1:3]
            g = R.BACKBONE.coded_geometry(1, h, w, size=S.oriented(wh, h, w) if wh else None)
            return g, f"a still picture {w}x{h}: one frame", None
        info = S.probe(video)
        avail = frames
        if info.frames:
            left = info.frames - int(float(start_seconds or 0) * info.fps)
            avail = max(1, min(frames, left))
        g = R.BACKBONE.coded_geometry(avail, info.height, info.width,
                                      size=S.oriented(wh, info.height, info.width) if wh else None)
        return g, f"source {info.width}x{info.height}, {info.fps:.3g} fps" + (
            f", {info.seconds:.2f} s" if info.seconds else ""), info
    return (R.BACKBONE.coded_geometry(frames, R.BACKBONE.native.height, R.BACKBONE.native.width, size=wh),
            "no clip yet", None)


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
