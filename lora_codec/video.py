"""Video I/O (PyAV), the model's geometry rules, and frame <-> tensor conversion.

Everything a user can get wrong (missing file, not a video, audio only, no frames, over a
limit) raises a one-line `VideoError` / `LimitError`; PyAV and numpy exceptions never escape.

Colour: frames are 8-bit RGB in memory. Reading converts with the colour matrix the stream is
tagged with (BT.601 when untagged, as FFmpeg does) and its tagged range. Writing converts RGB
to BT.709 limited-range yuv420p and tags the stream as such, so browsers, FFmpeg and
`read_video` all decode it the same way (with PyAV < 17, whose YUV -> RGB conversion ignores
the tags, BT.601 is written and tagged instead).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO, Union

import av
import numpy as np
import torch
import torch.nn.functional as F

from .errors import LimitError, LoraCodecError, VideoError

__all__ = [
    "Clip",
    "Limits",
    "read_video",
    "write_video",
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
_MAX_SANE_FPS = 1000

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Clip:
    """A decoded clip.

    frames: uint8 [T, H, W, 3] RGB (after rotation metadata is applied).
    fps: the stream's average frame rate (guessed rate, then 16, when absent).
    src_width / src_height: size of `frames` (display orientation).
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


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _one_line(exc: BaseException) -> str:
    """A short one-line description of a (PyAV) exception, without errno and file name."""
    text = getattr(exc, "strerror", None) if isinstance(exc, av.FFmpegError) else None
    if not text:
        text = str(exc)
    text = " ".join(str(text).split())
    return text or type(exc).__name__


def _rate_ok(rate: Any) -> bool:
    try:
        return rate is not None and 0 < float(rate) <= _MAX_SANE_FPS
    except (TypeError, ValueError, ZeroDivisionError):
        return False


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_video(
    path: PathLike,
    *,
    start_seconds: float = 0.0,
    max_frames: int | None = None,
    limits: Limits = Limits(),
) -> Clip:
    """Decode the first video stream of `path` to RGB frames.

    Frames before `start_seconds` (relative to the first frame) are decoded and skipped;
    decoding stops after `max_frames` kept frames. A file that breaks off part way (truncated,
    corrupt) yields the frames decoded before the break, with a note; none at all is an error.

    Raises VideoError (missing/unreadable file, no video stream, no frames) and LimitError
    (over `limits`, or invalid start/max_frames).
    """
    name = os.fspath(path)
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
            f"{name}: file is {_fmt_bytes(st.st_size)}, over the limit of "
            f"{_fmt_bytes(limits.max_bytes)}"
        )

    try:
        container = av.open(name, mode="r")
    except LoraCodecError:
        raise
    except Exception as e:  # av.FFmpegError, OSError, UnicodeDecodeError, ...
        raise VideoError(
            f"{name}: not a readable video file (corrupt, truncated or unsupported: {_one_line(e)})"
        ) from None
    try:
        return _read_container(
            container, name, start_seconds=start_seconds, max_frames=max_frames, limits=limits
        )
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


def _is_cover_art(stream) -> bool:
    """An attached picture (album cover of an audio file), not a video."""
    def value(flag) -> int:
        return int(getattr(flag, "value", flag))  # an IntFlag, or PyAV < 17's own flag type

    try:
        return bool(value(stream.disposition) & value(av.stream.Disposition.attached_pic))
    except Exception:
        return False


