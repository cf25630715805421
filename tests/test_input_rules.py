"""The reader's rules one by one (issue 9, item 11): stream choice, frame rate, displayed geometry, colour
(transfer functions, primaries, tone mapping), de-interlacing, notes; the code's adapter bound and the
decoder's finite check."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from lora_codec import bitstream, colour
from lora_codec import video as V
from lora_codec.errors import CodeFormatError, DecodeError, VideoError

DATA = Path(__file__).resolve().parent / "data" / "inputs"


# ---------------------------------------------------------------------------------- displayed geometry


@pytest.mark.parametrize("w, h, sar, rot, shown", [
    (320, 180, None, 0, (320, 180)),
    (240, 180, Fraction(4, 3), 0, (320, 180)),  # widen, never shrink
    (352, 288, Fraction(8, 9), 0, (352, 324)),  # heighten
    (220, 180, Fraction(16, 11), 0, (320, 180)),
    (240, 180, Fraction(4, 3), 90, (180, 320)),  # SAR first (stored orientation), then the turn
    (240, 180, Fraction(4, 3), -90, (180, 320)),
    (320, 180, None, 180, (320, 180)),
    (320, 180, Fraction(0, 1), 0, (320, 180)),  # unknown SAR (0/1) counts as square
    (320, 180, Fraction(100, 1), 0, (320, 180)),  # absurd SAR ignored
])
def test_displayed_geometry(w, h, sar, rot, shown):
    g = V.displayed_geometry(w, h, sar, rot)
    assert (g.width, g.height) == shown and (g.stored_width, g.stored_height) == (w, h)


def test_displayed_geometry_quarter_turns_and_notes():
    g = V.displayed_geometry(240, 180, Fraction(4, 3), 90)
    assert g.quarter_turns == 1 and g.unrotated_size == (320, 180)
    notes = V.geometry_note(g)
    assert any("4:3" in n and "240x180" in n for n in notes) and any("rotated" in n for n in notes)
    assert V.geometry_note(V.displayed_geometry(320, 180)) == []


# ---------------------------------------------------------------------------------- stream choice


def _stream(index, w, h, default=False, cover=False):
    flags = (av.stream.Disposition.default if default else 0) | (av.stream.Disposition.attached_pic if cover else 0)
    return SimpleNamespace(index=index, disposition=av.stream.Disposition(int(flags)), type="video",
                           codec_context=SimpleNamespace(width=w, height=h))


def _container(*streams):
    return SimpleNamespace(streams=SimpleNamespace(video=list(streams), __iter__=None))


def test_choose_video_stream_default_then_largest_skip_cover_art():
    small_default, big = _stream(0, 64, 36, default=True), _stream(1, 320, 180)
    s, note = V.choose_video_stream(_container(small_default, big))
    assert s is small_default and "default" in note and "#0" in note
    s, note = V.choose_video_stream(_container(_stream(0, 64, 36), big, _stream(2, 160, 90)))
    assert s is big and "largest" in note
    cover = _stream(0, 1000, 1000, default=True, cover=True)
    s, note = V.choose_video_stream(_container(cover, big))
    assert s is big and note is None


def test_no_video_stream_is_an_error(tmp_path):
    with av.open(str(DATA / "base.mp4")) as c:
        c.streams.video[0].disposition = av.stream.Disposition.attached_pic
        with pytest.raises(VideoError, match="cover image"):
            V.choose_video_stream(c, "x")


# ---------------------------------------------------------------------------------- frame rate


def _rates(avg=None, guessed=None, codec=None, raw=False):
    stream = SimpleNamespace(average_rate=avg, guessed_rate=guessed, codec_context=SimpleNamespace(framerate=codec))
    container = SimpleNamespace(format=SimpleNamespace(flags=0x0080 if raw else 0))
    return V.frame_rate(container, stream)


def test_frame_rate_rules():
    assert _rates(avg=Fraction(25), guessed=Fraction(25)) == (Fraction(25), None)
    fps, note = _rates(avg=Fraction(25), guessed=Fraction(8), codec=Fraction(8), raw=True)
    assert fps == 8 and "raw video stream" in note  # the raw demuxer's 25 is its own default, not declared
    fps, note = _rates(avg=None, guessed=Fraction(30000, 1001))
    assert fps == Fraction(30000, 1001) and "guessed" in note
    fps, note = _rates(avg=Fraction(1200), guessed=Fraction(1200))
    assert fps == 1200 and note is None  # declared high rate kept, no "unknown"
    fps, note = _rates(avg=Fraction(100000), guessed=None, codec=None)
    assert fps == V.DEFAULT_FPS and "unknown" in note
    assert V.high_rate_note(Fraction(1200)) and V.high_rate_note(Fraction(60)) is None


def test_has_timestamps():
    for name, expected in (("raw_8fps.h264", False), ("raw_12fps.hevc", False), ("base.mp4", True),
                           ("camcorder.m2ts", True)):
        with av.open(str(DATA / name)) as c:
            assert V.has_timestamps(c) is expected, name


# ---------------------------------------------------------------------------------- notes


def test_missing_frames_note_compares_times():
    assert V.missing_frames_note(1.48, 1.48, Fraction(25)) is None  # an edit list: 40 samples, 1.48 s shown
    assert V.missing_frames_note(1.44 + 0.04, 1.48, Fraction(25)) is None
    note = V.missing_frames_note(0.8, 2.0, Fraction(25))
    assert "truncated" in note and "30 frames" in note
    assert V.missing_frames_note(0.8, None, Fraction(25)) is None


def test_variable_rate_note():
    assert V.variable_rate_note([0, 0.04, 0.08, 0.2], Fraction(25))
    assert V.variable_rate_note([0, 0.04, 0.08, 0.12], Fraction(25)) is None


# ---------------------------------------------------------------------------------- colour


def test_pq_eotf_published_points():
    # ST 2084: code value 1.0 is 10000 cd/m^2; 0.5081 is about 100 cd/m^2 (= linear 1.0 here); 0 is black
    assert colour.pq_eotf(np.array(1.0)) == pytest.approx(100.0)
    assert colour.pq_eotf(np.array(0.50808)) == pytest.approx(1.0, rel=2e-3)
    assert colour.pq_eotf(np.array(0.0)) == 0.0


def test_hlg_published_points():
    assert colour.hlg_inverse_oetf(np.array(0.5)) == pytest.approx(1 / 12)  # BT.2100: E' = 0.5 at E = 1/12
    assert colour.hlg_inverse_oetf(np.array(1.0)) == pytest.approx(1.0, abs=1e-6)
    white = colour.hlg_ootf(np.array([[1.0, 1.0, 1.0]]))
    assert white == pytest.approx(np.array([[10.0, 10.0, 10.0]]))  # 1000 cd/m^2 peak / 100


def test_primaries_matrix_is_bt2087():
    m = colour.primaries_matrix()
    ref = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]])
    assert np.abs(m - ref).max() < 2e-4
    assert m.sum(1) == pytest.approx(np.ones(3))  # white stays white


def test_tonemap_hable_through_ffmpeg_filter():
    lin = np.full((4, 6, 3), 1.0, np.float32)
    hable = lambda x: (x * (0.15 * x + 0.05) + 0.004) / (x * (0.15 * x + 0.5) + 0.06) - 0.02 / 0.3  # noqa: E731
    out = colour.tonemap_hable(lin)
    assert out.shape == lin.shape and out == pytest.approx(hable(1.0) / hable(10.0), rel=1e-3)
    red = colour.tonemap_hable(np.tile(np.array([4.0, 1.0, 0.0], np.float32), (2, 2, 1)))
    assert red[0, 0, 1] / red[0, 0, 0] == pytest.approx(0.25, rel=1e-3)  # hue kept (scaled by max)


def test_bt1886_inverse_eotf():
    assert colour.bt1886_inverse_eotf(np.array([0.0, 1.0, 2.0])) == pytest.approx([0.0, 1.0, 1.0])
    assert colour.bt1886_inverse_eotf(np.array(0.5)) == pytest.approx(0.5 ** (1 / 2.4))


def test_hdr_detection_on_frames():
    with av.open(str(DATA / "hdr10_pq.mp4")) as c:
        f = next(c.decode(video=0))
    assert colour.is_hdr(f) and "PQ" in colour.hdr_description(f)
    rgb = colour.hdr_frame_to_sdr_rgb(f, 160, 90)
    assert rgb.shape == (90, 160, 3) and rgb.dtype == np.uint8
    with av.open(str(DATA / "base.mp4")) as c:
        g = next(c.decode(video=0))
    assert not colour.is_hdr(g)
    with pytest.raises(ValueError):
        colour.hdr_frame_to_sdr_rgb(g)


# ---------------------------------------------------------------------------------- interlace


def test_deinterlacer_keeps_count_and_timestamps():
    with av.open(str(DATA / "interlaced.mp4")) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        assert V.is_interlaced(s, frames[0])
        d = V.Deinterlacer(s, frames[0])
        out = [g for f in frames for g in d.push(f)] + d.flush()
    assert d.field_order == "top field first"
    assert len(out) == len(frames) and [g.time for g in out] == pytest.approx([f.time for f in frames])
    with av.open(str(DATA / "base.mp4")) as c:
        s = c.streams.video[0]
        assert not V.is_interlaced(s, next(c.decode(s)))


# ---------------------------------------------------------------------------------- paths and kinds


def test_ffmpeg_url_and_video_detection(tmp_path):
    assert V.ffmpeg_url("take:2.mp4") == "file:take:2.mp4"
    (tmp_path / "list.mp4").write_text("a.mp4\nb.mp4\n")
    assert not V.is_video_file(tmp_path / "list.mp4")  # text, whatever the name says
    assert V.is_video_file(DATA / "raw_8fps.h264") and V.is_video_file(DATA / "camcorder.m2ts")
    assert not V.is_video_file(DATA / "code_symbols_all_minus_2pow31.vov")
    assert not V.is_video_file(tmp_path / "missing.mp4")
    y4m = tmp_path / "grey.y4m"  # a text header, then pixels that happen to be printable
    y4m.write_bytes(b"YUV4MPEG2 W16 H16 F25:1 Ip A1:1 C444\nFRAME\n" + b"d" * (16 * 16 * 3))
    assert V.is_video_file(y4m)


def test_output_kinds():
    assert V.output_kind("a.MP4").codec == "libx264" and V.output_kind("a.mkv").lossless
    with pytest.raises(VideoError, match="cannot write"):
        V.output_kind("a.webm")
    with pytest.raises(VideoError, match="one picture"):
        V.check_video_output("x.png", 17)
    with pytest.raises(VideoError, match="does not exist"):
        V.check_writable("/nonexistent-folder/x.mp4")


# ---------------------------------------------------------------------------------- decoding is sane


def test_adapter_bound_at_parse_and_write():
    data = (DATA / "code_symbols_all_minus_2pow31.vov").read_bytes()
    with pytest.raises(CodeFormatError, match="bound"):
        bitstream.read_code(data)
    from lora_codec.fuzzing import sample_code

    code = bitstream.read_code(sample_code(seed=2))
    code.step_size = 1000.0  # symbols of a few units x 1000 > 256
    with pytest.raises(CodeFormatError, match="bound"):
        bitstream.write_code(code)
    bitstream.check_theta_bound(-2560, 2560, 0.1)  # exactly at the bound: accepted
    with pytest.raises(CodeFormatError):
        bitstream.check_theta_bound(-2561, 0, 0.1)


def test_non_finite_latents_are_refused(encoded, tiny):
    from lora_codec.codec import decode

    with pytest.raises(DecodeError, match="not finite"):
        decode(encoded.data, backbone=tiny, sampler=lambda velocity, noise, code: noise * float("nan"))
