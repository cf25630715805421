"""Video I/O (PyAV), the model's geometry rules, and frame <-> tensor conversion.

Everything a user can get wrong (missing file, not a video, audio only, no frames, over a
limit) raises a one-line `VideoError` / `LimitError`; PyAV and numpy exceptions never escape.

Reading codes the picture a person sees played (docs/INPUTS.md), one small function per rule:
the stream ffmpeg picks (`choose_video_stream`), the rate ffmpeg reports (`frame_rate`), the
displayed shape (`displayed_geometry`: sample aspect ratio and rotation), HDR tone-mapped to SDR
(`colour`), interlaced video de-interlaced (`Deinterlacer`), and true notes (`reader_notes`).
`probe_video` answers the same questions from one frame. Local paths are opened as `file:` URLs,
so a ':' in a name is never read as a protocol.

Colour: frames are 8-bit RGB in memory. Reading converts with the colour matrix the stream is
tagged with (BT.601 when untagged, as FFmpeg does) and its tagged range. Writing (`write_video`,
kind by extension: `OUTPUT_KINDS`) converts RGB to BT.709 limited-range yuv420p for H.264 and tags
the stream as such, so browsers, FFmpeg and `read_video` all decode it the same way (with PyAV <
17, whose YUV -> RGB conversion ignores the tags, BT.601 is written and tagged instead); FFV1
`.mkv` keeps RGB losslessly; `.png` holds one frame. Outputs are byte-identical across processes.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO, Union

import av
import numpy as np
import torch
import torch.nn.functional as F

from . import colour
from .errors import LimitError, LoraCodecError, VideoError
from .units import format_file_size as _fmt_bytes

__all__ = [
    "Clip",
    "Limits",
    "read_video",
    "write_video",
    "probe_video",
    "VideoInfo",
    "DisplayGeometry",
    "displayed_geometry",
    "is_video_file",
    "ffmpeg_url",
    "OUTPUT_KINDS",
    "check_video_output",
    "coded_geometry",
    "fit_to_geometry",
    "video_to_tensor",
    "tensor_to_video",
    "DEFAULT_FPS",
]

DEFAULT_FPS = Fraction(16)

# PyAV < 17 ignores the colour matrix when converting YUV to RGB (always BT.601), so with it
# clips are written as BT.601 (and tagged so) to keep write -> read consistent.
try:
    _AV_MAJOR = int(str(av.__version__).split(".")[0])
except ValueError:  # pragma: no cover
    _AV_MAJOR = 0
if _AV_MAJOR >= 17:
    _WRITE_MATRIX, _WRITE_TAG = "ITU709", 1  # BT.709 matrix, primaries and transfer
else:  # pragma: no cover - exercised only with old PyAV
    _WRITE_MATRIX, _WRITE_TAG = "ITU601", 6  # SMPTE 170M (BT.601 525)
# Phones record slow motion at 240-960 fps and high-speed cameras at up to ~10000 fps; a declared
# rate above this is taken as junk (the rate is then guessed, with a note).
_MAX_SANE_FPS = 10000

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Clip:
    """A decoded clip.

    frames: uint8 [T, H, W, 3] RGB as displayed (sample aspect ratio, rotation, de-interlacing
        and HDR -> SDR applied).
    fps: the frame rate `frame_rate` gives (average rate; the codec's timing for raw streams; guessed
        rate; 16 when absent).
    src_width / src_height: size of `frames` (displayed size).
    src_frames: number of frames in `frames`, i.e. what the source offers after
        `start_seconds` / `max_frames` trimming (what `coded_geometry` should be given).
    notes: human-readable notices about conversions and trimming.
    """

    frames: np.ndarray
    fps: Fraction
    src_width: int
    src_height: int
    src_frames: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Limits:
    """Input limits; each is checked from file size / stream metadata before decoding where
    the metadata allows, and again while decoding (metadata can be absent or wrong).

    max_bytes: size of the input file.
    max_seconds: duration of the source (whole file, not just the part read).
    max_pixels: width * height of a frame.
    max_frames_read: frames decoded, including those skipped to reach `start_seconds`.
    max_decoded_bytes: memory of the kept RGB frames (T * H * W * 3).
    """

    max_bytes: int = 512 << 20
    max_seconds: float = 600.0
    max_pixels: int = 4096 * 4096
    max_frames_read: int = 2000
    max_decoded_bytes: int = 4 << 30




def _one_line(exc: BaseException) -> str:
    """A short one-line description of a (PyAV) exception, without errno and file name."""
    text = getattr(exc, "strerror", None) if isinstance(exc, av.FFmpegError) else None
    if not text:
        text = str(exc)
    text = " ".join(str(text).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def ffmpeg_url(path: PathLike) -> str:
    """The URL under which ffmpeg opens the local file `path` (str).

    ffmpeg reads 'take:2.mp4' as protocol 'take' and fails ('Protocol not found'); the `file:`
    prefix makes it the file protocol whatever the name holds, while ffmpeg still sees the
    name's extension (used to pick an output container and to help probing).
    """
    return "file:" + os.fspath(path)


def _open_input(name: str):
    """av.open a local file for reading (VideoError when ffmpeg cannot read it)."""
    try:
        return av.open(ffmpeg_url(name), mode="r")
    except LoraCodecError:
        raise
    except Exception as e:  # av.FFmpegError, OSError, UnicodeDecodeError, ...
        raise VideoError(
            f"{name}: not a readable video file (corrupt, truncated or unsupported: {_one_line(e)})"
        ) from None


# --------------------------------------------------------------------------------------------
# Reading: one small rule per function
# --------------------------------------------------------------------------------------------

_AVFMT_NOTIMESTAMPS = 0x0080  # libavformat/avformat.h: raw elementary streams (.h264, .hevc, ...)


def _is_cover_art(stream) -> bool:
    """An attached picture (album cover of an audio file), not a video."""
    def value(flag) -> int:
        return int(getattr(flag, "value", flag))  # an IntFlag, or PyAV < 17's own flag type

    try:
        return bool(value(stream.disposition) & value(av.stream.Disposition.attached_pic))
    except Exception:
        return False


def _is_default(stream) -> bool:
    try:
        return bool(int(getattr(stream.disposition, "value", stream.disposition)) & int(av.stream.Disposition.default))
    except Exception:
        return False


def _stored_size(stream) -> tuple[int, int]:
    try:
        return int(stream.codec_context.width), int(stream.codec_context.height)
    except Exception:
        return 0, 0


def choose_video_stream(container, name: str = "the file") -> tuple[Any, str | None]:
    """The video stream ffmpeg would pick, and a note naming it when there was a choice.

    Attached pictures (cover art) are not videos. Among the others: the one flagged `default`,
    then the one with the most pixels, then the first (ffmpeg's `av_find_best_stream` order).
    Raises VideoError when the file has no video stream.
    """
    videos = [s for s in container.streams.video if not _is_cover_art(s)]
    if not videos:
        kinds = sorted({s.type for s in container.streams})
        if container.streams.video:
            kinds = [k for k in kinds if k != "video"] + ["a cover image"]
        if kinds:
            raise VideoError(f"{name}: no video stream (only {' and '.join(kinds)})")
        raise VideoError(f"{name}: no streams found (empty, truncated or not a video file)")
    if len(videos) == 1:
        return videos[0], None

    def rank(s):
        w, h = _stored_size(s)
        return (_is_default(s), w * h, -s.index)

    best = max(videos, key=rank)
    w, h = _stored_size(best)
    why = "marked as the default stream" if _is_default(best) else "the largest picture"
    return best, (f"the file has {len(videos)} video streams; coding stream #{best.index} ({w}x{h}, {why}), "
                  "the one ffmpeg and players pick")


def _rate_ok(rate: Any) -> bool:
    try:
        return rate is not None and 0 < float(rate) <= _MAX_SANE_FPS
    except (TypeError, ValueError, ZeroDivisionError):
        return False


def _as_fraction(rate) -> Fraction:
    return Fraction(rate.numerator, rate.denominator).limit_denominator(1001000)


def has_timestamps(container) -> bool:
    """False for raw elementary streams (.h264, .hevc, ...): their demuxer invents timestamps."""
    try:
        return not int(container.format.flags) & _AVFMT_NOTIMESTAMPS
    except Exception:
        return True


def frame_rate(container, stream) -> tuple[Fraction, str | None]:
    """The stream's frame rate (frames per second) as ffmpeg reports it, and a note if it was guessed.

    In a container: the average rate, else ffmpeg's guessed rate, else the codec's timing (e.g. the
    H.264 SPS), else DEFAULT_FPS. A raw elementary stream has no timestamps (its demuxer assumes 25
    fps), so the codec's own timing comes first there, then the guessed rate. Rates above
    `_MAX_SANE_FPS` count as absent.
    """
    codec_rate = getattr(stream.codec_context, "framerate", None)
    if has_timestamps(container):
        order = ((stream.average_rate, None), (stream.guessed_rate, "guessed by ffmpeg from the timestamps"),
                 (codec_rate, "read from the video stream's own timing information"))
    else:
        order = ((codec_rate, "read from the video stream's own timing information"),
                 (stream.guessed_rate, "guessed by ffmpeg"))
    for candidate, how in order:
        if _rate_ok(candidate):
            fps = _as_fraction(candidate)
            if how is None:
                return fps, None
            kind = "a raw video stream without timestamps" if not has_timestamps(container) else \
                "the file declares no frame rate"
            return fps, f"{kind}: using {float(fps):g} fps, {how}"
    return DEFAULT_FPS, f"frame rate unknown; assuming {DEFAULT_FPS} fps"


def stream_duration(container, stream) -> float | None:
    """Seconds the stream lasts (its own duration, else the container's), None when not declared.

    An mp4 edit list is already applied (a cut that starts inside a GOP declares the cut's duration).
    """
    try:
        tb = stream.time_base
        if stream.duration is not None and tb is not None and stream.duration > 0:
            return float(stream.duration * tb)
        if container.duration is not None and container.duration > 0:
            return container.duration / av.time_base
    except Exception:
        pass
    return None


@dataclass(frozen=True)
class DisplayGeometry:
    """What size a person sees a video at.

    width, height: displayed size in square pixels (after the sample aspect ratio and rotation).
    stored_width, stored_height: size of the decoded pictures (coded samples).
    sar: sample aspect ratio (width of one stored sample / its height; 1 for square pixels).
    quarter_turns: counterclockwise quarter turns the display matrix asks for (0..3).
    """

    width: int
    height: int
    stored_width: int
    stored_height: int
    sar: Fraction = Fraction(1)
    quarter_turns: int = 0

    @property
    def unrotated_size(self) -> tuple[int, int]:
        """(width, height) after the sample aspect ratio, before rotation."""
        return (self.height, self.width) if self.quarter_turns % 2 else (self.width, self.height)


def displayed_geometry(stored_width: int, stored_height: int, sar: Any = None,
                       rotation_degrees: float = 0) -> DisplayGeometry:
    """The size a player shows for pictures of stored_width x stored_height samples.

    Non-square samples are made square by stretching one side, never by shrinking (no stored
    sample is lost): SAR > 1 widens (240x180 at 4:3 -> 320x180), SAR < 1 heightens
    (352x288 at 8:9 -> 352x324); sides are rounded to whole pixels. Then the display matrix's
    rotation (degrees counterclockwise, rounded to quarter turns) swaps the sides for 90/270.
    A missing, zero or absurd SAR (outside 1/16..16) counts as 1 (ffmpeg ignores such values too).
    Source: ISO/IEC 14496-10 Annex E (aspect_ratio_idc), ffmpeg's `setsar`/DAR = SAR x W / H.
    """
    try:
        ratio = Fraction(sar.numerator, sar.denominator) if sar is not None else Fraction(1)
    except (AttributeError, ZeroDivisionError, TypeError):
        ratio = Fraction(1)
    if not Fraction(1, 16) <= ratio <= 16:
        ratio = Fraction(1)
    w, h = int(stored_width), int(stored_height)
    if ratio > 1:
        w = max(1, int(round(w * ratio)))
    elif ratio < 1:
        h = max(1, int(round(h / ratio)))
    try:
        turns = int(round(float(rotation_degrees or 0) / 90.0)) % 4
    except (TypeError, ValueError):
        turns = 0
    if turns % 2:
        w, h = h, w
    return DisplayGeometry(width=w, height=h, stored_width=int(stored_width), stored_height=int(stored_height),
                           sar=ratio, quarter_turns=turns)


def frame_geometry(stream, frame) -> DisplayGeometry:
    """`displayed_geometry` of a decoded frame of `stream` (stream SAR, frame's display matrix)."""
    sar = getattr(stream, "sample_aspect_ratio", None) or getattr(stream.codec_context, "sample_aspect_ratio", None)
    try:
        rotation = float(frame.rotation or 0)
    except Exception:
        rotation = 0.0
    return displayed_geometry(frame.width, frame.height, sar, rotation)


def geometry_note(g: DisplayGeometry) -> list[str]:
    """Plain-words notes for the sample aspect ratio and rotation that `g` applies."""
    notes = []
    if g.sar != 1:
        w, h = g.unrotated_size
        notes.append(f"non-square pixels (sample aspect ratio {g.sar.numerator}:{g.sar.denominator}): stored "
                     f"{g.stored_width}x{g.stored_height}, shown by players as {w}x{h}; frames scaled to that shape")
    if g.quarter_turns:
        turn = {1: "90 degrees counterclockwise", 2: "180 degrees", 3: "90 degrees clockwise"}[g.quarter_turns]
        notes.append(f"rotated {turn} as the file's display matrix asks")
    return notes


# AVColorSpace (what a frame is tagged with) -> swscale colour matrix name
_SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}


def _frame_to_rgb(frame, **extra) -> np.ndarray:
    """frame -> uint8 RGB [H, W, 3] using the frame's tagged colour matrix and range (BT.601
    limited when untagged, like FFmpeg). Passed explicitly: older PyAV ignores the tags."""
    kwargs: dict[str, Any] = {"format": "rgb24", **extra}
    if not frame.format.is_rgb:
        try:
            matrix = _SWS_MATRIX.get(int(frame.colorspace))
        except Exception:
            matrix = None
        if matrix is not None:
            try:
                from av.video.reformatter import Colorspace

                if hasattr(Colorspace, matrix):
                    kwargs["src_colorspace"] = matrix
            except Exception:
                pass
        try:
            if int(frame.color_range) in (1, 2):
                kwargs["src_color_range"] = int(frame.color_range)
        except Exception:
            pass
    return frame.to_ndarray(**kwargs)


def display_rgb(frame, geometry: DisplayGeometry) -> np.ndarray:
    """A decoded frame as a person sees it: uint8 RGB [geometry.height, geometry.width, 3].

    Scales to the displayed shape (sample aspect ratio; bicubic, swscale), converts HDR (PQ/HLG)
    to SDR BT.709 (`colour.hdr_frame_to_sdr_rgb`) and other frames with their tagged matrix and
    range, then applies the rotation.
    """
    w, h = geometry.unrotated_size
    size = {} if (w, h) == (frame.width, frame.height) else {"width": w, "height": h,
                                                             "interpolation": "BICUBIC"}
    if colour.is_hdr(frame):
        rgb = colour.hdr_frame_to_sdr_rgb(frame, w, h)
    else:
        rgb = _frame_to_rgb(frame, **size)
    if geometry.quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=geometry.quarter_turns))
    return rgb


def colour_notes(fmt, first_frame) -> list[str]:
    """Notes on the conversion to 8-bit SDR RGB: bit depth, alpha, HDR tone mapping."""
    notes = []
    bits = max((c.bits for c in fmt.components), default=8)
    if bits > 8:
        notes.append(f"converted {bits}-bit ({fmt.name}) to 8-bit RGB")
    if any(c.is_alpha for c in fmt.components):
        notes.append(f"dropped the alpha channel ({fmt.name})")
    if colour.is_hdr(first_frame):
        notes.append(f"{colour.hdr_description(first_frame)} converted to standard range (SDR, BT.709 colours) "
                     "with the Hable tone curve, as ffmpeg's tonemap filter does; on an HDR screen the original "
                     "looks brighter")
    return notes


_FIELD_ORDER = {2: "top field first", 3: "bottom field first", 4: "top field first", 5: "bottom field first"}


def is_interlaced(stream, first_frame) -> bool:
    """True when the stream declares a field order (AVFieldOrder TT/BB/TB/BT) or its first frame
    is flagged interlaced."""
    try:
        if int(stream.codec_context.field_order) in _FIELD_ORDER:
            return True
    except Exception:
        pass
    return bool(getattr(first_frame, "interlaced_frame", False))


class Deinterlacer:
    """ffmpeg's `bwdif` filter (one frame out per frame in, field order from each frame's flags,
    only frames flagged interlaced are touched) in a PyAV filter graph. Output frames keep the
    input's times (`frame.time`, in the filter's own time base); the filter holds one frame back,
    so call `flush()` at the end."""

    def __init__(self, stream, first_frame):
        self.field_order = _FIELD_ORDER.get(int(getattr(stream.codec_context, "field_order", 0) or 0),
                                            "top field first" if getattr(first_frame, "top_field_first", True)
                                            else "bottom field first")
        self.time_base = stream.time_base or Fraction(1, 90000)
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(width=first_frame.width, height=first_frame.height,
                                    format=first_frame.format, time_base=self.time_base)
        bwdif = self.graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
        sink = self.graph.add("buffersink")
        src.link_to(bwdif)
        bwdif.link_to(sink)
        self.graph.configure()

    def _drain(self) -> list:
        out = []
        while True:
            try:
                f = self.graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
            if f.time_base is None:  # bwdif works in field units: its own time base (half the stream's) is kept
                f.time_base = self.time_base
            out.append(f)

    def push(self, frame) -> list:
        """Feed one decoded frame; return the de-interlaced frames now ready (0 or 1)."""
        if frame.pts is None:
            raise VideoError("cannot de-interlace a stream without timestamps")
        self.graph.push(frame)
        return self._drain()

    def flush(self) -> list:
        """The frames still held by the filter."""
        self.graph.push(None)
        return self._drain()


def _check_limits_before_decoding(name: str, stream, duration: float | None, fps: Fraction,
                                  start_seconds: float, max_frames: int | None, limits: Limits) -> None:
    """Refuse from metadata alone what is over `limits` or past the end (LimitError / VideoError)."""
    width, height = _stored_size(stream)
    if width * height > limits.max_pixels:
        raise LimitError(
            f"{name}: frames are {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}"
        )
    if duration is not None and duration > limits.max_seconds:
        raise LimitError(f"{name}: clip is {duration:.1f} s long, over the limit of {limits.max_seconds:g} s")
    if duration is not None and start_seconds > 0 and start_seconds >= duration:
        raise VideoError(f"{name}: start_seconds={start_seconds:g} is past the end of the clip ({duration:.2f} s)")
    total_est = None
    try:
        if stream.frames and stream.frames > 0:
            total_est = int(stream.frames)
    except Exception:
        total_est = None
    if total_est is None and duration is not None:
        total_est = int(math.ceil(duration * float(fps) - 1e-6))
    skip_est = int(start_seconds * float(fps))
    read_est = total_est
    if max_frames is not None:
        read_est = skip_est + max_frames if total_est is None else min(skip_est + max_frames, total_est)
    if read_est is not None and read_est > limits.max_frames_read:
        hint = "" if max_frames is not None else "; pass max_frames to read fewer"
        raise LimitError(
            f"{name}: reading it needs about {read_est} frames decoded, over the limit of "
            f"{limits.max_frames_read}{hint}"
        )
    if read_est is not None and width * height > 0:
        keep_est = max(read_est - skip_est, 1)
        mem = keep_est * width * height * 3
        if mem > limits.max_decoded_bytes:
            raise LimitError(
                f"{name}: {keep_est} frames of {width}x{height} need {_fmt_bytes(mem)} decoded, "
                f"over the limit of {_fmt_bytes(limits.max_decoded_bytes)}; pass max_frames to read fewer"
            )


@dataclass
class _Decoded:
    """What the decode loop leaves behind for the notes."""

    kept: list = field(default_factory=list)
    times: list = field(default_factory=list)  # seconds from the first decoded frame
    n_read: int = 0
    skipped: int = 0
    last_time: float = 0.0
    stop_reason: str | None = None
    stopped_by_max: bool = False
    resized: bool = False
    geometry: DisplayGeometry | None = None
    fmt: Any = None
    first_frame: Any = None
    deinterlaced: str | None = None  # the field order, when frames were de-interlaced


def _pictures(container, stream, name: str, limits: Limits, state: _Decoded):
    """Decoded pictures of `stream` in display order, de-interlaced when the stream is interlaced.

    Counts frames read against `limits.max_frames_read` and their size against `limits.max_pixels`
    (LimitError); a decoding failure part way ends the iteration with `state.stop_reason` set.
    """
    deint = None
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except LoraCodecError:
            raise
        except Exception as e:
            state.stop_reason = _one_line(e)
            break
        state.n_read += 1
        if state.n_read > limits.max_frames_read:
            raise LimitError(f"{name}: more than {limits.max_frames_read} frames decoded, over the limit")
        if frame.width * frame.height > limits.max_pixels:
            raise LimitError(f"{name}: frames are {frame.width}x{frame.height} = {frame.width * frame.height} "
                             f"pixels, over the limit of {limits.max_pixels}")
        if state.first_frame is None:
            state.first_frame = frame
            if is_interlaced(stream, frame) and frame.pts is not None:
                deint = Deinterlacer(stream, frame)
                state.deinterlaced = deint.field_order
        if deint is None:
            yield frame
        else:
            yield from deint.push(frame)
    if deint is not None:
        yield from deint.flush()


def _decode_clip(container, stream, name: str, fps: Fraction, *, start_seconds: float,
                 max_frames: int | None, limits: Limits) -> _Decoded:
    """Decode, skip to `start_seconds`, keep up to `max_frames` frames as displayed RGB."""
    state = _Decoded()
    half_frame = 0.5 / float(fps)
    t0 = None
    mem_used = 0
    index = 0
    for frame in _pictures(container, stream, name, limits, state):
        index += 1
        t = frame.time
        if t is None:  # raw streams: no timestamps
            t = (index - 1) / float(fps) + (t0 or 0.0)
        if t0 is None:
            t0 = t
        rel = state.last_time = t - t0
        if rel > limits.max_seconds:
            raise LimitError(f"{name}: clip is longer than the limit of {limits.max_seconds:g} s")
        if rel < start_seconds - half_frame:
            state.skipped += 1
            continue
        if max_frames is not None and len(state.kept) >= max_frames:
            state.stopped_by_max = True
            break
        if state.geometry is None:
            state.geometry, state.fmt = frame_geometry(stream, frame), frame.format
        elif (frame.width, frame.height) != (state.geometry.stored_width, state.geometry.stored_height):
            state.resized = True
        try:
            rgb = display_rgb(frame, state.geometry)
        except LoraCodecError:
            raise
        except Exception as e:
            state.stop_reason = f"cannot convert frame {state.n_read} to RGB ({_one_line(e)})"
            break
        mem_used += rgb.nbytes
        if mem_used > limits.max_decoded_bytes:
            raise LimitError(
                f"{name}: decoded frames need more than {_fmt_bytes(limits.max_decoded_bytes)}, "
                "over the limit; pass max_frames to read fewer"
            )
        state.kept.append(rgb)
        state.times.append(rel)
    return state


def missing_frames_note(decoded_end: float, duration: float | None, fps: Fraction) -> str | None:
    """A note when the decoded frames end more than a frame before the declared `duration`.

    decoded_end: seconds from the first frame to the end of the last decoded frame. Compares
    times, not counts: an mp4 edit list declares more samples than it shows, a timing it does not
    break.
    """
    if duration is None:
        return None
    period = 1.0 / float(fps)
    if decoded_end < duration - 1.5 * period:
        return (f"the file announces {duration:.2f} s but its frames end at {decoded_end:.2f} s "
                f"(about {int(round((duration - decoded_end) * float(fps)))} frames missing: truncated or "
                "damaged file?)")
    return None


def variable_rate_note(times: list[float], fps: Fraction) -> str | None:
    """A note when frame intervals vary by more than 1.5x (variable frame rate)."""
    if len(times) <= 2:
        return None
    d = np.diff(np.asarray(times))
    d = d[d > 0]
    if not d.size or d.max() <= 1.5 * d.min():
        return None
    span = times[-1] - times[0]
    measured = f", measured {(len(times) - 1) / span:.3g} fps" if span > 0 else ""
    return (f"variable frame rate (frame intervals {1000 * d.min():.0f}-{1000 * d.max():.0f} ms{measured}); "
            f"frames kept in order at the stream's rate {float(fps):g} fps")


def high_rate_note(fps: Fraction) -> str | None:
    """A note for high-speed recordings, whose coded frames cover only a short time."""
    if float(fps) <= 240:
        return None
    return f"high frame rate ({float(fps):g} fps, a high-speed recording): kept as declared; each frame lasts " \
           f"{1000 / float(fps):.2f} ms"


def reader_notes(d: _Decoded, *, fps: Fraction, duration: float | None, start_seconds: float,
                 max_frames: int | None, has_ts: bool) -> list[str]:
    """The notes about trimming, damage, geometry, colour, interlace and timing of a decoded clip."""
    notes = []
    T = len(d.kept)
    if d.skipped:
        notes.append(f"skipped {d.skipped} frames before the start time ({start_seconds:g} s)")
    if d.stopped_by_max:
        notes.append(f"trimmed to {T} frames ({T / float(fps):.2f} s), the most that are coded")
    elif d.stop_reason is not None:
        notes.append(f"decoding stopped early after {T} frames, file is damaged or truncated ({d.stop_reason})")
    elif has_ts:
        note = missing_frames_note(d.last_time + 1.0 / float(fps), duration, fps)
        if note:
            notes.append(note)
    notes += geometry_note(d.geometry)
    notes += colour_notes(d.fmt, d.first_frame)
    if d.deinterlaced:
        notes.append(f"interlaced video ({d.deinterlaced}) de-interlaced with ffmpeg's bwdif filter")
    if d.resized:
        w, h = d.geometry.width, d.geometry.height
        notes.append(f"frame size changes in the stream; resized all frames to {w}x{h}")
    for note in (variable_rate_note(d.times, fps), high_rate_note(fps)):
        if note:
            notes.append(note)
    return notes


def _check_read_args(start_seconds: Any, max_frames: Any) -> tuple[float, int | None]:
    try:
        start_seconds = float(start_seconds)
    except (TypeError, ValueError):
        raise LimitError(f"start_seconds must be a number, got {start_seconds!r}") from None
    if not math.isfinite(start_seconds) or start_seconds < 0:
        raise LimitError(f"start_seconds must be >= 0, got {start_seconds}")
    if max_frames is not None:
        if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)):
            raise LimitError(f"max_frames must be a whole number, got {max_frames!r}")
        max_frames = int(max_frames)
        if max_frames < 1:
            raise LimitError(f"max_frames must be >= 1, got {max_frames}")
    return start_seconds, max_frames


