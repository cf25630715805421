"""Still images: a PNG, JPEG or WebP photo becomes a one-frame code, and its still-image baselines.

Reading (`read_image`, Pillow): the picture a viewer shows - the EXIF orientation applied, an embedded
ICC colour profile converted to sRGB, transparency composited on white (as a browser page shows it),
16-bit and CMYK pictures converted to 8-bit RGB - each conversion with a plain-words note, as the video
reader does (docs/INPUTS.md). An animated image (GIF, animated WebP/PNG) is not a still: it goes to the
video reader. `read_input` is the one entry point the encoder and `compare` use for any input file.

The one-frame code follows the backbone's geometry rules for one frame (frames = 1 = 4*0 + 1; the
native size oriented like the picture, or `--size`), and `decode -o out.png` writes the picture.

Baselines (`encode_still_at_budget`): JPEG, WebP and AVIF through Pillow (those its build has:
`PIL.features`), each at the highest quality whose file fits a byte budget.
"""

from __future__ import annotations

import dataclasses
import io
import os
from fractions import Fraction

import numpy as np

from .errors import LimitError, VideoError

__all__ = ["STILL_FORMATS", "STILL_CODECS", "is_still_image", "read_image", "read_input", "available_still_codecs",
           "encode_still", "encode_still_at_budget", "StillResult"]

# Pillow formats read as stills (a single picture); the three plus what cameras and scanners give
STILL_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")
STILL_FPS = Fraction(1)  # a picture has no frame rate; a one-frame code of it says 1 fps (1 s)

# still-image baselines: short name -> (Pillow format, PIL.features name, file extension)
STILL_CODECS = {"jpeg": ("JPEG", "jpg", ".jpg"), "webp": ("WEBP", "webp", ".webp"), "avif": ("AVIF", "avif", ".avif")}


def _open(path):
    from PIL import Image

    try:
        return Image.open(os.fspath(path))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def is_still_image(path) -> bool:
    """True when Pillow opens `path` as a single picture of a STILL_FORMATS format (its content
    decides, not its extension). Animated images are not stills."""
    try:
        if not os.path.isfile(os.fspath(path)):
            return False
    except (TypeError, ValueError):
        return False
    im = _open(path)
    if im is None:
        return False
    try:
        return im.format in STILL_FORMATS and int(getattr(im, "n_frames", 1) or 1) == 1
    except Exception:
        return False
    finally:
        im.close()


def _to_srgb(im, notes: list[str]):
    """Convert a picture with an embedded ICC profile to sRGB (LittleCMS, perceptual intent)."""
    icc = im.info.get("icc_profile")
    if not icc:
        return im
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        name = ImageCms.getProfileDescription(src).strip() or "embedded profile"
        if "srgb" in name.lower().replace(" ", ""):
            return im
        mode = "RGB" if im.mode != "CMYK" else "CMYK"
        out = ImageCms.profileToProfile(im.convert(mode) if im.mode not in ("RGB", "CMYK") else im, src,
                                        ImageCms.createProfile("sRGB"), outputMode="RGB")
        notes.append(f"converted the picture's colour profile ({name}) to sRGB")
        return out
    except Exception:  # a broken profile: keep the pixels as they are
        notes.append("the picture's embedded colour profile could not be read; its pixels are taken as sRGB")
        return im


