import os
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lora_codec import entropy  # noqa: E402
from lora_codec.entropy import (  # noqa: E402
    ByteReader,
    EncodedSymbols,
    decode_symbols,
    encode_symbols,
    estimate_code_bytes,
    ideal_bits,
    parse_prior,
    prior_ideal_bits,
    write_svarint,
    write_uvarint,
)
from lora_codec.errors import CodeFormatError, LimitError  # noqa: E402


def laplace(d, scale, seed=0):
    rng = np.random.default_rng(seed)
    return np.round(rng.laplace(0.0, scale, d)).astype(np.int32)


def roundtrip(q):
    enc = encode_symbols(q)
    assert isinstance(enc, EncodedSymbols)
    assert enc.count == len(q)
    out = decode_symbols(enc.prior, enc.payload, enc.count)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, np.asarray(q))
    return enc


@pytest.mark.parametrize("d", [2, 3, 7, 100, 2048, 4096, 8192])
@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_roundtrip_laplace(d, scale):
    for seed in range(3):
        roundtrip(laplace(d, scale, seed))


def test_roundtrip_large_and_dtypes():
    q = laplace(131072, 2.0, 5)
    roundtrip(q)
    for dtype in (np.int8, np.int16, np.int64, np.uint8):
        r = np.clip(laplace(3000, 3.0, 1), 0 if dtype == np.uint8 else -100, 100).astype(dtype)
        enc = encode_symbols(r)
        np.testing.assert_array_equal(decode_symbols(enc.prior, enc.payload, len(r)), r.astype(np.int32))


@pytest.mark.parametrize("d,scales", [(2048, (1.0, 2.0, 4.0)), (4096, (1.0, 2.0, 4.0)), (131072, (1.0, 4.0))])
def test_payload_within_half_percent_of_ideal(d, scales):
    for scale in scales:
        for seed in range(4 if d < 100000 else 1):
            q = laplace(d, scale, seed)
            enc = encode_symbols(q)
            ideal = -np.sum(np.log2(np.unique(q, return_counts=True)[1][np.searchsorted(np.unique(q), q)] / d))
            assert enc.ideal_bits == pytest.approx(ideal, rel=1e-9)
            assert enc.ideal_bits == pytest.approx(ideal_bits(q), rel=1e-12)
            assert 8 * len(enc.payload) <= enc.ideal_bits * 1.005, (d, scale, seed)


def test_single_value_vectors():
    for q in (np.array([5], np.int32), np.full(1000, -3, np.int32), np.array([0]), np.full(7, 2**31 - 1)):
        enc = roundtrip(q)
        assert enc.payload == b""
        assert enc.ideal_bits == 0.0
        assert ideal_bits(q) == 0.0
    enc = encode_symbols(np.array([4]))
    with pytest.raises(CodeFormatError):
        decode_symbols(enc.prior, b"\x01", 1)
    with pytest.raises(CodeFormatError):
        decode_symbols(enc.prior, b"", 2)  # counts do not sum to count


def test_extreme_values_and_limits():
    roundtrip(np.array([2**31 - 1, 2**31 - 2, 2**31 - 1, 2**31 - 5]))
    roundtrip(np.array([-(2**31), -(2**31) + 1, -(2**31)]))
    sparse = np.zeros(5000, np.int64)
    sparse[17] = entropy.MAX_BINS - 1  # widest allowed range, mostly empty bins
    enc = roundtrip(sparse)
    assert len(enc.prior) < 16  # zero runs are run-length coded
    with pytest.raises(LimitError, match="spans"):
        encode_symbols(np.array([0, entropy.MAX_BINS]))
    with pytest.raises(LimitError):
        encode_symbols(np.array([-(2**31) + 1, 2**31 - 1]))
    with pytest.raises(LimitError, match="int32"):
        encode_symbols(np.array([2**31, 2**31 + 1]))
    with pytest.raises(ValueError):
        encode_symbols(np.array([], np.int32))
    with pytest.raises(TypeError):
        encode_symbols(np.array([0.5, 1.0]))


def test_estimate_is_exact_and_fast():
    q = laplace(131072, 2.0, 3)
    enc = encode_symbols(q)
    assert estimate_code_bytes(q) == len(enc.prior) + len(enc.payload)
    estimate_code_bytes(q)
    t0 = time.perf_counter()
    for _ in range(5):
        estimate_code_bytes(q)
    assert (time.perf_counter() - t0) / 5 < 0.05


def test_prior_format():
    q = np.array([-2, -2, 0, 3, 3, 3], np.int32)
    enc = encode_symbols(q)
    lo, counts = parse_prior(enc.prior, 6)
    assert lo == -2
    assert counts.tolist() == [2, 0, 1, 0, 0, 3]
    # type 0, zigzag(-2)=3, 6 bins, 2, (0, run-1=0), 1, (0, run-1=1), 3
    assert enc.prior == bytes([0, 3, 6, 2, 0, 0, 1, 0, 1, 3])
    assert prior_ideal_bits(enc.prior) == pytest.approx(enc.ideal_bits)


