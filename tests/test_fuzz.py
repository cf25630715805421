"""Fast slice of the code-parser fuzzing (the long run: scripts/fuzz_codes.py).

Every hostile input ends in the project's own error type with a message, quickly and without large
allocations; none reaches torch."""

import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numpy as np

from lora_codec.bitstream import MAX_ABS_THETA, load_code_bytes, read_code
from lora_codec.errors import LoraCodecError
from lora_codec.fuzzing import hostile_inputs, sample_code, with_crc

VALID = sample_code(seed=1)


def parse(data):
    return read_code(load_code_bytes(data))


def test_every_truncation_and_generated_hostile_input():
    counts = {}
    tracemalloc.start()
    try:
        for kind, data in hostile_inputs(VALID, 3000, seed=7):
            t0 = time.perf_counter()
            try:
                parse(data)
                outcome = "parsed"
            except LoraCodecError as exc:
                assert str(exc), kind
                outcome = "refused"
            assert time.perf_counter() - t0 < 1.0, kind
            counts[(kind, outcome)] = counts.get((kind, outcome), 0) + 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak  # nothing near the 64 MiB cap, let alone a huge allocation
    # truncations, wrong versions and bad text never parse
    assert not any(k in ("truncate", "version", "text_truncate", "prefix_garbage") and o == "parsed" for k, o in counts)
    assert counts.get(("crc_ok_step_size", "refused")) and counts.get(("crc_ok_step_size", "parsed"))
    for n in range(len(VALID)):
        with pytest.raises(LoraCodecError):
            parse(VALID[:n])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    try:
        parse(data)
    except LoraCodecError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_random_text(text):
    try:
        parse(text)
    except LoraCodecError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(st.integers(4, len(VALID) - 5), st.binary(min_size=1, max_size=12))
def test_valid_crc_around_arbitrary_fields(pos, blob):
    data = with_crc(VALID[:pos] + blob + VALID[pos + len(blob):-4])
    try:
        code = parse(data)
    except LoraCodecError as exc:
        assert str(exc)
    else:  # well formed after all: its declared sizes are within the format's limits
        assert code.symbols.size == code.theta_length <= 1 << 24
        assert np.abs(code.symbols.astype(np.float64)).max() * code.step_size <= MAX_ABS_THETA


# -- multi-segment codes (format version 2) ------------------------------------------------------------

from lora_codec.fuzzing import sample_segmented_code, segment_table_span, truncated_segment_tables  # noqa: E402

SEGMENTED = [sample_segmented_code(seed=2, shared=True), sample_segmented_code(seed=3, shared=False)]


@pytest.mark.parametrize("valid", SEGMENTED, ids=["shared-prior", "prior-per-segment"])
def test_truncated_segment_table_is_refused(valid):
    from lora_codec.errors import CodeFormatError

    start, end = segment_table_span(valid)
    assert end - start >= 4 + 3 * 4  # count, total, starts, steps, coding
    cases = list(truncated_segment_tables(valid))
    assert len(cases) == 2 * (end - start)
    for what, data in cases:
        with pytest.raises(CodeFormatError):  # a format error with a message, never a crash or a wrong code
            parse(data)
    for n in range(len(valid)):  # and every plain truncation of the file
        with pytest.raises(LoraCodecError):
            parse(valid[:n])


@pytest.mark.parametrize("valid", SEGMENTED, ids=["shared-prior", "prior-per-segment"])
def test_hostile_segmented_codes(valid):
    for kind, data in hostile_inputs(valid, 1500, seed=11):
        t0 = time.perf_counter()
        try:
            code = parse(data)
        except LoraCodecError as exc:
            assert str(exc), kind
        else:
            assert code.n_segments * code.theta_length <= 1 << 24
        assert time.perf_counter() - t0 < 1.0, kind


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_valid_crc_around_the_segment_table(data):
    valid = SEGMENTED[0]
    start, end = segment_table_span(valid)
    pos = data.draw(st.integers(start - 2, end + 2))
    blob = data.draw(st.binary(min_size=1, max_size=8))
    try:
        code = parse(with_crc(valid[:pos] + blob + valid[pos + len(blob):-4]))
    except LoraCodecError as exc:
        assert str(exc)
    else:
        starts = [s.start for s in code.segment_list]
        assert starts[0] == 0 and starts[-1] + code.frames == code.output_frames


def test_truncated_segment_table_exits_2(tmp_path):
    from lora_codec.cli import main

    _what, data = next(iter(truncated_segment_tables(SEGMENTED[0])))
    bad = tmp_path / "cut.vov"
    bad.write_bytes(data)
    for argv in (["info", str(bad)], ["decode", str(bad), "-o", str(tmp_path / "x.mp4")]):
        assert main(argv) == 2
    assert not (tmp_path / "x.mp4").exists()