def read_image(path, *, limits=None):
    """A still picture -> `video.Clip` of one frame (uint8 RGB as a viewer shows it; see the module
    docstring). Raises VideoError (not a readable picture) and LimitError (over `limits`)."""
    from PIL import Image, ImageOps

    from .video import Clip, Limits

    limits = limits or Limits()
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
    except OSError as e:
        raise VideoError(f"{name}: cannot access file ({e.strerror or e})") from None
    if size > limits.max_bytes:
        raise LimitError(f"{name}: file is {size} bytes, over the limit of {limits.max_bytes}")
    im = _open(name)
    if im is None:
        raise VideoError(f"{name}: not a readable picture")
    notes: list[str] = []
    fmt = im.format
    try:
        w, h = im.size
        if w * h > limits.max_pixels:
            raise LimitError(f"{name}: the picture is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}")
        try:
            im.load()
        except Exception as e:  # truncated or damaged file
            raise VideoError(f"{name}: the picture cannot be decoded ({' '.join(str(e).split()) or type(e).__name__})") from None
        orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
        if orientation not in (None, 1):
            im = ImageOps.exif_transpose(im)
            notes.append(f"rotated/flipped as the picture's EXIF orientation ({orientation}) asks")
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # Pillow's 16-bit greyscale: scale to 8 bits (convert('L') would clip at 255)
            arr = np.asarray(im).astype(np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(np.round(arr * 255.0 / peak), 0, 255).astype(np.uint8), "L")
            notes.append("converted a 16-bit picture to 8 bits")
        if im.mode == "CMYK":
            notes.append("converted a CMYK picture to RGB")
        im = _to_srgb(im, notes)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if has_alpha:
            rgba = im.convert("RGBA")
            alpha = np.asarray(rgba)[..., 3]
            if alpha.min() < 255:
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, rgba)
                notes.append("transparent parts of the picture shown on white (as a browser page shows them)")
            else:
                im = rgba
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    finally:
        try:
            im.close()
        except Exception:
            pass
    notes.insert(0, f"still picture ({fmt or 'image'}, {rgb.shape[1]}x{rgb.shape[0]}): coded as one frame")
    return Clip(frames=rgb[None], fps=STILL_FPS, src_width=int(rgb.shape[1]), src_height=int(rgb.shape[0]),
                src_frames=1, notes=notes)


def read_input(path, *, start_seconds: float = 0.0, max_frames: int | None = None, limits=None):
    """Any input file -> `video.Clip`: a still picture through `read_image`, anything else through
    `video.read_video` (`start_seconds` and `max_frames` apply to videos)."""
    from .video import Limits, read_video

    if is_still_image(path):
        if start_seconds and float(start_seconds) > 0:
            raise VideoError(f"{os.fspath(path)}: a still picture has no time to start at (--start "
                             f"{float(start_seconds):g})")
        return read_image(path, limits=limits)
    return read_video(path, start_seconds=start_seconds, max_frames=max_frames, limits=limits or Limits())


# -- baselines ---------------------------------------------------------------------------------------


def available_still_codecs() -> dict[str, bool]:
    """Which still-image baselines this Pillow build encodes."""
    from PIL import features

    out = {}
    for short, (_fmt, feature, _ext) in STILL_CODECS.items():
        try:
            out[short] = bool(features.check(feature))
        except Exception:
            out[short] = False
    return out


@dataclasses.dataclass
class StillResult:
    codec: str
    quality: int
    bytes: int
    fits: bool
    frames: np.ndarray  # [1, H, W, 3] decoded


def encode_still(frame: np.ndarray, codec: str, quality: int) -> bytes:
    """One uint8 RGB picture [H, W, 3] as a `codec` file (Pillow) at `quality` (0..100), whole file."""
    from PIL import Image

    fmt, _feature, _ext = STILL_CODECS[codec]
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(frame), "RGB")
    kw: dict = {"quality": int(quality)}
    if codec == "jpeg":
        kw.update(optimize=True, subsampling="4:2:0")
    elif codec == "webp":
        kw.update(method=6)
    elif codec == "avif":
        kw.update(speed=4)
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode_still(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy


def encode_still_at_budget(frame: np.ndarray, codec: str, budget: int) -> StillResult:
    """The highest quality (binary search over 0..100) whose `codec` file fits `budget` bytes; the
    smallest file (quality 0) with fits=False when none does."""
    if codec not in STILL_CODECS:
        raise VideoError(f"unknown still-image codec '{codec}'; choose from {', '.join(STILL_CODECS)}")
    if frame.ndim == 4:
        frame = frame[0]
    lo, hi, best = 0, 100, None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = encode_still(frame, codec, mid)
        if len(data) <= budget:
            best = (mid, data)
            lo = mid + 1
        else:
            hi = mid - 1
    fits = best is not None
    if best is None:
        best = (0, encode_still(frame, codec, 0))
    q, data = best
    return StillResult(codec=codec, quality=q, bytes=len(data), fits=fits, frames=decode_still(data)[None])