def test_bad_priors():
    enc = encode_symbols(laplace(500, 2.0))
    p, pl, n = enc.prior, enc.payload, enc.count
    for cut in range(len(p)):
        with pytest.raises(CodeFormatError):
            decode_symbols(p[:cut], pl, n)
    bad = [
        bytes([1]) + p[1:],  # unknown prior type
        p + b"\x01",  # trailing bytes
        bytes([0, 0, 2, 0, 0, 5]),  # first bin zero
        bytes([0, 0, 2, 5, 0, 0]),  # last bin zero
        bytes([0, 0, 0]),  # zero bins
        bytes([0, 0]) + bytes([0x80, 0x80, 0x80, 0x01]),  # nbins way above MAX_BINS
        bytes([0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x01]),  # count above MAX_COUNT
        bytes([0, 0, 3, 1, 0, 5, 1]),  # zero run past the end
        bytes([0, 0x80, 0x00, 1, 1]),  # non-canonical varint
        bytes([0, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 1, 1]),  # min symbol below int32
        bytes([0, 0xFC, 0xFF, 0xFF, 0xFF, 0x0F, 2, 1, 1]),  # range above int32
        bytes([0]) + b"\xff" * 12,  # varint too long
    ]
    for b in bad:
        with pytest.raises(CodeFormatError):
            decode_symbols(b, pl, n)
    with pytest.raises(CodeFormatError, match="sum"):
        decode_symbols(p, pl, n + 1)


def test_bad_payloads_and_counts():
    q = laplace(3000, 1.5, 7)
    enc = encode_symbols(q)
    for cut in range(len(enc.payload)):
        with pytest.raises(CodeFormatError):
            decode_symbols(enc.prior, enc.payload[:cut], enc.count)
    for junk in (enc.payload + b"\x01", enc.payload + b"\x00", b"\x00" + enc.payload, b"\xff" * 5000):
        with pytest.raises(CodeFormatError):
            decode_symbols(enc.prior, junk, enc.count)
    for count in (0, -1, entropy.MAX_COUNT + 1, True, 1.5, "3000"):
        with pytest.raises(CodeFormatError):
            decode_symbols(enc.prior, enc.payload, count)
    # random bit flips: a CodeFormatError or (rarely, undetectable without the file CRC) a
    # different vector with the same histogram -- never another exception
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = bytearray(enc.payload)
        p[rng.integers(len(p))] ^= 1 << int(rng.integers(8))
        try:
            out = decode_symbols(enc.prior, bytes(p), enc.count)
        except CodeFormatError:
            continue
        assert out.shape == q.shape and np.array_equal(np.bincount(out - q.min()), np.bincount(q - q.min()))


def test_tail_only_small_vectors():
    # vectors short enough to be coded entirely by the exact tail code
    rng = np.random.default_rng(3)
    for _ in range(200):
        d = int(rng.integers(2, 40))
        q = rng.integers(-3, 4, d).astype(np.int32)
        roundtrip(q)


def test_varints():
    values = [0, 1, 127, 128, 300, 2**32 - 1, 2**63, 2**64 - 1]
    out = bytearray()
    for v in values:
        write_uvarint(out, v)
    svalues = [0, -1, 1, -(2**31), 2**31 - 1, -(2**63), 2**63 - 1]
    for v in svalues:
        write_svarint(out, v)
    r = ByteReader(bytes(out))
    assert [r.uvarint("v") for _ in values] == values
    assert [r.svarint("s") for _ in svalues] == svalues
    r.expect_end("all")
    with pytest.raises(ValueError):
        write_uvarint(bytearray(), 2**64)
    with pytest.raises(ValueError):
        write_uvarint(bytearray(), -1)
    for bad in (b"\x80", b"\x80\x00", b"\xff" * 9 + b"\x02", b"\xff" * 11):
        with pytest.raises(CodeFormatError):
            ByteReader(bad).uvarint("v")
    with pytest.raises(CodeFormatError, match="out of range"):
        ByteReader(b"\x05").uvarint("v", 0, 4)


def test_golden_vector():
    """Bit-exact payload of a fixed vector. If this fails, the coder (e.g. a constriction upgrade
    changing Categorical(perfect=False) quantisation) no longer reads old code files: that needs
    a new prior type or format version, not a new golden value."""
    import hashlib

    counts = [1, 2, 5, 17, 60, 200, 600, 200, 60, 17, 5, 2, 1, 0, 0, 1]
    vals = np.repeat(np.arange(-6, 10), counts)
    q = vals[(np.arange(len(vals)) * 1009) % len(vals)].astype(np.int32)
    enc = encode_symbols(q)
    assert enc.prior.hex() == "000b10010205113cc801d804c8013c11050201000101"
    assert len(enc.payload) == 309
    assert hashlib.sha256(enc.payload).hexdigest() == "b99d471df092dbcb9e5b5ac4a57d8afdfc50cc15e9debcebb24d4dd2875835f3"
    np.testing.assert_array_equal(decode_symbols(enc.prior, enc.payload, len(q)), q)
