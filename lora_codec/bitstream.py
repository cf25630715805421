"""The code file (``.vov``): one quantised, entropy-coded adapter vector plus everything the
decoder needs to regenerate the video - or, for a clip longer than the backbone's native length, one
vector per segment (format version 2: header, caption and adapter structure once, a segment table,
and one prior shared by all segments' symbols where that is smaller). Binary form and a one-line
text form (``vov1:`` + URL-safe base64). The byte layout is documented in docs/FORMAT.md.

Parsing never executes or unpickles anything; every length is checked against the bytes that
remain before it is used, every field against its range, and the whole file against a CRC32.
Parse failures raise ``CodeFormatError``; inputs over ``MAX_CODE_BYTES`` raise ``LimitError``.
"""

from __future__ import annotations

import base64
import binascii
import math
import operator
import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import entropy
from .entropy import ByteReader, write_uvarint
from .errors import CodeFormatError, LimitError

__all__ = [
    "Code",
    "Segment",
    "segmented",
    "write_code",
    "read_code",
    "to_text",
    "from_text",
    "load_code_bytes",
    "size_report",
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "TEXT_PREFIX",
    "MAX_CODE_BYTES",
    "TARGET_PRESETS",
    "SECTION_REFINEMENT",
]

MAGIC = b"VOV"
FORMAT_VERSION = 1  # single-segment codes (what every build has written)
SEGMENTED_VERSION = 2  # multi-segment codes (long clips): the segment table of docs/FORMAT.md
SUPPORTED_VERSIONS = (1, 2)
TEXT_PREFIX = "vov1:"
MAX_CODE_BYTES = 64 << 20
MAX_TEXT_CHARS = len(TEXT_PREFIX) + (4 * MAX_CODE_BYTES + 2) // 3 + 65536  # + whitespace slack

MAX_NAME_CHARS = 64
MAX_TARGETS = 64
MAX_CAPTION_BYTES = 4096
MAX_SECTION_BYTES = 16 << 20
SECTION_REFINEMENT = 1  # reserved tag: refinement track
# multi-segment codes (version 2)
MAX_SEGMENTS = 4096
MAX_TOTAL_FRAMES = 1 << 16
MAX_TOTAL_SYMBOLS = entropy.MAX_COUNT  # all segments' symbols together (what a reader decodes)
SEGMENT_CODING_SHARED = 0  # one prior and one payload for all segments' symbols, concatenated in order
SEGMENT_CODING_SEPARATE = 1  # a prior and a payload per segment

TARGET_PRESETS: dict[int, tuple[str, ...]] = {
    1: (
        "attn1.to_q",
        "attn1.to_k",
        "attn1.to_v",
        "attn1.to_out.0",
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
    ),
}

_FLAG_NOISE_MODE = 0x01
_FLAG_CAPTION_DEFLATE = 0x02
_FLAGS_KNOWN = _FLAG_NOISE_MODE | _FLAG_CAPTION_DEFLATE

_U32 = (1 << 32) - 1
_I31 = (1 << 31) - 1
_U64 = (1 << 64) - 1

# (name, lo, hi) of the integer fields, in file order after the targets block
_INT_RANGES = {
    "rank": (1, 64),
    "theta_length": (1, entropy.MAX_COUNT),
    "proj_seed": (0, _U32),
    "frames": (1, 1024),
    "height": (16, 4096),
    "width": (16, 4096),
    "fps_num": (1, _I31),
    "fps_den": (1, _I31),
    "src_width": (0, _I31),
    "src_height": (0, _I31),
    "src_frames": (0, _I31),
    "noise_seed": (0, _U64),
    "noise_mode": (0, 1),
    "steps": (1, 10000),
}
_VARINT_FIELDS = (
    "theta_length",
    "proj_seed",
    "frames",
    "height",
    "width",
    "fps_num",
    "fps_den",
    "src_width",
    "src_height",
    "src_frames",
    "noise_seed",
)

# Bound on the dequantised adapter |symbol x step_size| (docs/FORMAT.md, "Adapter bound"): far above what a fit
# reaches (theta starts within +-0.02 and AdamW moves an entry by about lr <= 0.02 per step), far below what
# overflows float32 in a LoRA product (r * 256^2 <= 2^20 per weight entry).
MAX_ABS_THETA = 256.0


