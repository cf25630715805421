"""Entropy coding of the quantised symbol vector.

The prior is the empirical histogram of the symbols, stored as integer counts, so that encoder
and decoder derive bit-identical probabilities (``counts / total`` in float64) on any machine.
The symbols are coded with ``constriction``'s ANS stack coder and a ``Categorical`` model over
the *used* values only (bins with a zero count get no probability mass at all).

Plain ANS started from an empty state wastes roughly 20 bits: the first symbol pushed onto an
empty stack lands in a tiny state where the coder's fixed-point arithmetic is inefficient. We
avoid that by coding the last ``K`` symbols (``K`` derived from the prior alone, so the decoder
knows it) with an exact big-integer arithmetic code whose result ``x0`` seeds the ANS stack;
``x0`` is recovered bit-exactly once the ANS part is decoded. The payload is the ANS stack as
little-endian bytes with the leading zero bytes of its most significant word dropped.

See docs/FORMAT.md for the byte layout. Everything a corrupt input can do raises
``CodeFormatError``; sizes over the limits raise ``LimitError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CodeFormatError, LimitError

try:  # constriction is a hard dependency; keep the import error readable
    import constriction
except ImportError as exc:  # pragma: no cover - environment problem
    raise ImportError("lora_codec.entropy needs the 'constriction' package") from exc

__all__ = [
    "EncodedSymbols",
    "encode_symbols",
    "decode_symbols",
    "ideal_bits",
    "estimate_code_bytes",
    "prior_ideal_bits",
    "parse_prior",
    "PRIOR_EXPLICIT_COUNTS",
    "MAX_BINS",
    "MAX_COUNT",
    "ByteReader",
    "write_uvarint",
    "write_svarint",
    "uvarint_size",
]

PRIOR_EXPLICIT_COUNTS = 0  # prior type tag: explicit histogram counts
MAX_BINS = 1 << 20  # max (max symbol - min symbol + 1)
MAX_COUNT = 1 << 24  # max number of symbols in one vector
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_TAIL_MIN_BITS = 40  # the exactly-coded tail carries at least this much information ...
_TAIL_MAX_SYMBOLS = 1024  # ... unless capped by this many symbols


# ---------------------------------------------------------------------------------------------
# varints (LEB128, canonical) and a bounds-checked reader
# ---------------------------------------------------------------------------------------------


def write_uvarint(out: bytearray, value: int) -> None:
    """Append ``value`` (0 <= value < 2**64) as an unsigned LEB128 varint."""
    value = int(value)
    if value < 0 or value >> 64:
        raise ValueError(f"uvarint out of range: {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return (value << 1) if value >= 0 else ((-value << 1) - 1)


def _unzigzag(value: int) -> int:
    return (value >> 1) if not (value & 1) else -((value + 1) >> 1)


def write_svarint(out: bytearray, value: int) -> None:
    """Append a signed integer (-2**63 <= value < 2**63) as a zigzag LEB128 varint."""
    value = int(value)
    if value < -(1 << 63) or value >= (1 << 63):
        raise ValueError(f"svarint out of range: {value}")
    write_uvarint(out, _zigzag(value))


def uvarint_size(value: int) -> int:
    """Number of bytes ``write_uvarint`` uses for ``value``."""
    return max(1, (int(value).bit_length() + 6) // 7)


class ByteReader:
    """Sequential reader over a bytes object; every read is bounds-checked and raises
    ``CodeFormatError`` naming ``what`` on truncation or malformed data."""

    __slots__ = ("data", "pos", "end", "what")

    def __init__(self, data: bytes, what: str = "code", pos: int = 0, end: int | None = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def fail(self, message: str) -> CodeFormatError:
        return CodeFormatError(f"corrupt {self.what}: {message}")

    def u8(self, field: str) -> int:
        if self.pos >= self.end:
            raise self.fail(f"truncated while reading {field}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise self.fail(f"truncated while reading {field} ({n} bytes declared, {self.remaining} left)")
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def uvarint(self, field: str, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
        value = 0
        shift = 0
        while True:
            if self.pos >= self.end:
                raise self.fail(f"truncated while reading {field}")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise self.fail(f"non-canonical varint in {field}")
                break
            shift += 7
            if shift >= 64:
                raise self.fail(f"varint too long in {field}")
        if value >> 64:
            raise self.fail(f"varint overflow in {field}")
        if not lo <= value <= hi:
            raise self.fail(f"{field} = {value} out of range [{lo}, {hi}]")
        return value

    def svarint(self, field: str, lo: int = -(1 << 63), hi: int = (1 << 63) - 1) -> int:
        raw = self.uvarint(field)
        value = _unzigzag(raw)
        if not lo <= value <= hi:
            raise self.fail(f"{field} = {value} out of range [{lo}, {hi}]")
        return value

    def expect_end(self, field: str) -> None:
        if self.pos != self.end:
            raise self.fail(f"{self.end - self.pos} unexpected trailing bytes after {field}")


# ---------------------------------------------------------------------------------------------
# the prior: histogram counts
# ---------------------------------------------------------------------------------------------


def _as_symbols(symbols) -> np.ndarray:
    """Validate the symbol array and return it as a 1-D int64 array."""
    arr = np.asarray(symbols)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind not in "iu" and arr.dtype != np.bool_:
        raise TypeError(f"symbols must be an integer array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError("cannot entropy-code an empty symbol vector")
    if arr.size > MAX_COUNT:
        raise LimitError(f"too many symbols: {arr.size} > {MAX_COUNT}")
    return arr.astype(np.int64, copy=False)


def _histogram(sym: np.ndarray) -> tuple[int, np.ndarray]:
    lo = int(sym.min())
    hi = int(sym.max())
    if lo < _INT32_MIN or hi > _INT32_MAX:
        raise LimitError(f"symbol values [{lo}, {hi}] do not fit in int32")
    nbins = hi - lo + 1
    if nbins > MAX_BINS:
        raise LimitError(
            f"symbol range [{lo}, {hi}] spans {nbins} values, more than the supported {MAX_BINS}; "
            "the quantisation step is probably far too small"
        )
    counts = np.bincount(sym - lo, minlength=nbins).astype(np.int64)
    return lo, counts


def _varint_bytes(values: np.ndarray) -> bytes:
    """Vectorised LEB128 encoding of non-negative int64 values (< 2**35)."""
    if values.size == 0:
        return b""
    values = values.astype(np.int64, copy=False)
    nbytes = np.ones(values.shape, dtype=np.int64)
    for k in range(1, 5):
        nbytes += values >= (1 << (7 * k))
    groups = np.stack([(values >> (7 * k)) & 0x7F for k in range(5)], axis=1)
    cont = np.arange(5)[None, :] < (nbytes[:, None] - 1)
    groups = groups | (cont.astype(np.int64) << 7)
    keep = np.arange(5)[None, :] < nbytes[:, None]
    return groups[keep].astype(np.uint8).tobytes()


def _count_tokens(counts: np.ndarray) -> np.ndarray:
    """Token stream for the counts: a nonzero count is itself; a run of r zero counts is the
    pair (0, r - 1)."""
    zero = counts == 0
    if not zero.any():
        return counts
    # run starts/ends of zeros
    padded = np.concatenate(([False], zero, [False]))
    diff = np.diff(padded.astype(np.int8))
    starts = np.flatnonzero(diff == 1)
    ends = np.flatnonzero(diff == -1)
    pieces = []
    prev = 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        pieces.append(counts[prev:s])
        pieces.append(np.array([0, e - s - 1], dtype=np.int64))
        prev = e
    pieces.append(counts[prev:])
    return np.concatenate(pieces)


def _write_prior(lo: int, counts: np.ndarray) -> bytes:
    out = bytearray([PRIOR_EXPLICIT_COUNTS])
    write_svarint(out, lo)
    write_uvarint(out, counts.size)
    out += _varint_bytes(_count_tokens(counts))
    return bytes(out)


def parse_prior(prior: bytes, count: int | None = None) -> tuple[int, np.ndarray]:
    """Parse a prior blob into ``(min_symbol, counts)`` (counts int64, one per value from
    ``min_symbol`` up). If ``count`` is given, the counts must sum to it."""
    r = ByteReader(prior, "prior")
    kind = r.u8("prior type")
    if kind != PRIOR_EXPLICIT_COUNTS:
        raise r.fail(f"unknown prior type {kind} (supported: {PRIOR_EXPLICIT_COUNTS})")
    lo = r.svarint("min symbol", _INT32_MIN, _INT32_MAX)
    nbins = r.uvarint("number of bins", 1, MAX_BINS)
    if lo + nbins - 1 > _INT32_MAX:
        raise r.fail("symbol range exceeds int32")
    counts = np.zeros(nbins, dtype=np.int64)
    i = 0
    total = 0
    while i < nbins:
        c = r.uvarint("bin count", 0, MAX_COUNT)
        if c:
            counts[i] = c
            total += c
            if total > MAX_COUNT:
                raise r.fail(f"counts sum to more than {MAX_COUNT}")
            i += 1
        else:
            run = r.uvarint("zero run", 0, nbins - i - 1) + 1
            i += run
    r.expect_end("prior counts")
    if counts[0] == 0 or counts[-1] == 0:
        raise r.fail("first and last bin must have nonzero counts")
    if count is not None and total != count:
        raise r.fail(f"counts sum to {total}, expected {count}")
    return lo, counts


def _bits_from_counts(counts: np.ndarray) -> float:
    c = counts[counts > 0].astype(np.float64)
    total = float(c.sum())
    if c.size <= 1:
        return 0.0
    return float(np.sum(c * (np.log2(total) - np.log2(c))))


def prior_ideal_bits(prior: bytes) -> float:
    """Ideal code length in bits of the symbols a prior was built from: -sum log2 p(q)."""
    _, counts = parse_prior(prior)
    return _bits_from_counts(counts)


def ideal_bits(symbols) -> float:
    """-sum log2 p(q) under the empirical prior of ``symbols`` (what ``encode_symbols`` stores)."""
    sym = _as_symbols(symbols)
    _, counts = _histogram(sym)
    return _bits_from_counts(counts)


# ---------------------------------------------------------------------------------------------
# exact arithmetic code for the tail (seeds the ANS stack)
# ---------------------------------------------------------------------------------------------


def _tail_length(nz_counts: list[int], total: int) -> int:
    """Number of trailing symbols coded exactly. Depends only on the prior: the smallest K such
    that K copies of the most probable symbol already carry >= _TAIL_MIN_BITS bits (exact integer
    test T**K >= 2**bits * cmax**K), capped at _TAIL_MAX_SYMBOLS and at the vector length."""
    cmax = max(nz_counts)
    k_cap = min(total, _TAIL_MAX_SYMBOLS)
    tk = 1
    ck = 1
    for k in range(1, k_cap + 1):
        tk *= total
        ck *= cmax
        if tk >= ck << _TAIL_MIN_BITS:
            return k
    return k_cap


def _tail_encode(idx: list[int], freq: list[int], cum: list[int], total: int) -> int:
    """Exact arithmetic code of alphabet indices ``idx`` with probabilities freq/total.
    Returns x0 = 2**m + b, where b / 2**m is the shortest dyadic number inside the final
    interval (leading 1 = sentinel so the decoder knows m)."""
    low = 0
    width = 1
    for s in idx:
        low = low * total + cum[s] * width
        width *= freq[s]
    scale = total ** len(idx)  # interval is [low, low + width) / scale
    high = low + width

    def fits(m: int) -> int | None:
        b = -((-(low << m)) // scale)  # ceil(low * 2**m / scale)
        return b if b * scale < (high << m) else None

    # fits(m) is monotone in m; hi_m is always feasible since 2**-hi_m < width / scale
    lo_m, hi_m = 0, (scale // width).bit_length() + 1
    while lo_m < hi_m:
        mid = (lo_m + hi_m) // 2
        if fits(mid) is None:
            lo_m = mid + 1
        else:
            hi_m = mid
    b = fits(lo_m)
    assert b is not None
    return (1 << lo_m) | b


def _tail_decode(x0: int, k: int, freq: list[int], cum: np.ndarray, total: int) -> list[int]:
    m = x0.bit_length() - 1
    b = x0 - (1 << m)
    low = 0
    width = 1
    bt = b
    out = []
    for _ in range(k):
        bt *= total
        u = (bt - ((low * total) << m)) // (width << m)  # floor position in [0, total)
        if not 0 <= u < total:  # cannot happen for 0 <= b < 2**m; defensive
            raise CodeFormatError("corrupt payload: tail code out of range")
        s = int(np.searchsorted(cum, u, side="right")) - 1
        out.append(s)
        low = low * total + int(cum[s]) * width
        width *= freq[s]
    return out


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


@dataclass
class EncodedSymbols:
    prior: bytes  # serialised prior (type tag + histogram)
    payload: bytes  # entropy-coded symbols
    ideal_bits: float  # -sum log2 p(q) under the stored prior
    count: int  # number of symbols

    @property
    def payload_bits(self) -> int:
        return 8 * len(self.payload)

    @property
    def total_bytes(self) -> int:
        return len(self.prior) + len(self.payload)


class _Model:
    """Everything both sides derive from the prior; identical on encode and decode."""

    def __init__(self, counts: np.ndarray, total: int):
        nz = np.flatnonzero(counts)
        self.values = nz  # alphabet index -> bin index
        self.freq = counts[nz].astype(np.int64)
        self.total = total
        self.cum = np.concatenate(([0], np.cumsum(self.freq)[:-1])).astype(np.int64)
        self.tail = _tail_length(self.freq.tolist(), total) if nz.size > 1 else total
        self._categorical = None

    @property
    def categorical(self):
        if self._categorical is None:
            probs = self.freq.astype(np.float64) / float(self.total)
            self._categorical = constriction.stream.model.Categorical(probs, perfect=False)
        return self._categorical


def _words_to_payload(words: np.ndarray) -> bytes:
    raw = words.astype("<u4").tobytes()
    return raw.rstrip(b"\x00")


def _int_to_words(x: int) -> np.ndarray:
    nwords = max(1, (x.bit_length() + 31) // 32)
    return np.frombuffer(x.to_bytes(4 * nwords, "little"), dtype="<u4").astype(np.uint32)


def encode_symbols(symbols) -> EncodedSymbols:
    """Entropy-code an integer vector. Raises LimitError for too many symbols or a value range
    wider than MAX_BINS."""
    sym = _as_symbols(symbols)
    lo, counts = _histogram(sym)
    d = int(sym.size)
    prior = _write_prior(lo, counts)
    model = _Model(counts, d)
    bits = _bits_from_counts(counts)
    if model.values.size == 1:
        return EncodedSymbols(prior=prior, payload=b"", ideal_bits=0.0, count=d)
    lut = np.zeros(counts.size, dtype=np.int32)
    lut[model.values] = np.arange(model.values.size, dtype=np.int32)
    idx = lut[sym - lo]
    k = model.tail
    x0 = _tail_encode(idx[d - k :].tolist(), model.freq.tolist(), model.cum.tolist(), d)
    if k == d:
        payload = x0.to_bytes((x0.bit_length() + 7) // 8, "little")
    else:
        coder = constriction.stream.stack.AnsCoder(_int_to_words(x0))
        coder.encode_reverse(np.ascontiguousarray(idx[: d - k]), model.categorical)
        payload = _words_to_payload(coder.get_compressed())
    return EncodedSymbols(prior=prior, payload=payload, ideal_bits=bits, count=d)


def decode_symbols(prior: bytes, payload: bytes, count: int) -> np.ndarray:
    """Inverse of ``encode_symbols``; returns an int32 array of length ``count``. Any corrupt,
    truncated or inconsistent input raises CodeFormatError."""
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool):
        raise CodeFormatError("corrupt payload: symbol count is not an integer")
    count = int(count)
    if not 1 <= count <= MAX_COUNT:
        raise CodeFormatError(f"corrupt payload: symbol count {count} out of range [1, {MAX_COUNT}]")
    prior = bytes(prior)
    payload = bytes(payload)
    lo, counts = parse_prior(prior, count)
    model = _Model(counts, count)
    if model.values.size == 1:
        if payload:
            raise CodeFormatError("corrupt payload: expected no payload for a single-valued vector")
        return np.full(count, lo, dtype=np.int32)
    if not payload:
        raise CodeFormatError("corrupt payload: empty")
    if payload[-1] == 0:
        raise CodeFormatError("corrupt payload: non-canonical trailing zero byte")
    # Information bound: every symbol costs <= log2(count) bits, plus a little slack.
    max_bits = count * count.bit_length() + 64
    if 8 * len(payload) > max_bits + 64:
        raise CodeFormatError("corrupt payload: longer than any valid payload for this prior")
    k = model.tail
    freq = model.freq.tolist()
    try:
        if k == count:
            x0 = int.from_bytes(payload, "little")
            head = np.zeros(0, dtype=np.int32)
        else:
            padded = payload + b"\x00" * (-len(payload) % 4)
            words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
            coder = constriction.stream.stack.AnsCoder(words)
            head = np.asarray(coder.decode(model.categorical, count - k), dtype=np.int64)
            rest = coder.get_compressed()
            x0 = int.from_bytes(rest.astype("<u4").tobytes(), "little")
    except CodeFormatError:
        raise
    except Exception as exc:  # constriction/numpy must never leak
        raise CodeFormatError(f"corrupt payload: {type(exc).__name__}") from None
    # x0 must be a valid, canonical tail code: bounded size, and re-encoding reproduces it
    if x0 < 1 or x0.bit_length() > k * count.bit_length() + 3:
        raise CodeFormatError("corrupt payload: tail code out of range")
    tail = _tail_decode(x0, k, freq, model.cum, count)
    if _tail_encode(tail, freq, model.cum.tolist(), count) != x0:
        raise CodeFormatError("corrupt payload: non-canonical tail code")
    idx = np.concatenate((head, np.asarray(tail, dtype=np.int64)))
    if idx.size != count or (idx.size and (idx.min() < 0 or idx.max() >= model.values.size)):
        raise CodeFormatError("corrupt payload: decoded symbols out of range")
    decoded_counts = np.bincount(idx, minlength=model.values.size)
    if not np.array_equal(decoded_counts, model.freq):
        raise CodeFormatError("corrupt payload: decoded histogram does not match the prior")
    return (model.values[idx] + lo).astype(np.int32)


def estimate_code_bytes(symbols) -> int:
    """Prior bytes + payload bytes for ``symbols`` (exact: runs the coder, ~1-2 ms for 131072
    symbols)."""
    enc = encode_symbols(symbols)
    return len(enc.prior) + len(enc.payload)
