"""Classic codecs through PyAV, for comparison at equal size.

Sizes are of the whole mp4 file a user would send, container overhead included (for a
33-frame 320x180 clip the mp4 boxes and codec headers are about 1-1.4 KB of it);
`BaselineResult.payload_bytes` also gives the bitstream alone (sum of the encoded packets).

Frames go through the same path as `video.write_video`: RGB -> BT.709 limited-range yuv420p,
odd sizes padded by repeating the last row/column, and sides under 64 px padded up to 64 for
x265 / SVT-AV1 (the builds bundled with PyAV corrupt the heap or hang on some tiny sizes).
Decoded frames are cropped back, so `frames` always has the input's shape; the padding is
part of the counted size. x265 runs with `info=0` (no 2 KB settings SEI); x264 always writes
its ~0.6 KB version/settings SEI, which is counted.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from .errors import LimitError, VideoError
from .video import check_frames, _decode_bytes, _encode, _fps_fraction, _pad_for_codec

__all__ = [
    "CODECS",
    "CRF_RANGES",
    "DEFAULT_PRESETS",
    "BaselineResult",
    "available_codecs",
    "encode_at_crf",
    "encode_at_budget",
]

CODECS = {"x264": "libx264", "x265": "libx265", "av1": "libsvtav1"}
CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51), "libsvtav1": (1, 63)}
# Strong but affordable settings (about 1.2-1.6 s per encode of 81 frames at 832x480 on CPU):
# at equal quality x264 'slow' is ~3% smaller than 'medium', SVT-AV1 preset 6 ~30% smaller than 8.
DEFAULT_PRESETS = {"libx264": "slow", "libx265": "medium", "libsvtav1": "6"}


@dataclass
class BaselineResult:
    codec: str  # short name: 'x264', 'x265' or 'av1'
    crf: int
    bytes: int  # size of the mp4 file
    frames: np.ndarray = field(repr=False)  # decoded uint8 [T, H, W, 3], same shape as the input
    fits: bool  # bytes <= the budget
    data: bytes = field(default=b"", repr=False)  # the mp4 file itself
    payload_bytes: int = 0  # encoded bitstream without the container


def available_codecs() -> dict[str, bool]:
    """{'x264': True, ...}: which of CODECS this PyAV build can encode."""
    out = {}
    for short, name in CODECS.items():
        try:
            av.Codec(name, "w")
            out[short] = True
        except Exception:
            out[short] = False
    return out


def _resolve(codec: str) -> tuple[str, str]:
    """(short name, ffmpeg encoder name) for 'x264' or 'libx264' etc."""
    for short, name in CODECS.items():
        if codec in (short, name):
            try:
                av.Codec(name, "w")
            except Exception:
                raise VideoError(f"codec {short} ({name}) cannot encode in this PyAV build") from None
            return short, name
    raise VideoError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


def _options(name: str, crf: int, preset: str | None) -> dict[str, str]:
    opts = {"crf": str(int(crf)), "preset": str(preset if preset is not None else DEFAULT_PRESETS[name])}
    if name == "libx264":
        # frame threads cost x264 2-5% in size at equal CRF; for clips this small one thread
        # is no slower. (Sizes can still differ by a byte or two between runs.)
        opts["x264-params"] = "threads=1"
    if name == "libx265":
        opts["x265-params"] = "log-level=error:info=0"  # info=0: no 2 KB settings SEI
    return opts


def _encode_mp4(frames: np.ndarray, fps: Fraction, name: str, crf: int, preset: str | None) -> tuple[bytes, int]:
    buf = io.BytesIO()
    payload = _encode(buf, frames, fps, codec=name, options=_options(name, crf, preset), format="mp4")
    return buf.getvalue(), payload


def _check_crf(name: str, crf: int) -> int:
    lo, hi = CRF_RANGES[name]
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not lo <= crf <= hi:
        raise LimitError(f"crf must be a whole number in {lo}..{hi} for {name}, got {crf!r}")
    return int(crf)


def encode_at_crf(
    frames_uint8: np.ndarray,
    fps: Fraction,
    codec: str,
    crf: int,
    *,
    preset: str | None = None,
) -> tuple[bytes, np.ndarray]:
    """Encode at a constant CRF; return (mp4 file bytes, decoded uint8 frames [T, H, W, 3]).

    The bytes are the complete in-memory mp4 (container overhead included), i.e. what would
    be sent. `codec` is 'x264' / 'x265' / 'av1' or the encoder name; `preset` overrides
    DEFAULT_PRESETS.
    """
    frames = check_frames(frames_uint8, "frames_uint8")
    rate = _fps_fraction(fps)
    _short, name = _resolve(codec)
    crf = _check_crf(name, crf)
    T, H, W, _ = frames.shape
    data, _payload = _encode_mp4(_pad_for_codec(frames, name), rate, name, crf, preset)
    decoded = _decode_bytes(data)[:, :H, :W]
    return data, np.ascontiguousarray(decoded)


def _search_crf(size, lo: int, hi: int, max_bytes: int) -> tuple[int, bool]:
    """Smallest CRF in [lo, hi] with size(crf) <= max_bytes, assuming size falls with CRF.

    Phase 1 starts at the worst CRF (the cheapest encode) and steps down to where a
    log-linear model of size vs CRF puts the budget (first "size doubles every 6 CRF", then
    the slope measured between the last two points), stepping exponentially further while
    the model keeps undershooting, until a CRF is too big. Phase 2 interpolates inside the
    bracket, with a bisection step after two guesses that fail to halve it. Usually 3-5
    encodes; low (slow) CRFs are only encoded when the budget calls for them.
    """
    log_b = math.log(max_bytes)

    def log_size(crf: int) -> float:
        return math.log(max(size(crf), 1))

    if size(hi) > max_bytes:
        return hi, False
    fit, nofit = hi, lo - 1  # nofit == lo - 1: nothing measured too big yet
    prev_fit = None
    k = 0
    while nofit < lo and fit > lo:  # phase 1
        slope = math.log(2) / 6  # log-size per CRF
        if prev_fit is not None and log_size(fit) > log_size(prev_fit):
            slope = (log_size(fit) - log_size(prev_fit)) / (prev_fit - fit)
        guess = min(math.ceil(fit - (log_b - log_size(fit)) / slope - 1e-9), fit - 1)
        if guess == fit - 1:  # the model says "right here": widen the step each time it is wrong
            guess = fit - (1 << k)
            k += 1
        else:
            k = 0
        guess = max(guess, lo)
        if size(guess) <= max_bytes:
            prev_fit, fit = fit, guess
        else:
            nofit = guess
    slow = 0
    while fit - nofit > 1:  # phase 2: both ends measured
        width = fit - nofit
        if slow >= 2:
            guess = (fit + nofit) // 2
        else:
            s_fit, s_no = log_size(fit), log_size(nofit)
            t = (log_b - s_fit) / (s_no - s_fit) if s_no > s_fit else 0.5
            guess = math.ceil(fit - t * (fit - nofit) - 1e-9)
        guess = min(max(guess, nofit + 1), fit - 1)
        if size(guess) <= max_bytes:
            fit = guess
        else:
            nofit = guess
        slow = slow + 1 if (fit - nofit) * 2 > width else 0
    return fit, True


def encode_at_budget(
    frames_uint8: np.ndarray,
    fps: Fraction,
    codec: str,
    max_bytes: int,
    *,
    preset: str | None = None,
) -> BaselineResult:
    """The lowest CRF (best quality) whose mp4 is <= max_bytes, searched over the CRF range.

    Sizes are assumed to fall as CRF rises (true up to small wiggles). The result's CRF was
    measured to fit and the next better CRF was measured not to (unless it is the range's
    best CRF); if even the worst CRF is too big, that one is returned with fits=False.
    The search (see `_search_crf`) usually takes 3-5 encodes, starting from the cheap worst
    CRF, then one decode.
    """
    frames = check_frames(frames_uint8, "frames_uint8")
    rate = _fps_fraction(fps)
    short, name = _resolve(codec)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise LimitError(f"max_bytes must be a positive whole number, got {max_bytes!r}")
    max_bytes = int(max_bytes)
    T, H, W, _ = frames.shape
    padded = _pad_for_codec(frames, name)
    cache: dict[int, tuple[bytes, int]] = {}

    def size(crf: int) -> int:
        if crf not in cache:
            cache[crf] = _encode_mp4(padded, rate, name, crf, preset)
        return len(cache[crf][0])

    lo, hi = CRF_RANGES[name]
    best, fits = _search_crf(size, lo, hi, max_bytes)
    data, payload = cache[best]
    decoded = np.ascontiguousarray(_decode_bytes(data)[:, :H, :W])
    return BaselineResult(
        codec=short, crf=best, bytes=len(data), frames=decoded, fits=fits, data=data, payload_bytes=payload
    )