def check_theta_bound(min_symbol: int, max_symbol: int, step_size: float) -> None:
    """Raise CodeFormatError unless every dequantised value symbol * step_size (float32, as the decoder
    computes it) lies within +-MAX_ABS_THETA."""
    peak = max(abs(int(min_symbol)), abs(int(max_symbol)))
    with np.errstate(over="ignore"):  # an overflow to inf is refused below like any other excess
        value = float(np.float32(peak) * np.float32(step_size))
    if not value <= MAX_ABS_THETA:  # also catches inf/nan
        raise CodeFormatError(
            f"invalid code: its adapter values reach +-{value:.3g} (symbol {peak} x step {step_size:.3g}), "
            f"beyond the format's bound of +-{MAX_ABS_THETA:g}; the code is corrupt or was not made by an encoder")


_B64_BODY = re.compile(r"[A-Za-z0-9_-]*")
_WHITESPACE = re.compile(r"\s+")


def _f32(value):
    """Round a float to the nearest float32 (what the file stores); leave junk for validation."""
    try:
        return struct.unpack("<f", struct.pack("<f", float(value)))[0]
    except (OverflowError, TypeError, ValueError, struct.error):
        return value


@dataclass(eq=False)
class Segment:
    """One segment of a multi-segment code: the first output frame it covers, its quantisation step
    (rounded to float32 on construction) and its symbols (int32)."""

    start: int
    step_size: float
    symbols: np.ndarray

    def __post_init__(self):
        self.step_size = _f32(self.step_size)
        arr = np.asarray(self.symbols)
        if arr.dtype.kind in "iu" and arr.ndim == 1:
            if arr.size == 0 or (int(arr.min()) >= -(1 << 31) and int(arr.max()) <= _I31):
                arr = arr.astype(np.int32, copy=False)
        self.symbols = arr

    def __eq__(self, other):
        if not isinstance(other, Segment):
            return NotImplemented
        return (self.start == other.start and self.step_size == other.step_size
                and np.shape(self.symbols) == np.shape(other.symbols) and np.array_equal(self.symbols, other.symbols))

    __hash__ = None


