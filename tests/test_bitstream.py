import dataclasses
import os
import struct
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lora_codec import bitstream  # noqa: E402
from lora_codec.bitstream import (  # noqa: E402
    MAX_CODE_BYTES,
    TARGET_PRESETS,
    Code,
    from_text,
    load_code_bytes,
    read_code,
    size_report,
    to_text,
    write_code,
)
from lora_codec.entropy import write_uvarint  # noqa: E402
from lora_codec.errors import CodeFormatError, LimitError  # noqa: E402


def make_code(d=2048, **over):
    rng = np.random.default_rng(0)
    fields = dict(
        model="tiny",
        fingerprint=bytes(range(1, 9)),
        targets=TARGET_PRESETS[1],
        rank=4,
        theta_length=d,
        proj_seed=12345,
        frames=17,
        height=256,
        width=320,
        fps_num=30000,
        fps_den=1001,
        src_width=1280,
        src_height=720,
        src_frames=48,
        noise_seed=2**64 - 1,
        noise_mode=1,
        steps=20,
        shift=3.0,
        guidance=5.0,
        caption="a rabbit in a meadow, cinematic lighting",
        step_size=0.0125,
        symbols=np.round(rng.laplace(0, 1.5, d)).astype(np.int32),
    )
    fields.update(over)
    return Code(**fields)


def recrc(body: bytes) -> bytes:
    """body without CRC -> body + valid CRC"""
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def test_roundtrip_basic():
    code = make_code()
    data = write_code(code)
    assert data[:4] == b"VOV\x01"
    back = read_code(data)
    assert back == code
    assert back.symbols.dtype == np.int32
    assert write_code(back) == data


@pytest.mark.parametrize(
    "over",
    [
        dict(targets=("attn1.to_q", "ffn.net.0.proj")),
        dict(targets=tuple(f"blocks.{i}.attn" for i in range(64))),
        dict(caption=""),
        dict(caption="ünïcødé ✓ " * 40),
        dict(caption="x" * 4096),
        dict(sections={1: b"refine" * 100, 7: b"", 255: b"\x00\x01"}),
        dict(d=1, symbols=np.array([3], np.int32)),
        dict(d=4096, symbols=np.zeros(4096, np.int32)),
        dict(model="wan2.1-t2v-1.3b", rank=64, theta_length=4096, symbols=np.arange(4096) % 50 - 25),
        dict(noise_mode=0, noise_seed=0, proj_seed=2**32 - 1, shift=-0.0, guidance=1e30),
        dict(frames=1024, height=4096, width=16, src_width=0, src_height=0, src_frames=0, steps=10000),
        dict(fps_num=2**31 - 1, fps_den=2**31 - 1, step_size=1e-38),
    ],
)
def test_roundtrip_variants(over):
    d = over.pop("d", None)
    if "symbols" in over and "theta_length" not in over:
        over["theta_length"] = len(over["symbols"])
    code = make_code(**({"d": d} if d else {}), **over)
    data = write_code(code)
    assert read_code(data) == code
    assert read_code(load_code_bytes(to_text(data))) == code


def test_caption_compression_flag():
    long = make_code(caption="the quick brown fox jumps over the lazy dog. " * 50)
    short = make_code(caption="ok")
    r_long, r_short = size_report(write_code(long)), size_report(write_code(short))
    assert r_long["caption_bytes"] < 200  # deflated
    assert r_short["caption_bytes"] == 2  # raw
    assert read_code(write_code(long)).caption == long.caption


def test_floats_rounded_to_float32():
    code = make_code(step_size=0.1, shift=1 / 3)
    assert code.step_size == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert read_code(write_code(code)) == code


def test_header_is_compact():
    data = write_code(make_code(caption="", noise_seed=7, proj_seed=0))
    rep = size_report(data)
    assert rep["header_bytes"] <= 64  # magic .. CRC, incl. 5-byte model name and 8-byte fingerprint


