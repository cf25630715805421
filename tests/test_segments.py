"""Long clips as segments (issue 14): the format's segment table, the plan, a clip 3x the native length end to end
(every frame, in order, at the right fps), per-segment resume, whole-file rate control, ranges, seams, batch and
compare on long clips, and old single-segment codes."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from lora_codec import bitstream, segments
from lora_codec.bitstream import Segment, read_code, segmented, size_report, write_code
from lora_codec.codec import EncodeSettings, decode, describe
from lora_codec.errors import CodeFormatError, LoraCodecError
from lora_codec.fuzzing import sample_code
from lora_codec.video import read_video, write_video

from .conftest import synthetic_frames
from .test_cli import run_cli

DATA = Path(__file__).resolve().parent / "data"
NATIVE = 17  # tiny's native length (backbones.TINY_CONFIG)
FPS = Fraction(16)
SIZE = (48, 32)  # a small coded size keeps the CPU tests fast
FAST = dict(model="tiny", fit_steps=4, sample_steps=2, seed=3, size=SIZE)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """3x tiny's native length: 51 frames at 16 fps."""
    path = tmp_path_factory.mktemp("long") / "long.mkv"
    write_video(path, synthetic_frames(frames=3 * NATIVE, height=40, width=56, seed=2), FPS)
    return path


