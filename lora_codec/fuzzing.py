"""Generators of hostile code inputs, shared by the fast fuzz tests and the long fuzz script.

Each generator yields (kind, data) where data is bytes or str; every one of them must end in a
`LoraCodecError` with a message (or a valid `Code`, for inputs that happen to be well formed),
within a time and memory bound. See docs/SECURITY.md."""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np

from .bitstream import Code, Segment, segmented, to_text, write_code


def sample_code(seed: int = 0, theta_length: int = 2048, model: str = "tiny", fingerprint: bytes = bytes(8),
                sections: dict | None = None) -> bytes:
    """A well-formed code with Laplace symbols (no backbone needed)."""
    rng = np.random.default_rng(seed)
    symbols = np.round(rng.laplace(0, 1.5, size=theta_length)).astype(np.int32)
    return write_code(Code(
        model=model, fingerprint=fingerprint, targets=("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                                                       "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
        rank=1, theta_length=theta_length, proj_seed=0, frames=17, height=64, width=112, fps_num=16, fps_den=1,
        src_width=320, src_height=180, src_frames=33, noise_seed=seed, noise_mode=0, steps=20, shift=3.0,
        guidance=1.0, caption="a hostile world", step_size=0.1, symbols=symbols, sections=dict(sections or {}),
    ))


def sample_segmented_code(seed: int = 0, segments: int = 3, theta_length: int = 1024, shared: bool = True) -> bytes:
    """A well-formed multi-segment code (format version 2) of `segments` segments of 17 frames with
    1-frame overlaps; `shared`: symbols alike (one shared prior is smaller) or of different spreads
    (a prior per segment is smaller)."""
    base = read_code_quick(sample_code(seed, theta_length))
    rng = np.random.default_rng(seed + 1)
    segs = [Segment(16 * i, 0.1, np.round(rng.laplace(0, 1.5 if shared else 0.5 * 8 ** i,
                                                       size=theta_length)).astype(np.int32))
            for i in range(segments)]
    return write_code(segmented(base, segs, 16 * (segments - 1) + 17))


def read_code_quick(data: bytes) -> Code:
    from .bitstream import read_code

    return read_code(data)


def segment_table_span(valid: bytes) -> tuple[int, int]:
    """(first byte, end) of the segment table of the multi-segment code `valid` (count .. coding mode)."""
    from .bitstream import _parse

    p = _parse(valid)
    return p.table_offset, p.table_offset + p.table_bytes


def truncated_segment_tables(valid: bytes):
    """(what, data) for a multi-segment code cut inside its segment table: the file simply ends there
    (CRC fixed up), or the table loses bytes while what follows stays (CRC fixed up)."""
    start, end = segment_table_span(valid)
    body = valid[:-4]
    for cut in range(start, end):
        yield f"ends at table byte {cut - start}", with_crc(body[:cut])
        yield f"table bytes {cut - start}.. missing", with_crc(body[:cut] + body[end:])


def with_crc(body: bytes) -> bytes:
    """`body` (everything but the CRC) with a valid CRC32 appended: gets past the integrity check."""
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def _step_size_offset(valid: bytes) -> int:
    """Byte offset of the float32 step_size in the binary code `valid` (it follows shift and guidance; in a
    multi-segment code the first segment's step in the segment table)."""
    from .bitstream import _parse, read_code

    code = read_code(valid)
    if code.segments:  # version 2: the first segment's step in the segment table
        return valid.index(struct.pack("<f", code.step_size), _parse(valid).table_offset)
    packed = struct.pack("<fff", code.shift, code.guidance, code.step_size)
    return valid.index(packed) + 8


def hostile_inputs(valid: bytes, count: int, seed: int = 0):
    """`count` hostile variants of `valid`, cycling through the kinds."""
    rng = random.Random(seed)
    body = valid[:-4]
    text = to_text(valid)
    kinds = ("random", "truncate", "bitflip", "crc_ok_mutation", "crc_ok_varint", "text_bad_chars", "text_truncate",
             "version", "prefix_garbage", "crc_ok_step_size")
    step_at = _step_size_offset(valid)
    n_trunc = 0
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if kind == "random":
            n = rng.choice([0, 1, 3, 4, 8, 16, 64, 300, 2000])
            data = bytes(rng.getrandbits(8) for _ in range(n))
            if rng.random() < 0.5:
                data = b"VOV\x01" + data
        elif kind == "truncate":
            data = valid[: n_trunc % len(valid)]
            n_trunc += 1
        elif kind == "bitflip":
            b = bytearray(valid)
            for _ in range(rng.choice([1, 1, 2, 8])):
                pos = rng.randrange(len(b))
                b[pos] ^= 1 << rng.randrange(8)
            data = bytes(b)
        elif kind == "crc_ok_mutation":
            b = bytearray(body)
            for _ in range(rng.choice([1, 2, 4])):
                pos = rng.randrange(4, len(b))
                b[pos] = rng.getrandbits(8)
            data = with_crc(bytes(b))
        elif kind == "crc_ok_varint":
            # splice a huge varint (absurd length / range) at a random field position, CRC fixed up
            pos = rng.randrange(4, min(len(body), 80))
            huge = bytes([0xFF] * rng.choice([4, 8, 9, 10, 12]) + [0x7F])
            data = with_crc(body[:pos] + huge + body[pos + rng.choice([0, 1, 2]):])
        elif kind == "text_bad_chars":
            t = list(text)
            for _ in range(rng.choice([1, 3])):
                t[rng.randrange(5, len(t))] = rng.choice("!@#$%^&*()[]{}<>?\\\"'é\x00\u2603 ")
            data = "".join(t)
        elif kind == "text_truncate":
            data = text[: rng.randrange(0, len(text))]
        elif kind == "crc_ok_step_size":
            # another float32 step size (huge, tiny, negative, inf, nan): the dequantised adapter
            # symbol x step must stay within the format's bound or the code is refused
            step = rng.choice([float("inf"), float("nan"), -1.0, 0.0, 1e-30, 3.4e38, 1e6, 2.0 ** rng.randrange(-20, 40)])
            data = with_crc(body[:step_at] + struct.pack("<f", step) + body[step_at + 4:])
        elif kind == "version":
            data = with_crc(body[:3] + bytes([rng.choice([0, 3, 4, 99, 255])]) + body[4:])
        else:
            data = rng.choice(["vov2:", "VOV1:", "vov1", "", "   ", "vov1:" + "A" * rng.randrange(1, 50)])
        yield kind, data