def test_size_report_sums():
    for code in (make_code(), make_code(sections={1: b"abc" * 50, 9: b"x"}, caption="hello " * 30)):
        data = write_code(code)
        rep = size_report(data)
        keys = ["header_bytes", "caption_bytes", "prior_bytes", "payload_bytes", "sections_bytes"]
        assert all(isinstance(rep[k], int) for k in keys + ["total_bytes"])
        assert sum(rep[k] for k in keys) == rep["total_bytes"] == len(data)
        assert sum(rep["section_bytes_by_tag"].values()) == rep["sections_bytes"]
        assert set(rep["section_bytes_by_tag"]) == set(code.sections)
        assert rep["payload_bytes"] * 8 <= rep["ideal_payload_bits"] * 1.01 + 16
        assert rep["ideal_payload_bits"] > 0
    rep = size_report(write_code(make_code(sections={3: b"abc"})))
    assert rep["section_bytes_by_tag"] == {3: 5}


def test_text_form():
    data = write_code(make_code())
    text = to_text(data)
    assert text.startswith("vov1:") and "\n" not in text and "=" not in text
    assert set(text[5:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert from_text(text) == data
    assert from_text("  \n" + text + "\r\n\t") == data
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert from_text(wrapped) == data
    assert load_code_bytes(data) == data
    assert load_code_bytes(text) == data
    assert load_code_bytes(("\n" + text + "\n").encode()) == data
    assert load_code_bytes(bytearray(data)) == data


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "prefix"),
        ("VOV1:abcd", "prefix"),
        ("vov2:abcd", "version"),
        ("hello world", "prefix"),
        ("vov1:ab+d", "character"),
        ("vov1:ab/d", "character"),
        ("vov1:abcd==", "character"),
        ("vov1:abcdé", "character"),
        ("vov1:abcde", "length"),
        ("vov1:ab", "non-canonical"),  # 'ab' has stray low bits
    ],
)
def test_text_errors(text, match):
    with pytest.raises(CodeFormatError, match=match):
        from_text(text)


def test_load_code_bytes_errors():
    with pytest.raises(CodeFormatError, match="not a lora_codec code"):
        load_code_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(CodeFormatError):
        load_code_bytes(b"")
    with pytest.raises(CodeFormatError):
        load_code_bytes(b"vov1:\xff\xfe")
    with pytest.raises(CodeFormatError):
        load_code_bytes(12345)


def test_magic_and_version_messages():
    data = write_code(make_code())
    with pytest.raises(CodeFormatError, match="not a lora_codec code"):
        read_code(b"XYZ" + data[3:])
    with pytest.raises(CodeFormatError, match="not a lora_codec code"):
        read_code(b"hello")
    with pytest.raises(CodeFormatError, match=r"version 3.*version 1, 2"):
        read_code(recrc(b"VOV\x03" + data[4:-4]))
    with pytest.raises(CodeFormatError, match="CRC"):
        read_code(data[:-1] + bytes([data[-1] ^ 1]))


def test_every_truncation_raises():
    data = write_code(make_code(d=64, caption="short caption", sections={1: b"abc"}))
    for cut in range(len(data)):
        with pytest.raises(CodeFormatError):
            read_code(data[:cut])
        with pytest.raises(CodeFormatError):
            size_report(data[:cut])
    text = to_text(data)
    for cut in range(len(text)):
        with pytest.raises(CodeFormatError):
            read_code(load_code_bytes(text[:cut]))


def test_every_bit_flip_raises():
    data = write_code(make_code(d=64, caption="short caption", sections={1: b"abc"}))
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(CodeFormatError):
                read_code(bytes(bad))


def test_mutations_with_valid_crc_never_leak_other_exceptions():
    rng = np.random.default_rng(1)
    data = write_code(make_code(d=300, caption="a caption that is long enough " * 3, sections={1: b"r" * 20}))
    body = data[:-4]
    accepted = 0
    for _ in range(1500):
        b = bytearray(body)
        for _ in range(int(rng.integers(1, 4))):
            op = rng.integers(3)
            i = int(rng.integers(4, len(b)))
            if op == 0:
                b[i] = int(rng.integers(256))
            elif op == 1:
                del b[i]
            else:
                b.insert(i, int(rng.integers(256)))
        try:
            code = read_code(recrc(bytes(b)))
        except CodeFormatError:
            continue
        accepted += 1
        assert write_code(code)  # anything accepted is a valid, writable Code
    assert accepted < 1500