@dataclass(eq=False)
class Code:
    """Everything in a code file. Floats are rounded to float32 on construction (so a Code
    equals what ``read_code`` returns for it, and the encoder uses the decoder's step size);
    ``symbols`` is stored as an int32 array. Call ``validate()`` (``write_code`` does) to check
    every range."""

    model: str
    fingerprint: bytes
    targets: tuple[str, ...]
    rank: int
    theta_length: int
    proj_seed: int
    frames: int
    height: int
    width: int
    fps_num: int
    fps_den: int
    src_width: int
    src_height: int
    src_frames: int
    noise_seed: int
    noise_mode: int
    steps: int
    shift: float
    guidance: float
    caption: str
    step_size: float
    symbols: np.ndarray
    sections: dict[int, bytes] = field(default_factory=dict)
    # Multi-segment codes (format version 2; `segmented()` builds one): every segment, the first included,
    # whose symbols and step are also `symbols` / `step_size`; `frames` is each segment's length and
    # `total_frames` the length of the whole output. Empty / 0 for a single-segment code (version 1).
    segments: tuple = ()
    total_frames: int = 0

    def __post_init__(self):
        if isinstance(self.targets, (list, tuple)):
            self.targets = tuple(self.targets)
        if isinstance(self.fingerprint, (bytearray, memoryview)):
            self.fingerprint = bytes(self.fingerprint)
        self.shift = _f32(self.shift)
        self.guidance = _f32(self.guidance)
        self.step_size = _f32(self.step_size)
        arr = np.asarray(self.symbols)
        if arr.dtype.kind in "iu" and arr.ndim == 1:
            if arr.size == 0 or (int(arr.min()) >= -(1 << 31) and int(arr.max()) <= _I31):
                arr = arr.astype(np.int32, copy=False)
        self.symbols = arr
        if isinstance(self.sections, dict):
            self.sections = {
                k: (bytes(v) if isinstance(v, (bytearray, memoryview)) else v) for k, v in self.sections.items()
            }
        if isinstance(self.segments, list):
            self.segments = tuple(self.segments)

    # -- segments (a single-segment code is one segment starting at frame 0) ------------------------
    @property
    def segment_list(self) -> tuple:
        """Every segment, as `Segment`s (one for a single-segment code)."""
        if self.segments:
            return self.segments
        return (Segment(0, self.step_size, self.symbols),)

    @property
    def n_segments(self) -> int:
        return len(self.segments) if self.segments else 1

    @property
    def output_frames(self) -> int:
        """Frames the whole decoded video has (`total_frames` for a multi-segment code, else `frames`)."""
        return int(self.total_frames) if self.segments else int(self.frames)

    def __eq__(self, other):
        if not isinstance(other, Code):
            return NotImplemented
        for name in self.__dataclass_fields__:
            a, b = getattr(self, name), getattr(other, name)
            if name == "symbols":
                if not (np.shape(a) == np.shape(b) and np.array_equal(a, b)):
                    return False
            elif name == "segments":
                if len(a) != len(b) or not all(x == y for x, y in zip(a, b)):
                    return False
            elif name in ("shift", "guidance", "step_size"):
                if not (a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # mutable

    def validate(self) -> None:
        """Raise CodeFormatError (bad value) or LimitError (over a size limit) unless every
        field is within the ranges of the format."""
        _validate(self)


def segmented(code: Code, segments, total_frames: int) -> Code:
    """`code` (its header fields; each segment has its geometry) as a multi-segment code of `segments`
    (`Segment`s, the first starting at frame 0) covering `total_frames` frames. One segment gives a
    single-segment code. Validation happens on writing (`write_code`) or with `validate()`."""
    import dataclasses as _dc

    segments = tuple(segments)
    if not segments:
        raise _bad("segments", "at least one segment is needed")
    first = segments[0]
    if len(segments) == 1:
        return _dc.replace(code, symbols=first.symbols, step_size=first.step_size, segments=(), total_frames=0)
    return _dc.replace(code, symbols=first.symbols, step_size=first.step_size, segments=segments,
                       total_frames=int(total_frames))


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _bad(name: str, message: str) -> CodeFormatError:
    return CodeFormatError(f"invalid code field {name}: {message}")


def _check_int(name: str, value) -> int:
    if isinstance(value, bool):
        raise _bad(name, "must be an integer, not a bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise _bad(name, f"must be an integer, got {type(value).__name__}") from None
    lo, hi = _INT_RANGES[name]
    if not lo <= value <= hi:
        if name == "theta_length" and value > hi:
            raise LimitError(f"theta_length {value} exceeds the limit of {hi}")
        raise _bad(name, f"{value} out of range [{lo}, {hi}]")
    return value


def _check_name(name: str, value) -> bytes:
    if not isinstance(value, str):
        raise _bad(name, f"must be a str, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_NAME_CHARS:
        raise _bad(name, f"length {len(value)} out of range [1, {MAX_NAME_CHARS}]")
    if not all(0x20 <= ord(ch) <= 0x7E for ch in value):
        raise _bad(name, f"{value!r} is not printable ASCII")
    return value.encode("ascii")


def _check_float(name: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise _bad(name, f"must be a float, got {type(value).__name__}")
    try:
        packed = struct.pack("<f", float(value))
    except (OverflowError, struct.error):
        raise _bad(name, f"{value} does not fit in float32") from None
    stored = struct.unpack("<f", packed)[0]
    if not math.isfinite(stored):
        raise _bad(name, f"{value} is not finite")
    if positive and not stored > 0:
        raise _bad(name, f"{value} must be > 0 (as float32)")
    return stored


def _validate(code: Code) -> None:
    if not isinstance(code, Code):
        raise TypeError(f"expected a Code, got {type(code).__name__}")
    _check_name("model", code.model)
    if not isinstance(code.fingerprint, bytes) or len(code.fingerprint) != 8:
        raise _bad("fingerprint", "must be exactly 8 bytes")
    if not isinstance(code.targets, tuple) or not 1 <= len(code.targets) <= MAX_TARGETS:
        raise _bad("targets", f"must be a tuple of 1..{MAX_TARGETS} names")
    for t in code.targets:
        _check_name("targets", t)
    for name in _INT_RANGES:
        _check_int(name, getattr(code, name))
    _check_float("shift", code.shift)
    _check_float("guidance", code.guidance)
    _check_float("step_size", code.step_size, positive=True)
    if not isinstance(code.caption, str):
        raise _bad("caption", f"must be a str, got {type(code.caption).__name__}")
    try:
        raw = code.caption.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("caption", "is not encodable as UTF-8") from None
    if len(raw) > MAX_CAPTION_BYTES:
        raise LimitError(f"caption is {len(raw)} bytes of UTF-8, the limit is {MAX_CAPTION_BYTES}")
    sym = code.symbols
    if not isinstance(sym, np.ndarray) or sym.ndim != 1 or sym.dtype.kind not in "iu":
        raise _bad("symbols", "must be a 1-D integer array")
    if sym.size != code.theta_length:
        raise _bad("symbols", f"length {sym.size} differs from theta_length {code.theta_length}")
    if sym.dtype != np.int32:
        raise _bad("symbols", "values do not fit in int32")
    if sym.size:
        check_theta_bound(int(sym.min()), int(sym.max()), code.step_size)
    if not isinstance(code.sections, dict):
        raise _bad("sections", "must be a dict {tag: bytes}")
    for tag, blob in code.sections.items():
        if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 1 <= tag <= 255:
            raise _bad("sections", f"tag {tag!r} out of range [1, 255]")
        if not isinstance(blob, bytes):
            raise _bad("sections", f"section {tag} must be bytes")
        if len(blob) > MAX_SECTION_BYTES:
            raise LimitError(f"section {tag} is {len(blob)} bytes, the limit is {MAX_SECTION_BYTES}")
    _validate_segments(code)


def _validate_segments(code: Code) -> None:
    segs = code.segments
    if not isinstance(segs, tuple):
        raise _bad("segments", "must be a tuple of Segment")
    if not segs:
        if code.total_frames not in (0, None):
            raise _bad("total_frames", "must be 0 for a single-segment code")
        return
    if not 2 <= len(segs) <= MAX_SEGMENTS:
        raise _bad("segments", f"{len(segs)} segments out of range [2, {MAX_SEGMENTS}]")
    if len(segs) * code.theta_length > MAX_TOTAL_SYMBOLS:
        raise LimitError(f"{len(segs)} segments of {code.theta_length} symbols exceed the limit of "
                         f"{MAX_TOTAL_SYMBOLS} symbols per code")
    if SECTION_REFINEMENT in code.sections:
        raise _bad("sections", "a multi-segment code cannot hold a refinement track")
    prev = None
    for i, seg in enumerate(segs):
        if not isinstance(seg, Segment):
            raise _bad("segments", f"segment {i} must be a Segment")
        start = seg.start
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
            raise _bad("segments", f"segment {i} start must be an integer")
        if prev is None:
            if start != 0:
                raise _bad("segments", "the first segment must start at frame 0")
        elif not 1 <= start - prev <= code.frames:
            raise _bad("segments", f"segment {i} starts at frame {start}: segments must start in order, each "
                                   f"1..{code.frames} frames after the previous one (no gaps)")
        prev = int(start)
        _check_float("step_size", seg.step_size, positive=True)
        sym = seg.symbols
        if not isinstance(sym, np.ndarray) or sym.ndim != 1 or sym.dtype != np.int32:
            raise _bad("segments", f"segment {i} symbols must be a 1-D int32 array")
        if sym.size != code.theta_length:
            raise _bad("segments", f"segment {i} has {sym.size} symbols, theta_length is {code.theta_length}")
        check_theta_bound(int(sym.min()), int(sym.max()), seg.step_size)
    if not (np.array_equal(segs[0].symbols, code.symbols) and segs[0].step_size == code.step_size):
        raise _bad("segments", "the first segment's symbols and step must be the code's symbols and step_size")
    total = code.total_frames
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or not 1 <= total <= MAX_TOTAL_FRAMES:
        raise _bad("total_frames", f"{total!r} out of range [1, {MAX_TOTAL_FRAMES}]")
    if prev + code.frames != total:
        raise _bad("total_frames", f"{total} differs from the last segment's end ({prev} + {code.frames})")


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _deflate(raw: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return comp.compress(raw) + comp.flush()


def write_code(code: Code) -> bytes:
    """Serialise a Code to the binary form (validates every field first): format version 1 for a
    single-segment code, version 2 (segment table) for a multi-segment one."""
    _validate(code)
    multi = bool(code.segments)
    out = bytearray(MAGIC)
    out.append(SEGMENTED_VERSION if multi else FORMAT_VERSION)
    model = code.model.encode("ascii")
    out.append(len(model))
    out += model
    out += code.fingerprint
    preset = next((pid for pid, names in TARGET_PRESETS.items() if names == code.targets), 0)
    out.append(preset)
    if preset == 0:
        out.append(len(code.targets))
        for t in code.targets:
            tb = t.encode("ascii")
            out.append(len(tb))
            out += tb
    out.append(int(code.rank))
    for name in _VARINT_FIELDS:
        write_uvarint(out, int(getattr(code, name)))
    raw_caption = code.caption.encode("utf-8")
    stored_caption = raw_caption
    flags = _FLAG_NOISE_MODE if int(code.noise_mode) else 0
    if raw_caption:
        deflated = _deflate(raw_caption)
        if len(deflated) < len(raw_caption):
            stored_caption = deflated
            flags |= _FLAG_CAPTION_DEFLATE
    out.append(flags)
    write_uvarint(out, int(code.steps))
    if multi:  # version 2: the steps are in the segment table
        out += struct.pack("<ff", float(code.shift), float(code.guidance))
    else:
        out += struct.pack("<fff", float(code.shift), float(code.guidance), float(code.step_size))
    write_uvarint(out, len(stored_caption))
    out += stored_caption
    if multi:
        out += _segment_table(code)
    else:
        enc = entropy.encode_symbols(code.symbols)
        write_uvarint(out, len(enc.prior))
        out += enc.prior
        write_uvarint(out, len(enc.payload))
        out += enc.payload
    for tag in sorted(code.sections):
        blob = code.sections[tag]
        out.append(int(tag))
        write_uvarint(out, len(blob))
        out += blob
    out += struct.pack("<I", zlib.crc32(out) & _U32)
    if len(out) > MAX_CODE_BYTES:
        raise LimitError(f"code would be {len(out)} bytes, the limit is {MAX_CODE_BYTES}")
    return bytes(out)


def _prior_and_payload(enc) -> bytes:
    out = bytearray()
    write_uvarint(out, len(enc.prior))
    out += enc.prior
    write_uvarint(out, len(enc.payload))
    out += enc.payload
    return bytes(out)


def _segment_table(code: Code) -> bytes:
    """Version 2's segment table and symbol coding (docs/FORMAT.md): count, total frames, start steps,
    steps, then the coding mode that gives fewer bytes (one shared prior, or one per segment)."""
    segs = code.segments
    out = bytearray()
    write_uvarint(out, len(segs))
    write_uvarint(out, int(code.total_frames))
    for prev, seg in zip(segs, segs[1:]):
        write_uvarint(out, int(seg.start) - int(prev.start))
    for seg in segs:
        out += struct.pack("<f", float(seg.step_size))
    shared = _prior_and_payload(entropy.encode_symbols(np.concatenate([seg.symbols for seg in segs])))
    separate = b"".join(_prior_and_payload(entropy.encode_symbols(seg.symbols)) for seg in segs)
    if len(shared) <= len(separate):
        out.append(SEGMENT_CODING_SHARED)
        out += shared
    else:
        out.append(SEGMENT_CODING_SEPARATE)
        out += separate
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    fields: dict
    prior: bytes  # the first (version 1: the only) prior and payload
    payload: bytes
    caption_stored: int
    section_sizes: dict  # tag -> bytes incl. tag and length
    version: int = FORMAT_VERSION
    priors: list = field(default_factory=list)  # every prior / payload (version 2: one, or one per segment)
    payloads: list = field(default_factory=list)
    starts: list = field(default_factory=list)  # version 2: segment starts and steps
    steps: list = field(default_factory=list)
    coding: int | None = None  # version 2: SEGMENT_CODING_*
    table_bytes: int = 0  # version 2: the segment table (count .. coding mode), without priors and payloads
    table_offset: int = 0  # version 2: where the table starts in the file


def _as_bytes(data) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise CodeFormatError(f"not a lora_codec code: expected bytes, got {type(data).__name__}")


def _check_envelope(data: bytes) -> None:
    if len(data) > MAX_CODE_BYTES:
        raise LimitError(f"code is {len(data)} bytes, the limit is {MAX_CODE_BYTES}")
    if len(data) < len(MAGIC) + 1:
        if data and MAGIC.startswith(data[: len(MAGIC)]):
            raise CodeFormatError(f"truncated code: only {len(data)} bytes")
        raise CodeFormatError("not a lora_codec code (missing 'VOV' magic)")
    if data[: len(MAGIC)] != MAGIC:
        raise CodeFormatError("not a lora_codec code (missing 'VOV' magic)")
    version = data[len(MAGIC)]
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise CodeFormatError(f"unsupported code format version {version} (this build reads version {supported})")
    if len(data) < len(MAGIC) + 1 + 4:
        raise CodeFormatError(f"truncated code: only {len(data)} bytes")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) & _U32 != crc:
        raise CodeFormatError("corrupt code: CRC mismatch (the file is damaged or truncated)")


def _read_name(r: ByteReader, field_name: str) -> str:
    n = r.u8(f"{field_name} length")
    if not 1 <= n <= MAX_NAME_CHARS:
        raise r.fail(f"{field_name} length {n} out of range [1, {MAX_NAME_CHARS}]")
    raw = r.take(n, field_name)
    if not all(0x20 <= b <= 0x7E for b in raw):
        raise r.fail(f"{field_name} is not printable ASCII")
    return raw.decode("ascii")


def _inflate_caption(stored: bytes, r: ByteReader) -> str:
    try:
        dec = zlib.decompressobj(-15)
        raw = dec.decompress(stored, MAX_CAPTION_BYTES + 1)
        if dec.unconsumed_tail or not dec.eof:
            raise r.fail("caption deflate stream is invalid or too long")
        if dec.unused_data:
            raise r.fail("trailing bytes after the caption deflate stream")
    except zlib.error:
        raise r.fail("caption deflate stream is invalid") from None
    if len(raw) > MAX_CAPTION_BYTES:
        raise r.fail(f"caption longer than {MAX_CAPTION_BYTES} bytes")
    return _utf8(raw, r)


def _utf8(raw: bytes, r: ByteReader) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise r.fail("caption is not valid UTF-8") from None


def _parse(data: bytes) -> _Parsed:
    data = _as_bytes(data)
    _check_envelope(data)
    r = ByteReader(data, "code", pos=len(MAGIC) + 1, end=len(data) - 4)
    f: dict = {}
    f["model"] = _read_name(r, "model")
    f["fingerprint"] = r.take(8, "fingerprint")
    preset = r.u8("targets preset")
    if preset == 0:
        n = r.u8("number of targets")
        if not 1 <= n <= MAX_TARGETS:
            raise r.fail(f"number of targets {n} out of range [1, {MAX_TARGETS}]")
        f["targets"] = tuple(_read_name(r, "target") for _ in range(n))
    elif preset in TARGET_PRESETS:
        f["targets"] = TARGET_PRESETS[preset]
    else:
        raise r.fail(f"unknown targets preset {preset}")
    f["rank"] = r.u8("rank")
    lo, hi = _INT_RANGES["rank"]
    if not lo <= f["rank"] <= hi:
        raise r.fail(f"rank = {f['rank']} out of range [{lo}, {hi}]")
    for name in _VARINT_FIELDS:
        lo, hi = _INT_RANGES[name]
        f[name] = r.uvarint(name, lo, hi)
    flags = r.u8("flags")
    if flags & ~_FLAGS_KNOWN:
        raise r.fail(f"unknown flag bits 0x{flags & ~_FLAGS_KNOWN:02x}")
    f["noise_mode"] = 1 if flags & _FLAG_NOISE_MODE else 0
    f["steps"] = r.uvarint("steps", *_INT_RANGES["steps"])
    version = data[len(MAGIC)]
    if version == SEGMENTED_VERSION:
        shift, guidance = struct.unpack("<ff", r.take(8, "shift/guidance"))
        step_size = None
    else:
        shift, guidance, step_size = struct.unpack("<fff", r.take(12, "shift/guidance/step_size"))
    for name, value in (("shift", shift), ("guidance", guidance), ("step_size", step_size)):
        if value is None:
            continue
        if not math.isfinite(value):
            raise r.fail(f"{name} is not finite")
        f[name] = value
    if step_size is not None and not step_size > 0:
        raise r.fail("step_size must be > 0")
    n = r.uvarint("caption length", 0, MAX_CAPTION_BYTES)
    stored = r.take(n, "caption")
    if flags & _FLAG_CAPTION_DEFLATE:
        if not stored:
            raise r.fail("empty deflated caption")
        f["caption"] = _inflate_caption(stored, r)
    else:
        f["caption"] = _utf8(stored, r)
    table = {}
    if version == SEGMENTED_VERSION:
        table = _read_segment_table(r, f)
        priors, payloads = [], []
        for _ in range(1 if table["coding"] == SEGMENT_CODING_SHARED else len(table["starts"])):
            prior, payload = _read_prior_and_payload(r)
            priors.append(prior)
            payloads.append(payload)
        prior, payload = priors[0], payloads[0]
    else:
        prior, payload = _read_prior_and_payload(r)
        priors, payloads = [prior], [payload]
    sections: dict[int, bytes] = {}
    sizes: dict[int, int] = {}
    last_tag = 0
    while r.remaining:
        start = r.pos
        tag = r.u8("section tag")
        if tag == 0:
            raise r.fail("section tag 0 is invalid")
        if tag <= last_tag:
            raise r.fail(f"section tag {tag} out of order or repeated")
        n = r.uvarint(f"section {tag} length", 0, MAX_SECTION_BYTES)
        sections[tag] = r.take(n, f"section {tag}")
        sizes[tag] = r.pos - start
        last_tag = tag
    f["sections"] = sections
    if version == SEGMENTED_VERSION and SECTION_REFINEMENT in sections:
        raise CodeFormatError("corrupt code: a multi-segment code cannot hold a refinement track (section 1)")
    return _Parsed(fields=f, prior=prior, payload=payload, caption_stored=len(stored), section_sizes=sizes,
                   version=version, priors=priors, payloads=payloads, starts=table.get("starts", []),
                   steps=table.get("steps", []), coding=table.get("coding"), table_bytes=table.get("bytes", 0),
                   table_offset=table.get("offset", 0))


def _read_prior_and_payload(r: ByteReader) -> tuple[bytes, bytes]:
    n = r.uvarint("prior length", 1, r.remaining)
    prior = r.take(n, "prior")
    n = r.uvarint("payload length", 0, r.remaining)
    payload = r.take(n, "payload")
    return prior, payload


def _read_segment_table(r: ByteReader, f: dict) -> dict:
    """Version 2's segment table (docs/FORMAT.md), every value checked before use."""
    begin = r.pos
    frames, d = f["frames"], f["theta_length"]
    n = r.uvarint("segment count", 2, MAX_SEGMENTS)
    if n * d > MAX_TOTAL_SYMBOLS:
        raise LimitError(f"code has {n} segments of {d} symbols, over the limit of {MAX_TOTAL_SYMBOLS} symbols")
    total = r.uvarint("total frames", frames + 1, MAX_TOTAL_FRAMES)
    starts = [0]
    for i in range(1, n):
        starts.append(starts[-1] + r.uvarint(f"segment {i + 1} start step", 1, frames))
    if starts[-1] + frames != total:
        raise r.fail(f"the segments end at frame {starts[-1] + frames}, the table says {total} frames")
    steps = []
    for i in range(n):
        (step,) = struct.unpack("<f", r.take(4, f"segment {i + 1} step_size"))
        if not (math.isfinite(step) and step > 0):
            raise r.fail(f"segment {i + 1} step_size must be finite and > 0")
        steps.append(step)
    coding = r.u8("segment coding")
    if coding not in (SEGMENT_CODING_SHARED, SEGMENT_CODING_SEPARATE):
        raise r.fail(f"unknown segment coding {coding}")
    f["step_size"] = steps[0]
    f["total_frames"] = total
    return {"starts": starts, "steps": steps, "coding": coding, "bytes": r.pos - begin, "offset": begin}


def read_code(data: bytes) -> Code:
    """Parse and fully validate the binary form (decodes the symbols)."""
    p = _parse(data)
    if p.version == SEGMENTED_VERSION:
        return _read_segmented(p)
    lo, counts = entropy.parse_prior(p.prior)
    check_theta_bound(lo, lo + len(counts) - 1, p.fields["step_size"])  # before decoding the symbols
    symbols = entropy.decode_symbols(p.prior, p.payload, p.fields["theta_length"])
    return Code(symbols=symbols, **p.fields)


def _read_segmented(p: _Parsed) -> Code:
    d, n = p.fields["theta_length"], len(p.starts)
    for i, prior in enumerate(p.priors):  # the adapter bound, before decoding any symbols
        lo, counts = entropy.parse_prior(prior)
        for step in (p.steps if len(p.priors) == 1 else [p.steps[i]]):
            check_theta_bound(lo, lo + len(counts) - 1, step)
    if len(p.priors) == 1:
        flat = entropy.decode_symbols(p.prior, p.payload, n * d)
        parts = [flat[i * d:(i + 1) * d] for i in range(n)]
    else:
        parts = [entropy.decode_symbols(prior, payload, d) for prior, payload in zip(p.priors, p.payloads)]
    segments = tuple(Segment(start, step, np.ascontiguousarray(sym))
                     for start, step, sym in zip(p.starts, p.steps, parts))
    return Code(symbols=segments[0].symbols, segments=segments, **p.fields)


def size_report(data: bytes) -> dict:
    """Byte accounting of a binary code. The five *_bytes buckets header, caption, prior, payload and
    sections sum to total_bytes; header_bytes is everything else (magic, version, fields, lengths, the
    segment table of a multi-segment code, CRC). A multi-segment code's priors and payloads are summed."""
    p = _parse(data)
    total = len(_as_bytes(data))
    sections_bytes = sum(p.section_sizes.values())
    prior_bytes = sum(len(x) for x in p.priors)
    payload_bytes = sum(len(x) for x in p.payloads)
    body = p.caption_stored + prior_bytes + payload_bytes + sections_bytes
    return {
        "total_bytes": total,
        "header_bytes": total - body,
        "caption_bytes": p.caption_stored,
        "prior_bytes": prior_bytes,
        "payload_bytes": payload_bytes,
        "sections_bytes": sections_bytes,
        "ideal_payload_bits": sum(entropy.prior_ideal_bits(x) for x in p.priors),
        "section_bytes_by_tag": dict(p.section_sizes),
        # multi-segment codes (version 2); the table is counted in header_bytes
        "format_version": p.version,
        "segments": len(p.starts) if p.starts else 1,
        "segment_table_bytes": p.table_bytes,
        "shared_prior": None if p.coding is None else p.coding == SEGMENT_CODING_SHARED,
    }


# ---------------------------------------------------------------------------------------------
# text form
# ---------------------------------------------------------------------------------------------


def to_text(data: bytes) -> str:
    """One-line text form: ``vov1:`` + URL-safe base64 without padding."""
    data = _as_bytes(data)
    if len(data) > MAX_CODE_BYTES:
        raise LimitError(f"code is {len(data)} bytes, the limit is {MAX_CODE_BYTES}")
    return TEXT_PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_text(text: str) -> bytes:
    """Inverse of ``to_text``. Surrounding whitespace (and whitespace inside the base64, e.g.
    from line wrapping) is ignored; anything else malformed raises CodeFormatError."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise CodeFormatError("not a lora_codec text code: non-ASCII bytes") from None
    if not isinstance(text, str):
        raise CodeFormatError(f"not a lora_codec text code: expected str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise LimitError(f"text code is {len(text)} characters, the limit is {MAX_TEXT_CHARS}")
    text = text.strip()
    if not text.startswith(TEXT_PREFIX):
        m = re.match(r"vov(\d+):", text)
        if m:
            raise CodeFormatError(f"unsupported text code version 'vov{m.group(1)}:' (this build reads '{TEXT_PREFIX}')")
        raise CodeFormatError(f"not a lora_codec text code (expected the prefix '{TEXT_PREFIX}')")
    body = _WHITESPACE.sub("", text[len(TEXT_PREFIX) :])
    if not _B64_BODY.fullmatch(body):
        bad = next(ch for ch in body if not (ch.isascii() and (ch.isalnum() or ch in "-_")))
        raise CodeFormatError(f"corrupt text code: invalid character {bad!r} (expected URL-safe base64)")
    if len(body) % 4 == 1:
        raise CodeFormatError("corrupt text code: truncated base64 (impossible length)")
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise CodeFormatError("corrupt text code: invalid base64") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != body:
        raise CodeFormatError("corrupt text code: non-canonical base64 (stray trailing bits)")
    if len(data) > MAX_CODE_BYTES:
        raise LimitError(f"code is {len(data)} bytes, the limit is {MAX_CODE_BYTES}")
    return data


def load_code_bytes(data: bytes | str) -> bytes:
    """Accept a code in binary form (bytes starting with ``VOV``) or text form (str or ASCII
    bytes ``vov1:...``, surrounding whitespace allowed); return the binary form. Only the
    envelope is checked here; ``read_code`` does the full parse."""
    if isinstance(data, str):
        return from_text(data)
    data = _as_bytes(data)
    if data.startswith(MAGIC):
        if len(data) > MAX_CODE_BYTES:
            raise LimitError(f"code is {len(data)} bytes, the limit is {MAX_CODE_BYTES}")
        return data
    if len(data) > MAX_TEXT_CHARS:
        raise LimitError(f"code is {len(data)} bytes, the limit is {MAX_CODE_BYTES}")
    head = data.lstrip()[: len(TEXT_PREFIX)]
    if head.startswith(b"vov"):
        return from_text(data)
    raise CodeFormatError(f"not a lora_codec code (neither binary 'VOV' nor text '{TEXT_PREFIX}' form)")
