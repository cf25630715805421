"""The one unit convention for sizes and rates shown to a person (CLI, app, comparison tables).

* Sizes: decimal SI prefixes - 1 kB = 1000 bytes, 1 MB = 1000 kB (never KiB / 1024).
* Rates: kilobits per second, written "kbit/s" (1 kbit = 1000 bits), the unit video codecs are compared in.
* Bits per pixel: whole-file bits over frames x height x width at the coded geometry.

Machine-readable output (`--json`, CSV) keeps its field names (`kbytes_per_second`, `kbps`) and raw numbers;
this module only formats for people."""

from __future__ import annotations

import math

KB = 1000  # bytes
MB = 1000 * KB


def kilobytes(nbytes: float) -> float:
    """Bytes -> kB (1 kB = 1000 bytes)."""
    return float(nbytes) / KB


def kbit_per_second(nbytes: float, seconds: float) -> float:
    """Bytes spread over `seconds` -> kbit/s (1 kbit = 1000 bits). ValueError for seconds <= 0."""
    if not seconds > 0:
        raise ValueError(f"a rate needs a positive duration, got {seconds} s")
    return float(nbytes) * 8 / 1000 / float(seconds)


def format_kb(nbytes: float, digits: int = 2) -> str:
    """'0.62 kB' (1 kB = 1000 bytes)."""
    return f"{kilobytes(nbytes):.{digits}f} kB"


def format_bytes_kb(nbytes: int) -> str:
    """'1,234 bytes (1.23 kB)': the exact count and its size in kB."""
    return f"{int(nbytes):,} bytes ({format_kb(nbytes)})"


def format_rate(nbytes: float, seconds: float) -> str:
    """'4.9 kbit/s' (three significant figures)."""
    return f"{kbit_per_second(nbytes, seconds):.3g} kbit/s"


def shown_frames(frames: int, width: int, height: int) -> str:
    """'17 frames 112x64', or 'a 112x64 picture' for a one-frame code (a still picture)."""
    return f"a {width}x{height} picture" if int(frames) == 1 else f"{frames} frames {width}x{height}"


def rate_words(nbytes: float, seconds: float | None, frames: int) -> str:
    """format_rate, or '' for a one-frame code: a picture has no rate per second."""
    return format_rate(nbytes, seconds) if int(frames) > 1 and seconds else ""


def format_bpp(nbytes: float, pixels: int) -> str:
    """'0.041 bits per pixel' (`pixels`: frames x height x width)."""
    return f"{float(nbytes) * 8 / pixels:.3g} bits per pixel"


def format_file_size(nbytes: float) -> str:
    """A file or memory size with the largest decimal unit that keeps it >= 1: '512 bytes', '3.4 kB',
    '536.9 MB', '4.3 GB'."""
    n = float(nbytes)
    if n < KB:
        return f"{n:.0f} bytes"
    for unit, size in (("kB", KB), ("MB", MB), ("GB", 1000 * MB)):
        if n < size * 1000 or unit == "GB":
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} bytes"  # pragma: no cover


def ceil_kb(nbytes: float, digits: int = 2) -> float:
    """The smallest kB value with `digits` decimals that is at least `nbytes` bytes (for 'at least ...')."""
    scale = 10 ** digits
    return math.ceil(float(nbytes) / KB * scale - 1e-9) / scale