@pytest.fixture(scope="module")
def long_code(long_clip, tmp_path_factory) -> tuple[bytes, dict]:
    """The clip coded by the CLI (what a user runs)."""
    out = tmp_path_factory.mktemp("code") / "long.vov"
    r = run_cli("encode", long_clip, "-o", out, "--model", "tiny", "--steps", "4", "--sample-steps", "2", "--seed", "3",
                "--size", "48x32", "--caption", "stripes", "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out.read_bytes(), json.loads(r.stdout)


@pytest.fixture(scope="module")
def long_decoded(long_code, tiny):
    return decode(long_code[0], backbone=tiny)


# -- the plan ------------------------------------------------------------------------------------------


def test_plan_covers_every_frame_with_the_overlap():
    for F in (1, 5, 9, 17, 81):
        for total in range(1, 6 * F + 3):
            for ov in range(0, min(F, 6)):
                starts = segments.plan_starts(total, F, ov)
                if total <= F:
                    assert starts == (0,)
                    continue
                assert starts[0] == 0 and starts[-1] + F == total
                deltas = np.diff(starts)
                assert (deltas >= 1).all() and (F - deltas >= ov).all(), (total, F, ov, starts)
                # no more segments than needed for that overlap
                assert len(starts) == max(2, -(-(total - ov) // (F - ov)))
    assert segments.plan_starts(51, 17, 1) == (0, 11, 23, 34)
    assert segments.plan_starts(49, 17, 1) == (0, 16, 32)
    with pytest.raises(segments.SegmentError):
        segments.plan_starts(40, 17, 17)


def test_blend():
    F, H, W = 5, 2, 3
    a = np.full((F, H, W, 3), 10, np.uint8)
    b = np.full((F, H, W, 3), 30, np.uint8)
    out, first = segments.blend_segments([0, 4], F, {0: a, 1: b})
    assert first == 0 and out.shape[0] == 9
    assert (out[:4] == 10).all() and (out[5:] == 30).all() and (out[4] == 20).all()  # one shared frame: the mean
    out, _ = segments.blend_segments([0, 2], F, {0: a, 1: b})  # 3 shared frames: a crossfade
    assert [int(out[t, 0, 0, 0]) for t in range(7)] == [10, 10, 15, 20, 25, 30, 30]
    out, first = segments.blend_segments([0, 2], F, {1: b})  # a range: the decoded segment alone
    assert first == 2 and out.shape[0] == F and (out == 30).all()
    # joined as they come: only the segments later frames still need are held
    starts = segments.plan_starts(41, F, 1)
    bl = segments.Blender(starts, F, 0, len(starts), (H, W, 3))
    held = []
    for i in range(len(starts)):
        bl.add(i, np.full((F, H, W, 3), 10 * i, np.uint8))
        held.append(len(bl.pieces))
    out, first = bl.result()
    assert out.shape[0] == 41 and max(held) <= 2 and out[-1, 0, 0, 0] == 10 * (len(starts) - 1)


def test_decode_refuses_an_output_over_the_limit(monkeypatch, tiny):
    base = read_code(sample_code(seed=4))
    import dataclasses

    big = segmented(dataclasses.replace(base, fingerprint=tiny.fingerprint), _segs(d=2048), 49)
    monkeypatch.setattr(segments, "MAX_DECODED_BYTES", 10 * 112 * 64 * 3)
    with pytest.raises(LoraCodecError, match="decode a range"):
        decode(write_code(big), backbone=tiny)
    monkeypatch.undo()
    assert not any("unilora" in k for k in tiny.transformer.state_dict())  # nothing was attached


def test_segment_range_parsing():
    assert segments.parse_segment_range(None, 4) == (0, 4)
    assert segments.parse_segment_range("2-3", 4) == (1, 3)
    assert segments.parse_segment_range("2", 4) == (1, 2)
    assert segments.parse_segment_range("3-", 4) == (2, 4)
    assert segments.parse_segment_range("-2", 4) == (0, 2)
    assert segments.parse_segment_range("all", 4) == (0, 4)
    for bad in ("0", "5", "3-2", "x", "1-9"):
        with pytest.raises(segments.SegmentError):
            segments.parse_segment_range(bad, 4)
    # a reversed range says so (it once said only "this code has 4 segments (1..4)", which 3-2 respects)
    with pytest.raises(segments.SegmentError, match=r"the first segment \(3\) comes after the last \(2\); write it as 2-3"):
        segments.parse_segment_range("3-2", 4)
    with pytest.raises(segments.SegmentError, match=r"this code has 4 segments \(1\.\.4\)"):
        segments.parse_segment_range("9-2", 4)


# -- the format ----------------------------------------------------------------------------------------


def _segs(n=3, d=2048, seed=0):
    rng = np.random.default_rng(seed)
    return [Segment(16 * i, 0.1 + 0.01 * i, np.round(rng.laplace(0, 1.5, d)).astype(np.int32)) for i in range(n)]


def test_segmented_round_trip_both_codings():
    base = read_code(sample_code(seed=4))
    alike = segmented(base, _segs(), 49)
    data = write_code(alike)
    assert data[3] == bitstream.SEGMENTED_VERSION
    rep = size_report(data)
    assert rep["shared_prior"] is True and rep["segments"] == 3 and rep["format_version"] == 2
    back = read_code(data)
    assert back == alike and back.n_segments == 3 and back.output_frames == 49
    assert [s.start for s in back.segment_list] == [0, 16, 32]
    # symbols of very different spreads: a prior per segment is smaller, and the writer takes it
    rng = np.random.default_rng(1)
    unlike = [Segment(16 * i, 0.1, np.round(rng.laplace(0, 0.3 * 12 ** i, 2048)).astype(np.int32)) for i in range(3)]
    data2 = write_code(segmented(base, unlike, 49))
    assert size_report(data2)["shared_prior"] is False
    assert read_code(data2) == segmented(base, unlike, 49)
    # the shared prior saves the per-segment priors when the symbols are alike
    one_prior = len(data)
    assert one_prior < sum(len(write_code(segmented(base, [s], 0))) for s in alike.segments)
    keys = ["header_bytes", "caption_bytes", "prior_bytes", "payload_bytes", "sections_bytes"]
    for d in (data, data2):
        r = size_report(d)
        assert sum(r[k] for k in keys) == r["total_bytes"] == len(d)
    # one segment is a version-1 code, byte for byte what it always was
    single = segmented(base, [Segment(0, base.step_size, base.symbols)], 0)
    assert write_code(single) == sample_code(seed=4)


def test_segment_table_is_validated():
    base = read_code(sample_code(seed=4))
    segs = _segs()
    bad = [
        (segmented(base, segs, 50), "total_frames"),  # does not end on the last segment's end
        (segmented(base, [segs[0], Segment(18, 0.1, segs[1].symbols)], 35), "no gaps"),
        (segmented(base, [segs[0], Segment(0, 0.1, segs[1].symbols)], 17), "in order"),
        (segmented(base, [Segment(1, 0.1, segs[0].symbols), segs[1]], 33), "frame 0"),
        (segmented(dataclass_replace(base, sections={1: b"\x01"}), segs, 49), "refinement track"),
        (segmented(base, [segs[0], Segment(16, 0.1, segs[1].symbols[:5])], 33), "symbols"),
    ]
    for code, match in bad:
        with pytest.raises(CodeFormatError, match=match):
            write_code(code)


def dataclass_replace(code, **kw):
    import dataclasses

    return dataclasses.replace(code, **kw)


def test_old_single_segment_code_still_decodes(tiny):
    """tests/data/v1_tiny_5f.vov was written by main before this change (tests/data/make_v1_fixture.py)."""
    data = (DATA / "v1_tiny_5f.vov").read_bytes()
    assert data[3] == 1
    info = describe(data)
    assert info["format_version"] == 1 and info["segments"] == 1 and info["frames"] == 5
    dec = decode(data, backbone=tiny)
    want = np.load(DATA / "v1_tiny_5f_frames.npy")
    assert dec.frames.shape == want.shape and dec.fps == 12
    assert np.abs(dec.frames.astype(int) - want).max() <= 1  # float rounding of another CPU at most
    assert write_code(read_code(data)) == data  # the reader and writer keep version 1 as it was


# -- a clip 3x the native length, end to end ------------------------------------------------------------


def test_long_clip_round_trips_every_frame_in_order(long_clip, long_code, long_decoded, tiny, tmp_path):
    data, enc = long_code
    assert enc["segments"] == 4 and enc["frames"] == 3 * NATIVE and enc["segment_frames"] == NATIVE
    assert enc["segment_starts"] == [0, 11, 23, 34] and enc["fps"] == 16
    assert enc["seconds"] == pytest.approx(51 / 16)
    assert len(enc["segment_reports"]) == 4 and all(r["steps"] == 4 for r in enc["segment_reports"])
    code = read_code(data)
    assert code.n_segments == 4 and code.output_frames == 51 and code.caption == "stripes"
    # the decoder writes one continuous video: every frame, at the clip's rate
    out = tmp_path / "long_out.mkv"
    (tmp_path / "long.vov").write_bytes(data)
    r = run_cli("decode", tmp_path / "long.vov", "-o", out, "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    back = read_video(out)
    assert back.frames.shape == (51, SIZE[1], SIZE[0], 3) and back.fps == 16
    assert np.array_equal(back.frames, long_decoded.frames)  # lossless output
    # in order: each segment's frames sit at its start - a range decode (segments 2-3) equals the whole
    # decode on the frames that no other segment covers
    part = decode(data, backbone=tiny, segments="2-3")
    assert part.report["decode_first_frame"] == 11 and part.frames.shape[0] == 23 + NATIVE - 11
    only = [t for t in range(11, 40) if not (t < 17 or t >= 34)]  # frames 17..33: covered by segments 2-3 only
    assert np.array_equal(part.frames[[t - 11 for t in only]], long_decoded.frames[only])
    # and segment i was fitted on frames start_i.. start_i+16 of the clip: the last segment's code is what a
    # one-segment encode of those frames gives
    with segments.LongEncode.start(long_clip, EncodeSettings(caption="stripes", **FAST), backbone=tiny) as enc2:
        last = enc2.segment_frames(3)
        assert np.array_equal(last, enc2.frames[34:51])
    from lora_codec.video import Clip

    alone = segments.encode(Clip(frames=last, fps=FPS, src_width=56, src_height=40, src_frames=17),
                            EncodeSettings(caption="stripes", **FAST), backbone=tiny)
    assert np.array_equal(alone.code.symbols, code.segments[3].symbols)


def test_info_and_range_output_checked_first(long_code, tmp_path):
    data, _ = long_code
    code = tmp_path / "long.vov"
    code.write_bytes(data)
    r = run_cli("info", code)
    assert r.returncode == 0 and "segments: 4 of 17 frames" in r.stdout and "51 frames" in r.stdout
    r = run_cli("decode", code, "-o", tmp_path / "x.png", "--segments", "2")
    assert r.returncode == 2 and "PNG holds one picture" in r.stderr
    r = run_cli("decode", code, "-o", tmp_path / "x.mp4", "--segments", "5")
    assert r.returncode == 2 and "4 segments" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_seams_are_measured(long_clip, long_code, long_decoded, tiny):
    ref = segments.read_clip(long_clip, max_seconds=None)
    from lora_codec.video import fit_to_geometry

    frames = fit_to_geometry(ref.frames, 51, SIZE[1], SIZE[0])
    rep = segments.seam_report(frames, long_decoded.frames, [0, 11, 23, 34], NATIVE)
    assert rep["junctions"] == 6 and rep["boundary_frames"] == 12  # each overlap starts and ends a junction
    for k in ("psnr_boundary", "psnr_interior", "change_boundary", "change_interior", "excess_change_boundary"):
        assert isinstance(rep[k], float) and np.isfinite(rep[k])
    same = segments.seam_report(frames, frames, [0, 11, 23, 34], NATIVE)
    assert same["excess_change_boundary"] == 0.0 and same["psnr_boundary"] == float("inf")


def test_compare_takes_a_long_clip(long_clip, long_code, tiny):
    from lora_codec.evaluation import compare, format_table

    res = compare(long_clip, [long_code[0]], codecs="x264", curve=None, backbone=tiny, perceptual=False)
    assert res["geometry"]["frames"] == 51
    row = res["rows"][0]
    assert row["segments"] == 4 and row["seams"]["junctions"] == 6
    table = format_table(res)
    assert "seams: PSNR" in table
    # 4 segments but 6 junctions: the table says what a junction is, and the change's scale
    assert "6 junctions (each place where the segments a frame comes from change)" in table
    assert "mean frame-to-frame change (of 255) " in table


# -- resume and rate control ------------------------------------------------------------------------------


def test_resume_mid_segment_gives_the_same_bytes(tmp_path, tiny):
    clip = tmp_path / "two.mkv"
    write_video(clip, synthetic_frames(frames=2 * NATIVE - 1, height=40, width=56, seed=5), FPS)  # 2 segments
    settings = dict(model="tiny", fit_steps=6, sample_steps=2, seed=1, size=SIZE)
    full = segments.encode(clip, EncodeSettings(**settings), backbone=tiny)
    assert full.code.n_segments == 2
    for cut in (9, 6, 2):  # in segment 2, at the segment boundary, in segment 1
        state = tmp_path / f"cut{cut}.state"
        assert segments.encode(clip, EncodeSettings(**settings), backbone=tiny, max_steps=cut, save_state=state) is None
        with safe_open(str(state), framework="pt") as f:
            meta = json.loads(f.metadata()["lora_codec_segments"])
        assert meta["done"] == ([0] if cut >= 6 else [])  # the state records which segments are done
        resumed = segments.encode(clip, EncodeSettings(**settings), backbone=tiny, resume=state)
        assert resumed.data == full.data, cut
    # a state of another clip or other settings is refused
    with pytest.raises(LoraCodecError, match="other settings"):
        segments.encode(clip, EncodeSettings(**{**settings, "seed": 2}), backbone=tiny, resume=tmp_path / "cut9.state")


def test_target_kb_is_for_the_whole_file(long_clip, tiny):
    target = 2.2
    res = segments.encode(long_clip, EncodeSettings(target_kb=target, finetune_steps=1, **FAST), backbone=tiny)
    assert res.code.n_segments == 4
    assert 0.8 * target * 1000 <= len(res.data) <= target * 1000
    with pytest.raises(LoraCodecError, match="target-kb"):
        segments.encode(long_clip, EncodeSettings(target_kb=0.05, **FAST), backbone=tiny)


def test_a_long_clip_target_too_small_says_what_to_ask_for_and_that_works(long_clip, tiny):
    # the refusal once called its bound "the smallest code for this clip", which codes below it disproved
    # (the shared prior makes files smaller than the per-segment shares), and named no size to ask for
    with pytest.raises(LoraCodecError) as e:
        segments.encode(long_clip, EncodeSettings(target_kb=0.05, **FAST), backbone=tiny)
    m = re.search(r"too small for this clip's 4 segments: .* ask for at least ([0-9.]+) kB$", str(e.value))
    assert m, str(e.value)
    least = float(m.group(1))
    res = segments.encode(long_clip, EncodeSettings(target_kb=least, finetune_steps=1, **FAST), backbone=tiny)
    assert res.code.n_segments == 4 and len(res.data) <= least * 1000


def test_clip_length_limit_and_refinement(long_clip, tiny):
    with segments.LongEncode.start(long_clip, EncodeSettings(**FAST), segments.SegmentSettings(max_seconds=2.0),
                                   backbone=tiny) as enc:
        assert enc.total_frames == 32 and enc.segments == 2
        assert any("clip-length limit is 2 s" in n for n in enc.notes)
    with segments.LongEncode.start(long_clip, EncodeSettings(**FAST), segments.SegmentSettings(max_seconds=1.0),
                                   backbone=tiny) as enc:
        assert enc.single and enc.segments == 1  # 16 frames: one segment, the old path
    with pytest.raises(LoraCodecError, match="refinement track"):
        segments.LongEncode.start(long_clip, EncodeSettings(refine_n=4, **FAST), backbone=tiny)


def test_batch_takes_a_long_clip(long_clip, tmp_path, tiny):
    from lora_codec.batch import BatchOptions, run_batch

    from .test_batch import one_process

    src = tmp_path / "in"
    src.mkdir()
    (src / "long.mkv").write_bytes(long_clip.read_bytes())
    out = tmp_path / "out"
    s = run_batch([src], out, EncodeSettings(**{**FAST, "fit_steps": 2}), BatchOptions(quiet=True, perceptual=False),
                  dist=one_process(), backbone=tiny)
    assert s["done"] == 1
    r = json.loads((out / "results" / "long.json").read_text())
    assert r["segments"] == 4 and r["frames"] == 51 and r["seams"]["junctions"] == 6
    assert read_code((out / "codes" / "long.vov").read_bytes()).n_segments == 4


def test_session_api_unchanged_for_short_clips(clip_path, tiny):
    """A clip of at most the native length is one segment through the ordinary EncodeSession: same bytes."""
    from lora_codec.codec import encode

    s = dict(model="tiny", fit_steps=3, sample_steps=2, seed=1)
    assert segments.encode(clip_path, EncodeSettings(**s), backbone=tiny).data == \
        encode(clip_path, EncodeSettings(**s), backbone=tiny).data


def test_stopped_long_encode_writes_the_segments_fitted_so_far(tmp_path, tiny):
    """An early stop (Ctrl-C, --stop-after) writes a valid code of the fit so far: for a long clip, the finished
    segments and the running one as it is; the saved state still resumes to the uninterrupted bytes."""
    clip = tmp_path / "three.mkv"
    write_video(clip, synthetic_frames(frames=3 * NATIVE - 2, height=40, width=56, seed=6), FPS)  # starts 0, 16, 32
    settings = dict(model="tiny", fit_steps=6, sample_steps=2, seed=2, size=SIZE)
    state = tmp_path / "s.state"
    with segments.LongEncode.start(clip, EncodeSettings(**settings), backbone=tiny) as enc:
        assert enc.segments == 3
        assert not enc.fit(max_steps=9)  # segment 1 done, segment 2 at step 3
        enc.save_state(state)
        part = enc.finish(partial=True)
    assert part.code.n_segments == 2 and part.code.output_frames == 16 + NATIVE
    assert any("stopped early" in n for n in part.notes)
    assert decode(part.data, backbone=tiny).frames.shape[0] == 16 + NATIVE
    full = segments.encode(clip, EncodeSettings(**settings), backbone=tiny)
    assert segments.encode(clip, EncodeSettings(**settings), backbone=tiny, resume=state).data == full.data
    # the CLI: --stop-after writes the code and the state
    out = tmp_path / "cli.vov"
    r = run_cli("encode", clip, "-o", out, "--model", "tiny", "--steps", "6", "--sample-steps", "2", "--seed", "2",
                "--size", "48x32", "--stop-after", "3", "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["stopped"] is True and rep["segments"] == 1 and rep["total_steps"] == 18
    assert read_code(out.read_bytes()).frames == NATIVE and (tmp_path / "cli.vov.state").exists()