def _read_container(container, name, *, start_seconds, max_frames, limits) -> Clip:
    notes: list[str] = []
    videos = [s for s in container.streams.video if not _is_cover_art(s)]
    if not videos:
        kinds = sorted({s.type for s in container.streams})
        if container.streams.video:
            kinds = [k for k in kinds if k != "video"] + ["a cover image"]
        if kinds:
            raise VideoError(f"{name}: no video stream (only {' and '.join(kinds)})")
        raise VideoError(f"{name}: no streams found (empty, truncated or not a video file)")
    stream = videos[0]
    if len(videos) > 1:
        notes.append(f"file has {len(videos)} video streams; using the first")
    try:
        stream.thread_type = "AUTO"
    except Exception:
        pass

    # ---- metadata checks, before decoding anything
    try:
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    except Exception:
        width = height = 0
    if width * height > limits.max_pixels:
        raise LimitError(
            f"{name}: frames are {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels}"
        )

    tb = stream.time_base
    duration = None
    try:
        if stream.duration is not None and tb is not None and stream.duration > 0:
            duration = float(stream.duration * tb)
        elif container.duration is not None and container.duration > 0:
            duration = container.duration / av.time_base
    except Exception:
        duration = None
    if duration is not None and duration > limits.max_seconds:
        raise LimitError(
            f"{name}: clip is {duration:.1f} s long, over the limit of {limits.max_seconds:g} s"
        )

    fps = None
    for candidate, label in ((stream.average_rate, None), (stream.guessed_rate, "guessed")):
        if _rate_ok(candidate):
            fps = Fraction(candidate.numerator, candidate.denominator).limit_denominator(1001000)
            if label:
                notes.append(f"no average frame rate in the file; using the {label} rate {float(fps):g} fps")
            break
    if fps is None:
        fps = DEFAULT_FPS
        notes.append(f"frame rate unknown; assuming {DEFAULT_FPS} fps")

    if duration is not None and start_seconds > 0 and start_seconds >= duration:
        raise VideoError(
            f"{name}: start_seconds={start_seconds:g} is past the end of the clip ({duration:.2f} s)"
        )

    total_est = None
    try:
        if stream.frames and stream.frames > 0:
            total_est = int(stream.frames)
    except Exception:
        total_est = None
    count_known = total_est is not None  # an explicit frame count, not a duration estimate
    if total_est is None and duration is not None:
        total_est = int(math.ceil(duration * float(fps) - 1e-6))
    skip_est = int(start_seconds * float(fps))
    if max_frames is not None:
        read_est = skip_est + max_frames
        if total_est is not None:
            read_est = min(read_est, total_est)
    else:
        read_est = total_est
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

    # ---- decode
    kept: list[np.ndarray] = []
    times: list[float] = []
    n_read = 0
    skipped = 0
    t0 = None
    stop_reason = None
    stopped_by_max = False
    src_fmt = None
    rotation = 0
    size0 = None
    resized = False
    half_frame = 0.5 / float(fps)
    mem_used = 0
    frame_iter = container.decode(stream)
    while True:
        try:
            frame = next(frame_iter)
        except StopIteration:
            break
        except LoraCodecError:
            raise
        except Exception as e:
            stop_reason = _one_line(e)
            break
        n_read += 1
        if n_read > limits.max_frames_read:
            raise LimitError(
                f"{name}: more than {limits.max_frames_read} frames decoded, over the limit"
                + ("" if max_frames is not None else "; pass max_frames to read fewer")
            )
        fw, fh = frame.width, frame.height
        if fw * fh > limits.max_pixels:
            raise LimitError(
                f"{name}: frames are {fw}x{fh} = {fw * fh} pixels, over the limit of {limits.max_pixels}"
            )
        t = frame.time
        if t is None:
            t = (n_read - 1) / float(fps) + (t0 or 0.0)
        if t0 is None:
            t0 = t
        rel = t - t0
        if rel > limits.max_seconds:
            raise LimitError(f"{name}: clip is longer than the limit of {limits.max_seconds:g} s")
        if rel < start_seconds - half_frame:
            skipped += 1
            continue
        if max_frames is not None and len(kept) >= max_frames:
            stopped_by_max = True
            break

        if src_fmt is None:
            src_fmt = frame.format
            try:
                rotation = int(round(float(frame.rotation or 0) / 90.0)) % 4
            except Exception:
                rotation = 0
        if size0 is None:
            size0 = (fw, fh)
        try:
            if (fw, fh) != size0:
                resized = True
                rgb = _frame_to_rgb(frame, width=size0[0], height=size0[1])
            else:
                rgb = _frame_to_rgb(frame)
        except LoraCodecError:
            raise
        except Exception as e:
            stop_reason = f"cannot convert frame {n_read} to RGB ({_one_line(e)})"
            break
        if rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation))
        mem_used += rgb.nbytes
        if mem_used > limits.max_decoded_bytes:
            raise LimitError(
                f"{name}: decoded frames need more than {_fmt_bytes(limits.max_decoded_bytes)}, "
                "over the limit; pass max_frames to read fewer"
            )
        kept.append(rgb)
        times.append(rel)

    if not kept:
        if stop_reason is not None:
            raise VideoError(f"{name}: no video frame could be decoded ({stop_reason})")
        if n_read > 0 and skipped == n_read:
            raise VideoError(
                f"{name}: start_seconds={start_seconds:g} is past the last frame "
                f"(at {rel:.2f} s)"
            )
        raise VideoError(f"{name}: no video frames could be decoded (empty or truncated file)")

    frames = np.stack(kept)
    T, H, W = frames.shape[:3]

    # ---- notes
    if skipped:
        notes.append(f"skipped {skipped} frames before start_seconds={start_seconds:g}")
    if stopped_by_max:
        more = f" of about {total_est}" if total_est else ""
        notes.append(f"trimmed to {T} frames{more} (max_frames={max_frames})")
    if stop_reason is None and not stopped_by_max and count_known and skipped + T < total_est - 1:
        notes.append(
            f"the file announces about {total_est} frames but only {skipped + T} could be decoded "
            "(truncated or damaged file?)"
        )
    if stop_reason is not None:
        notes.append(f"decoding stopped early after {T} frames, file is damaged or truncated ({stop_reason})")
    if src_fmt is not None:
        bits = max((c.bits for c in src_fmt.components), default=8)
        if bits > 8:
            notes.append(f"converted {bits}-bit ({src_fmt.name}) to 8-bit RGB")
        if any(c.is_alpha for c in src_fmt.components):
            notes.append(f"dropped the alpha channel ({src_fmt.name})")
    if rotation:
        turn = {1: "90 degrees counterclockwise", 2: "180 degrees", 3: "90 degrees clockwise"}[rotation]
        notes.append(f"rotated {turn} as the file's display matrix asks")
    if resized:
        notes.append(f"frame size changes in the stream; resized all frames to {size0[0]}x{size0[1]}")
    if len(times) > 2:
        d = np.diff(np.asarray(times))
        d = d[d > 0]
        if d.size and d.max() > 1.5 * d.min():
            span = times[-1] - times[0]
            measured = f", measured {(len(times) - 1) / span:.3g} fps" if span > 0 else ""
            notes.append(
                f"variable frame rate (frame intervals {1000 * d.min():.0f}-{1000 * d.max():.0f} ms"
                f"{measured}); frames kept in order at the stream's rate {float(fps):g} fps"
            )

    return Clip(frames=frames, fps=fps, src_width=int(W), src_height=int(H), src_frames=int(T), notes=notes)


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

    Converts RGB -> BT.709 limited range and tags the stream so decoders agree.
    Raises VideoError on any PyAV failure.
    """
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
        cc.colorspace = _WRITE_TAG
        cc.color_primaries = _WRITE_TAG
        cc.color_trc = _WRITE_TAG
        cc.color_range = 1  # limited ("tv")
        if codec == "libx265":
            try:
                stream.codec_tag = "hvc1"  # what Safari/QuickTime want for HEVC in mp4
            except Exception:
                pass
        stream.options = dict(options)
        for i in range(T):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
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


def write_video(
    path: PathLike,
    frames_uint8: np.ndarray,
    fps: Fraction,
    *,
    codec: str = "libx264",
    crf: int = 18,
) -> None:
    """Write uint8 RGB frames [T, H, W, 3] as a browser-playable file (mp4 + H.264 by default).

    yuv420p, BT.709 tagged; odd heights/widths are padded by one repeated row/column (and
    sides under 64 px up to 64 for libx265/libsvtav1, whose bundled builds crash or hang
    on some tiny sizes);
    mp4/mov get `+faststart` (index at the front, so playback starts before the download ends).
    The container is chosen from the file extension. A failed write leaves no partial file.
    """
    name = os.fspath(path)
    frames = _pad_for_codec(check_frames(frames_uint8), codec)
    rate = _fps_fraction(fps)
    try:
        crf_i = int(crf)
    except (TypeError, ValueError):
        raise VideoError(f"crf must be a whole number, got {crf!r}") from None
    ext = os.path.splitext(name)[1].lower()
    container_options = {"movflags": "+faststart"} if ext in (".mp4", ".mov", ".m4v") else {}
    options = {"crf": str(crf_i)}
    if codec in ("libx264", "libx265"):
        options["preset"] = "medium"
    if codec == "libx265":
        options["x265-params"] = "log-level=error"
    parent = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(parent):
        raise VideoError(f"{name}: the folder {parent} does not exist")
    existed = os.path.exists(name)
    try:
        _encode(name, frames, rate, codec=codec, options=options, container_options=container_options)
    except LoraCodecError as e:
        if not existed:
            try:
                os.remove(name)
            except OSError:
                pass
        raise VideoError(f"{name}: {e}") from None


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
        return np.ascontiguousarray(src)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    # chunk so that the float intermediates stay around <= 256 MB
    per_frame = 4 * 3 * (crop_h * crop_w + height * width)
    chunk = max(1, (256 << 20) // max(per_frame, 1))
    with torch.no_grad():
        for i in range(0, frames, chunk):
            x = torch.from_numpy(np.ascontiguousarray(src[i:i + chunk])).permute(0, 3, 1, 2).float()
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
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
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