def _layout(code):
    """Offsets of a few fields in write_code(code) for the default make_code layout."""
    data = write_code(code)
    pos = 4 + 1 + len(code.model) + 8 + 1  # magic, version, model, fingerprint, preset 1
    return data, pos


def test_crafted_absurd_fields_with_valid_crc():
    code = make_code(d=64, caption="")
    data, pos = _layout(code)
    body = data[:-4]
    # rank 0 and 65
    for rank in (0, 65):
        with pytest.raises(CodeFormatError, match="rank"):
            read_code(recrc(body[:pos] + bytes([rank]) + body[pos + 1 :]))
    # theta_length absurd (2**40): varint right after rank
    r = bytearray()
    write_uvarint(r, 2**40)
    with pytest.raises(CodeFormatError, match="theta_length"):
        read_code(recrc(body[: pos + 1] + bytes(r) + body[pos + 2 :]))
    # unknown target preset / model length 0 / model length 200
    with pytest.raises(CodeFormatError, match="preset"):
        read_code(recrc(body[: pos - 1] + b"\x09" + body[pos:]))
    with pytest.raises(CodeFormatError):
        read_code(recrc(body[:4] + b"\x00" + body[5:]))
    with pytest.raises(CodeFormatError, match="model length"):
        read_code(recrc(body[:4] + bytes([200]) + body[5:]))
    # non-ASCII model name
    with pytest.raises(CodeFormatError, match="ASCII"):
        read_code(recrc(body[:5] + b"\xfe" + body[6:]))

    # hand-built tail: fields up to the caption, then absurd lengths
    def tail_after_floats(*parts):
        out = bytearray(body[: _floats_end(code)])
        for p in parts:
            out += p
        return recrc(bytes(out))

    enc_prior, enc_payload = _prior_payload(code)
    huge = bytearray()
    write_uvarint(huge, 2**62)
    with pytest.raises(CodeFormatError, match="caption length"):
        read_code(tail_after_floats(bytes(huge)))
    with pytest.raises(CodeFormatError, match="prior length"):
        read_code(tail_after_floats(b"\x00", bytes(huge)))
    pl = bytearray([len(enc_prior)]) + enc_prior
    with pytest.raises(CodeFormatError, match="payload length"):
        read_code(tail_after_floats(b"\x00", pl, bytes(huge)))
    good_pl = bytearray()
    write_uvarint(good_pl, len(enc_payload))
    good_pl += enc_payload
    assert read_code(tail_after_floats(b"\x00", pl, good_pl)) == code
    sec_len = bytearray()
    write_uvarint(sec_len, (16 << 20) + 1)
    with pytest.raises(CodeFormatError, match="section 1 length"):
        read_code(tail_after_floats(b"\x00", pl, good_pl, b"\x01", bytes(sec_len), b"x" * 10))
    with pytest.raises(CodeFormatError, match="section tag 0"):
        read_code(tail_after_floats(b"\x00", pl, good_pl, b"\x00\x00"))
    with pytest.raises(CodeFormatError, match="order"):
        read_code(tail_after_floats(b"\x00", pl, good_pl, b"\x05\x00\x05\x00"))
    with pytest.raises(CodeFormatError, match="truncated"):
        read_code(tail_after_floats(b"\x00", pl, good_pl, b"\x05\x09ab"))
    # invalid UTF-8 caption, bogus deflate stream
    with pytest.raises(CodeFormatError, match="UTF-8"):
        read_code(tail_after_floats(b"\x02\xff\xfe", pl, good_pl))


def _floats_end(code):
    """Offset just after the three float32 fields (i.e. the caption length varint)."""
    data = write_code(code)
    rep = size_report(data)
    # caption empty => after floats: caption len (1) + prior len + prior + payload len + payload + CRC
    tail = 1 + _vlen(rep["prior_bytes"]) + rep["prior_bytes"] + _vlen(rep["payload_bytes"]) + rep["payload_bytes"] + 4
    return len(data) - tail


def _vlen(n):
    b = bytearray()
    write_uvarint(b, n)
    return len(b)