def _check_input_file(name: str, limits: Limits) -> None:
    """Refuse a missing, unreadable, empty, directory or over-size input (VideoError / LimitError)."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise VideoError(f"{name}: no such file") from None
    except OSError as e:
        raise VideoError(f"{name}: cannot access file ({_one_line(e)})") from None
    if os.path.isdir(name):
        raise VideoError(f"{name}: is a directory, not a video file")
    if st.st_size == 0:
        raise VideoError(f"{name}: file is empty")
    if st.st_size > limits.max_bytes:
        raise LimitError(
            f"{name}: file is {_fmt_bytes(st.st_size)}, over the limit of {_fmt_bytes(limits.max_bytes)}"
        )


def _guarded(name: str, container, work):
    """Run work(container), mapping PyAV/numpy failures to VideoError and closing the container."""
    try:
        return work(container)
    except LoraCodecError:
        raise
    except MemoryError:
        raise LimitError(f"{name}: not enough memory to decode the clip; pass max_frames to read fewer") from None
    except Exception as e:  # anything PyAV/numpy raises on a strange file
        raise VideoError(f"{name}: cannot read the video ({_one_line(e)})") from None
    finally:
        try:
            container.close()
        except Exception:
            pass


def read_video(
    path: PathLike,
    *,
    start_seconds: float = 0.0,
    max_frames: int | None = None,
    limits: Limits = Limits(),
) -> Clip:
    """Decode a video file to RGB frames as a person sees it played (see docs/INPUTS.md).

    The stream is the one ffmpeg picks (`choose_video_stream`); its rate is `frame_rate`'s;
    frames are de-interlaced (`Deinterlacer`), scaled to the displayed shape and rotated
    (`displayed_geometry`), HDR is tone-mapped to SDR BT.709 (`colour`). Frames before
    `start_seconds` (relative to the first frame) are decoded and skipped; decoding stops after
    `max_frames` kept frames. A file that breaks off part way (truncated, corrupt) yields the
    frames decoded before the break, with a note; none at all is an error. Every conversion
    gets a plain-words note in `Clip.notes`. Names with ':' are read as files, never as URLs.

    Raises VideoError (missing/unreadable file, no video stream, no frames) and LimitError
    (over `limits`, or invalid start/max_frames).
    """
    name = os.fspath(path)
    start_seconds, max_frames = _check_read_args(start_seconds, max_frames)
    _check_input_file(name, limits)
    container = _open_input(name)
    return _guarded(name, container, lambda c: _read_container(
        c, name, start_seconds=start_seconds, max_frames=max_frames, limits=limits))


def _read_container(container, name, *, start_seconds, max_frames, limits) -> Clip:
    """read_video on an open container: stream choice, timing, limits, decode, notes."""
    stream, stream_note = choose_video_stream(container, name)
    try:
        stream.thread_type = "AUTO"
    except Exception:
        pass
    fps, rate_note = frame_rate(container, stream)
    duration = stream_duration(container, stream)
    _check_limits_before_decoding(name, stream, duration, fps, start_seconds, max_frames, limits)
    d = _decode_clip(container, stream, name, fps, start_seconds=start_seconds, max_frames=max_frames,
                     limits=limits)
    if not d.kept:
        if d.stop_reason is not None:
            raise VideoError(f"{name}: no video frame could be decoded ({d.stop_reason})")
        if d.n_read > 0 and d.skipped:
            raise VideoError(f"{name}: start_seconds={start_seconds:g} is past the last frame "
                             f"(at {d.last_time:.2f} s)")
        raise VideoError(f"{name}: no video frames could be decoded (empty or truncated file)")
    notes = [n for n in (stream_note, rate_note) if n]
    notes += reader_notes(d, fps=fps, duration=duration, start_seconds=start_seconds, max_frames=max_frames,
                          has_ts=has_timestamps(container))
    frames = np.stack(d.kept)
    T, H, W = frames.shape[:3]
    return Clip(frames=frames, fps=fps, src_width=int(W), src_height=int(H), src_frames=int(T), notes=notes)


# --------------------------------------------------------------------------------------------
# Probing: what a quick look at a file says (no full decode)
# --------------------------------------------------------------------------------------------


@dataclass
class VideoInfo:
    """A quick look at a video file (`probe_video`).

    width, height: displayed size (what `read_video` returns; sample aspect ratio and rotation applied).
    fps: frame rate as `read_video` uses it. seconds: declared duration (None: not declared).
    frames: declared or estimated frame count (None: unknown, e.g. a raw stream).
    geometry: the full DisplayGeometry. notes: what reading will convert (stream, rate, geometry, colour).
    """

    width: int
    height: int
    fps: Fraction
    seconds: float | None
    frames: int | None
    geometry: DisplayGeometry
    notes: list[str] = field(default_factory=list)


def probe_video(path: PathLike, limits: Limits | None = None) -> VideoInfo:
    """Open `path`, pick its stream and decode one frame to learn what `read_video` will give.

    Raises VideoError when the file is missing or not a video ffmpeg can decode, LimitError when
    over `limits.max_bytes` (default Limits()).
    """
    name = os.fspath(path)
    _check_input_file(name, limits or Limits())
    return _guarded(name, _open_input(name), lambda c: _probe_container(c, name))


def _probe_container(container, name: str) -> VideoInfo:
    stream, stream_note = choose_video_stream(container, name)
    fps, rate_note = frame_rate(container, stream)
    seconds = stream_duration(container, stream)
    first = None
    for first in container.decode(stream):
        break
    if first is None:
        raise VideoError(f"{name}: no video frames could be decoded (empty or truncated file)")
    g = frame_geometry(stream, first)
    frames = None
    if has_timestamps(container):
        frames = int(round(seconds * float(fps))) if seconds else (int(stream.frames) if stream.frames else None)
    notes = [n for n in (stream_note, rate_note) if n] + geometry_note(g) + colour_notes(first.format, first)
    if is_interlaced(stream, first):
        notes.append("interlaced video: will be de-interlaced with ffmpeg's bwdif filter")
    return VideoInfo(width=g.width, height=g.height, fps=fps, seconds=seconds, frames=frames, geometry=g,
                     notes=notes)


def is_video_file(path: PathLike) -> bool:
    """True when ffmpeg recognises `path`'s content as holding a video stream (not only cover art):
    the content decides, not the extension. Nothing is decoded, so a damaged video still counts
    (reading it then says what is wrong). UTF-8 text is never a video (a list of clips is text)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if _looks_like_text(head):
        return False
    try:
        container = _open_input(name)
    except LoraCodecError:
        return False
    try:
        choose_video_stream(container, name)
        return True
    except Exception:
        return False
    finally:
        container.close()


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 text without control characters other than tab/newline/CR (a list file, notes)."""
    if not head:
        return True
    if head.startswith(b"YUV4MPEG2"):  # raw y4m video: a text header, then pixels
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a multi-byte character cut at the end
            return False
        text = head[:e.start].decode("utf-8")
    return all(ch >= " " or ch in "\t\n\r" for ch in text)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def check_frames(frames: Any, what: str = "frames") -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise VideoError(f"{what} must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise VideoError(f"{what} must have shape [T, H, W, 3] with T, H, W >= 1, got {list(frames.shape)}")
    if frames.dtype != np.uint8:
        raise VideoError(f"{what} must be uint8, got {frames.dtype}")
    return frames


# Tiny frames break the encoders bundled with PyAV: libx265 rejects sides < 16 and corrupts the
# heap (process abort) on some sides < 64 (e.g. 32x48); libsvtav1 hangs on some (e.g. 68x16).
# Such frames are padded up to 64 px; no failure was seen from 64 px up.
_MIN_SIDE = {"libx265": 64, "libsvtav1": 64}


def _pad_for_codec(frames: np.ndarray, codec: str) -> np.ndarray:
    """Pad height/width to even sizes (yuv420p needs it), and up to the codec's minimum side,
    by repeating the last row/column."""
    T, H, W, _ = frames.shape
    m = _MIN_SIDE.get(codec, 2)
    H2, W2 = max(H + H % 2, m), max(W + W % 2, m)
    if (H2, W2) != (H, W):
        frames = np.pad(frames, ((0, 0), (0, H2 - H), (0, W2 - W), (0, 0)), mode="edge")
    return frames


def _fps_fraction(fps: Any) -> Fraction:
    try:
        f = Fraction(fps).limit_denominator(1001000)
    except (TypeError, ValueError, ZeroDivisionError):
        raise VideoError(f"invalid frame rate {fps!r}") from None
    if not _rate_ok(f):
        raise VideoError(f"invalid frame rate {fps!r}; must be between 0 and {_MAX_SANE_FPS} fps")
    return f


@contextlib.contextmanager
def _thread_scheduling_kept():
    """Put the calling thread's scheduling policy back after an encode. SVT-AV1 (libsvtav1) switches
    the thread that opens an encoder to real-time scheduling (SCHED_FIFO, priority 99: its
    `enc_switch_to_real_time`, EbEncHandle.c) wherever it may (root, CAP_SYS_NICE, as in most
    containers) and never switches back. The threads that thread creates and the processes it starts
    afterwards inherit it (a test's browser and its driver, a data loader), and a busy real-time
    process starves everything else on the machine: the browser tests hung at full CPU after an AV1
    baseline in the same pytest process."""
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)  # 0: the calling thread (Linux)
    except (AttributeError, OSError):  # no POSIX scheduling API here (not Linux)
        before = None
    try:
        yield
    finally:
        if before is not None:
            try:
                if (os.sched_getscheduler(0), os.sched_getparam(0)) != before:
                    os.sched_setscheduler(0, *before)
            except OSError as exc:  # lowering one's own priority is always allowed; say so if it was not
                warnings.warn(f"could not restore this thread's scheduling after an encode ({exc})", RuntimeWarning,
                              stacklevel=3)


def _encode(
    target: Union[str, BinaryIO],
    frames: np.ndarray,
    fps: Fraction,
    *,
    codec: str,
    options: dict[str, str],
    format: str | None = None,
    container_options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
) -> int:
    """Encode uint8 RGB frames (even sizes) into `target`; return the payload (packet) bytes.

    Converts RGB -> BT.709 limited range and tags the stream so decoders agree. The calling thread
    keeps its scheduling (`_thread_scheduling_kept`). Raises VideoError on any PyAV failure.
    """
    with _thread_scheduling_kept():
        return _encode_frames(target, frames, fps, codec=codec, options=options, format=format,
                              container_options=container_options, pix_fmt=pix_fmt)


def _encode_frames(target, frames, fps, *, codec, options, format, container_options, pix_fmt) -> int:
    payload = 0
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner to stderr otherwise
    try:
        container = av.open(target, mode="w", format=format, options=container_options or {})
    except Exception as e:
        raise VideoError(f"cannot create the output ({_one_line(e)})") from None
    try:
        try:
            stream = container.add_stream(codec, rate=fps)
        except Exception as e:
            raise VideoError(f"codec {codec} is not available in this PyAV build ({_one_line(e)})") from None
        T, H, W, _ = frames.shape
        stream.width, stream.height = W, H
        stream.pix_fmt = pix_fmt
        cc = stream.codec_context
        rgb_out = pix_fmt.startswith(("gbr", "rgb", "bgr"))
        cc.colorspace = 0 if rgb_out else _WRITE_TAG  # AVCOL_SPC_RGB: samples are R, G, B
        cc.color_primaries = _WRITE_TAG
        cc.color_trc = _WRITE_TAG
        cc.color_range = 2 if rgb_out else 1  # full ("pc") for RGB, limited ("tv") for YUV
        if codec == "libx265":
            try:
                stream.codec_tag = "hvc1"  # what Safari/QuickTime want for HEVC in mp4
            except Exception:
                pass
        stream.options = dict(options)
        for i in range(T):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            if rgb_out:
                vf = vf.reformat(format=pix_fmt)
            else:
                vf = vf.reformat(format=pix_fmt, dst_colorspace=_WRITE_MATRIX, dst_color_range="MPEG")
            vf.pts = i
            for packet in stream.encode(vf):
                payload += packet.size
                container.mux(packet)
        for packet in stream.encode(None):
            payload += packet.size
            container.mux(packet)
    except LoraCodecError:
        try:
            container.close()
        except Exception:
            pass
        raise
    except Exception as e:
        try:
            container.close()
        except Exception:
            pass
        raise VideoError(f"encoding with {codec} failed ({_one_line(e)})") from None
    try:
        container.close()
    except Exception as e:
        raise VideoError(f"finishing the output failed ({_one_line(e)})") from None
    return payload


def _decode_bytes(data: bytes) -> np.ndarray:
    """Decode an in-memory video file to uint8 RGB [T, H, W, 3] (VideoError on failure)."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            out = []
            for frame in container.decode(stream):
                out.append(_frame_to_rgb(frame))
    except Exception as e:
        raise VideoError(f"cannot decode the encoded stream ({_one_line(e)})") from None
    if not out:
        raise VideoError("the encoded stream has no frames")
    return np.stack(out)


@dataclass(frozen=True)
class OutputKind:
    """How `write_video` writes a file of one extension."""

    description: str
    codec: str | None  # None: a still image written by `_write_png`
    pix_fmt: str
    lossless: bool = False


# What `write_video` writes, by extension. H.264 plays in browsers; FFV1 keeps RGB bit for bit (for
# evaluation: no second lossy coding between the decoder and the metrics); PNG holds one picture.
OUTPUT_KINDS = {
    ".mp4": OutputKind("H.264 in MP4 (plays in browsers)", "libx264", "yuv420p"),
    ".m4v": OutputKind("H.264 in MP4", "libx264", "yuv420p"),
    ".mov": OutputKind("H.264 in QuickTime", "libx264", "yuv420p"),
    ".mkv": OutputKind("FFV1 in Matroska (lossless RGB, for evaluation)", "ffv1", "bgr0", lossless=True),
    ".png": OutputKind("PNG still image (one-frame codes)", None, "rgb24", lossless=True),
}


def output_kind(path: PathLike) -> OutputKind:
    """The OutputKind of `path`'s extension (VideoError for an extension `write_video` does not write)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in OUTPUT_KINDS:
        known = ", ".join(f"{e} ({k.description})" for e, k in OUTPUT_KINDS.items())
        raise VideoError(f"{os.fspath(path)}: cannot write '{ext or 'no extension'}' files; use one of {known}")
    return OUTPUT_KINDS[ext]


def check_writable(path: PathLike) -> str:
    """Check that a file can be created at `path` (its folder exists and is writable, it is not a folder);
    return the path as str. Raises VideoError. Call before long work (sampling, fitting)."""
    name = os.fspath(path)
    if not name:
        raise VideoError("empty output file name")
    if os.path.isdir(name):
        raise VideoError(f"{name}: is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(parent):
        raise VideoError(f"{name}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(name) and not os.access(name, os.W_OK)):
        raise VideoError(f"{name}: no permission to write there")
    return name


def check_video_output(path: PathLike, frames: int | None = None) -> OutputKind:
    """Check, before any sampling, that `write_video(path, ...)` can write `frames` frames there:
    a known extension (`OUTPUT_KINDS`), one frame for a PNG, a writable folder. Raises VideoError."""
    kind = output_kind(path)
    if kind.codec is None and frames is not None and frames != 1:
        raise VideoError(f"{os.fspath(path)}: a PNG holds one picture but this has {frames} frames; "
                         "write .mp4 (or .mkv for lossless)")
    check_writable(path)
    return kind


def _encoder_options(codec: str, crf: int) -> dict[str, str]:
    """Encoder options that make the output bytes depend only on the frames.

    * libx264 `mbtree=0`: x264's macroblock-tree rate control (its SIMD propagate code) reads
      memory it never wrote, so with it the same frames gave different H.264 bytes from one process
      to the next, depending on what the heap held (decoded frames up to 18 levels apart). Measured
      at 832x480: 3 different files from 3 processes with mbtree, 1 without (same with
      `rc-lookahead=0` or `no-asm`); tests/test_determinism.py. Cost: mbtree's bit savings at equal
      crf, a few percent; these files are for viewing, not for the rate comparison.
    * threads=1: the encoders choose their thread count from the machine's cores and the split
      changes the bitstream, so one thread gives the same bytes on every machine.
    """
    if codec == "ffv1":
        return {"threads": "1", "level": "3", "slicecrc": "1"}
    options = {"crf": str(crf), "threads": "1"}
    if codec in ("libx264", "libx265"):
        options["preset"] = "medium"
    if codec == "libx264":
        options["x264-params"] = "mbtree=0"
    if codec == "libx265":
        options["x265-params"] = "log-level=error:pools=none:frame-threads=1"
    return options


def _png_bytes(frame: np.ndarray) -> bytes:
    """One uint8 RGB frame [H, W, 3] as PNG bytes (PyAV's png encoder)."""
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
    cc.time_base = Fraction(1, 1)
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    vf.pts = 0
    data = b"".join(bytes(p) for p in cc.encode(vf)) + b"".join(bytes(p) for p in cc.encode(None))
    if not data:
        raise VideoError("the PNG encoder gave no data")
    return data


def write_video(
    path: PathLike,
    frames_uint8: np.ndarray,
    fps: Fraction,
    *,
    codec: str | None = None,
    crf: int = 18,
) -> None:
    """Write uint8 RGB frames [T, H, W, 3]; the kind of file follows the extension (`OUTPUT_KINDS`).

    .mp4/.m4v/.mov (default codec libx264; `codec` may name libx265 etc.): yuv420p, BT.709
    tagged, `crf`; odd heights/widths are padded by one repeated row/column (and sides under
    64 px up to 64 for libx265/libsvtav1, whose bundled builds crash or hang on some tiny
    sizes); `+faststart` (index at the front, so playback starts before the download ends).
    .mkv: FFV1, RGB (gbrp), lossless: reading it back gives the frames bit for bit.
    .png: one frame (a still image; VideoError for more).
    The same frames give byte-identical files in every process (one encoder thread). Names with
    ':' are files, never URLs. A failed write leaves no partial file. Raises VideoError.
    """
    name = os.fspath(path)
    frames = check_frames(frames_uint8)
    kind = check_video_output(name, frames.shape[0])
    rate = _fps_fraction(fps)
    try:
        crf_i = int(crf)
    except (TypeError, ValueError):
        raise VideoError(f"crf must be a whole number, got {crf!r}") from None
    existed = os.path.exists(name)
    try:
        if kind.codec is None:
            data = _png_bytes(frames[0])
            with open(name, "wb") as f:
                f.write(data)
            return
        codec = kind.codec if (codec is None or kind.lossless) else codec
        frames = _pad_for_codec(frames, codec) if kind.pix_fmt.startswith("yuv") else frames
        ext = os.path.splitext(name)[1].lower()
        # bitexact: no random Matroska segment UID, no library version strings, so that the same frames
        # give the same bytes in every process
        container_options = {"fflags": "+bitexact"}
        if ext in (".mp4", ".mov", ".m4v"):
            container_options["movflags"] = "+faststart"
        _encode(ffmpeg_url(name), frames, rate, codec=codec, options=_encoder_options(codec, crf_i),
                container_options=container_options, pix_fmt=kind.pix_fmt)
    except (LoraCodecError, OSError) as e:
        if not existed:
            try:
                os.remove(name)
            except OSError:
                pass
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise VideoError(f"{name}: {msg}") from None


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def coded_geometry(
    src_frames: int,
    src_height: int,
    src_width: int,
    *,
    native_frames: int,
    native_height: int,
    native_width: int,
    multiple: int = 16,
) -> tuple[int, int, int]:
    """The (frames, height, width) the model codes a source clip at.

    frames: the largest 4k+1 <= min(src_frames, native_frames), at least 1.
    size: the native size, oriented like the source: a portrait source (h > w) gets the long
    native side as its height (480x832 native -> height 832, width 480); landscape and square
    sources get the native landscape size (height = short side) when the native size is
    landscape, or the native size unchanged when it is portrait/square.
    """
    if src_frames < 1 or src_height < 1 or src_width < 1:
        raise VideoError(
            f"clip has no frames or no pixels ({src_frames} frames of {src_width}x{src_height})"
        )
    if native_frames < 1 or native_height < 1 or native_width < 1 or multiple < 1:
        raise ValueError("native geometry and multiple must be positive")
    if native_height % multiple or native_width % multiple:
        raise ValueError(
            f"native size {native_width}x{native_height} is not a multiple of {multiple}"
        )
    n = min(int(src_frames), int(native_frames))
    frames = max(1, ((n - 1) // 4) * 4 + 1)
    long_side, short_side = max(native_height, native_width), min(native_height, native_width)
    if src_height > src_width:
        height, width = long_side, short_side
    elif native_height <= native_width:
        height, width = native_height, native_width
    else:
        height, width = short_side, long_side
    return frames, height, width


def _writable(a: np.ndarray) -> np.ndarray:
    """`a` as a C-contiguous array torch can share: a copy when it is read-only (np.asarray of a Pillow
    picture is), since torch.from_numpy warns on those."""
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


def fit_to_geometry(frames_uint8: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    """First `frames` frames, scaled (aspect kept) to cover height x width, centre-cropped.

    The crop window is chosen in source pixels first and only that window is resized
    (bicubic with antialias, clamped), so extreme aspect ratios (4000x10) and tiny sources
    (1x1) need no huge intermediate. Sub-pixel rounding of the window can stretch the
    aspect ratio by at most one source pixel.
    """
    src = check_frames(frames_uint8, "frames_uint8")
    if frames < 1 or height < 1 or width < 1:
        raise ValueError("frames, height and width must be >= 1")
    T, H, W, _ = src.shape
    if T < frames:
        raise VideoError(f"clip has {T} frames, fewer than the {frames} needed")
    src = src[:frames]
    scale = max(height / H, width / W)
    crop_h = min(H, max(1, int(round(height / scale))))
    crop_w = min(W, max(1, int(round(width / scale))))
    y0 = (H - crop_h) // 2
    x0 = (W - crop_w) // 2
    src = src[:, y0:y0 + crop_h, x0:x0 + crop_w]
    if (crop_h, crop_w) == (height, width):
        return _writable(src)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    # chunk so that the float intermediates stay around <= 256 MB
    per_frame = 4 * 3 * (crop_h * crop_w + height * width)
    chunk = max(1, (256 << 20) // max(per_frame, 1))
    with torch.no_grad():
        for i in range(0, frames, chunk):
            x = torch.from_numpy(_writable(src[i:i + chunk])).permute(0, 3, 1, 2).float()
            y = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
            y = y.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1)
            out[i:i + chunk] = y.numpy()
    return out


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------


def video_to_tensor(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [3, T, H, W] in [-1, 1]."""
    frames = check_frames(frames_uint8, "frames_uint8")
    x = torch.from_numpy(_writable(frames)).permute(3, 0, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def tensor_to_video(x: torch.Tensor) -> np.ndarray:
    """float [3, T, H, W] (or [1, 3, T, H, W]) in [-1, 1] -> uint8 [T, H, W, 3] (clamped)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 5 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"expected shape [3, T, H, W], got {list(x.shape)}")
    y = x.detach().to(device="cpu", dtype=torch.float32)
    y = ((y.clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
    return np.ascontiguousarray(y.permute(1, 2, 3, 0).numpy())