def _prior_payload(code):
    from lora_codec.entropy import encode_symbols

    enc = encode_symbols(code.symbols)
    return bytes(enc.prior), bytes(enc.payload)


def test_flags_and_deflate_errors():
    code = make_code(d=64, caption="")
    data = write_code(code)
    body = bytearray(data[:-4])
    fe = _floats_end(code)
    flags_pos = fe - 12 - 1 - 1  # flags, steps(1 byte: 20), 3 floats
    assert body[flags_pos] == 1  # noise_mode=1
    body2 = bytearray(body)
    body2[flags_pos] = 0x80
    with pytest.raises(CodeFormatError, match="flag"):
        read_code(recrc(bytes(body2)))
    # deflate flag with garbage stream
    body3 = bytearray(body[:fe]) + b"\x03\xff\xff\xff" + body[fe + 1 :]
    body3[flags_pos] |= 0x02
    with pytest.raises(CodeFormatError, match="deflate"):
        read_code(recrc(bytes(body3)))
    # deflate bomb: 100 kB of zeros deflated, declared as caption
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = comp.compress(b"\x00" * 100000) + comp.flush()
    lb = bytearray()
    write_uvarint(lb, len(bomb))
    body4 = bytearray(body[:fe]) + lb + bomb + body[fe + 1 :]
    body4[flags_pos] |= 0x02
    with pytest.raises(CodeFormatError, match="caption"):
        read_code(recrc(bytes(body4)))
    # NaN step size / zero step size
    for value in (float("nan"), 0.0, -1.0, float("inf")):
        body5 = bytearray(body)
        body5[fe - 4 : fe] = struct.pack("<f", value)
        with pytest.raises(CodeFormatError, match="step_size"):
            read_code(recrc(bytes(body5)))


@pytest.mark.parametrize(
    "field,value,exc",
    [
        ("model", "", CodeFormatError),
        ("model", "x" * 65, CodeFormatError),
        ("model", "modèle", CodeFormatError),
        ("model", 5, CodeFormatError),
        ("fingerprint", b"1234567", CodeFormatError),
        ("fingerprint", "12345678", CodeFormatError),
        ("targets", (), CodeFormatError),
        ("targets", tuple(f"t{i}" for i in range(65)), CodeFormatError),
        ("targets", ("ok", "y" * 65), CodeFormatError),
        ("rank", 0, CodeFormatError),
        ("rank", 65, CodeFormatError),
        ("rank", True, CodeFormatError),
        ("rank", 4.0, CodeFormatError),
        ("theta_length", 2047, CodeFormatError),
        ("theta_length", (1 << 24) + 1, LimitError),
        ("proj_seed", -1, CodeFormatError),
        ("proj_seed", 2**32, CodeFormatError),
        ("frames", 0, CodeFormatError),
        ("frames", 1025, CodeFormatError),
        ("height", 15, CodeFormatError),
        ("width", 4097, CodeFormatError),
        ("fps_num", 0, CodeFormatError),
        ("fps_den", 2**31, CodeFormatError),
        ("src_width", -1, CodeFormatError),
        ("src_frames", 2**31, CodeFormatError),
        ("noise_seed", 2**64, CodeFormatError),
        ("noise_seed", -1, CodeFormatError),
        ("noise_mode", 2, CodeFormatError),
        ("steps", 0, CodeFormatError),
        ("steps", 10001, CodeFormatError),
        ("shift", float("nan"), CodeFormatError),
        ("guidance", float("inf"), CodeFormatError),
        ("guidance", 1e39, CodeFormatError),
        ("step_size", 0.0, CodeFormatError),
        ("step_size", -0.5, CodeFormatError),
        ("step_size", 1e-50, CodeFormatError),
        ("step_size", float("nan"), CodeFormatError),
        ("caption", "é" * 2049, LimitError),
        ("caption", b"bytes", CodeFormatError),
        ("caption", "\ud800", CodeFormatError),
        ("symbols", np.zeros(2048, np.float32), CodeFormatError),
        ("symbols", np.array([2**40] * 2048), CodeFormatError),
        ("sections", {0: b"x"}, CodeFormatError),
        ("sections", {256: b"x"}, CodeFormatError),
        ("sections", {1: "text"}, CodeFormatError),
        ("sections", {1: b"\x00" * ((16 << 20) + 1)}, LimitError),
    ],
)
def test_out_of_range_refused_on_write(field, value, exc):
    code = dataclasses.replace(make_code(), **{field: value})
    with pytest.raises(exc):
        write_code(code)


def test_symbol_range_limit_on_write():
    sym = np.zeros(2048, np.int32)
    sym[0] = 1 << 21
    with pytest.raises(LimitError):
        write_code(make_code(symbols=sym, step_size=1e-5))  # within the adapter bound: the range limit speaks


def test_size_limits(monkeypatch):
    with pytest.raises(LimitError):
        read_code(b"VOV\x01" + bytes(MAX_CODE_BYTES))
    monkeypatch.setattr(bitstream, "MAX_CODE_BYTES", 1000)
    big = make_code(sections={1: b"\x00" * 2000})
    with pytest.raises(LimitError):
        write_code(big)
    monkeypatch.setattr(bitstream, "MAX_CODE_BYTES", 64 << 20)
    data = write_code(big)
    monkeypatch.setattr(bitstream, "MAX_CODE_BYTES", 1000)
    for fn in (read_code, load_code_bytes, size_report):
        with pytest.raises(LimitError):
            fn(data)
    with pytest.raises(LimitError):
        load_code_bytes("vov1:" + "A" * 1400)


def test_code_equality():
    a, b = make_code(), make_code()
    assert a == b
    assert a != dataclasses.replace(b, caption="other")
    c = make_code()
    c.symbols = c.symbols.copy()
    c.symbols[0] += 1
    assert a != c
    assert a != "not a code"


GOLDEN_HEX = (
    "564f56010474696e790123456789abcdef0102f4030709406018018005e802180300080000a0400000803f0000803e"
    "0363617410000b0d27272726262626272727262626e80103ac1a5669b2c79be4c7ffb23e43163687dfcaee06b3fbfe"
    "5c361436a82dd8e22b9af3e15ad023f219f7c8b21e1af249fb9221f88950c9975c9ef9b302af22575d28d33482f8f8"
    "94f4ff17adcb76d206820af751f714ae3d71bdd510333cf5de187ca62a6d84cc6a1299f5d785f49f124c27d5c7176c"
    "fb93cdddac72d87fcaeca322fdda90f3a4c320f8d4ee88d3fd2e4f92b04e56ecd50b688b80dacfc6a44edd2dd64a00"
    "be791c43ee9ee30549c6ae7c4a7be70d19a7d4c12ed1df1808815ba0b3a97d8725c8d0b91f77a100a1a47575dccd39"
    "c60585926570a3a5855360e8b63901b809eed8030102000137b76b89"
)


def test_golden_file():
    """Byte-exact v1 file for a fixed Code (format stability; layout in docs/FORMAT.md)."""
    q = ((np.arange(500) * 7) % 13 - 6).astype(np.int32)
    code = Code(model="tiny", fingerprint=bytes.fromhex("0123456789abcdef"), targets=TARGET_PRESETS[1], rank=2,
                theta_length=500, proj_seed=7, frames=9, height=64, width=96, fps_num=24, fps_den=1,
                src_width=640, src_height=360, src_frames=24, noise_seed=3, noise_mode=0, steps=8, shift=5.0,
                guidance=1.0, caption="cat", step_size=0.25, symbols=q, sections={1: b"\x00\x01"})
    data = write_code(code)
    head = ("564f5601" "0474696e79" "0123456789abcdef" "01" "02" "f403" "07" "09" "40" "60" "18" "01"
            "8005" "e802" "18" "03" "00" "08" "0000a040" "0000803f" "0000803e" "03636174"
            "10" "000b0d27272726262626272727262626" "e801")
    assert data.hex().startswith(head)  # field by field, see docs/FORMAT.md
    assert data[-8:-4] == b"\x01\x02\x00\x01"  # section tag 1, length 2, bytes 00 01
    assert data == bytes.fromhex(GOLDEN_HEX)
    assert read_code(data) == code
