"""Video I/O, geometry rules and bad inputs (synthetic clips written with PyAV)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lora_codec import video as video_mod
from lora_codec.errors import LimitError, LoraCodecError, VideoError
from lora_codec.video import (
    Clip,
    Limits,
    coded_geometry,
    fit_to_geometry,
    read_video,
    tensor_to_video,
    video_to_tensor,
    write_video,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bigbuckbunny_2s.mp4"
WAN = dict(native_frames=81, native_height=480, native_width=832)


def gradient_clip(t: int = 9, h: int = 64, w: int = 96) -> np.ndarray:
    """Smooth moving gradients (codec-friendly, so round trips are near-exact)."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([(xx * 2 + i * 3) % 256, (yy * 3 + i) % 256, (xx + yy) % 256], -1) for i in range(t)
    ]
    return np.stack(frames).astype(np.uint8)


def write_raw(path, frames_rgb, *, codec, pix_fmt, rate=16, options=None, src_format="rgb24"):
    """Encode with PyAV directly (formats write_video does not produce)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height = frames_rgb.shape[2], frames_rgb.shape[1]
        s.pix_fmt = pix_fmt
        if options:
            s.options = options
        for i, f in enumerate(frames_rgb):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=src_format)
            if src_format != pix_fmt:
                vf = vf.reformat(format=pix_fmt)
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def mean_abs(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ---------------------------------------------------------------------------- round trips


def test_round_trip(tmp_path):
    src = gradient_clip()
    p = tmp_path / "a.mp4"
    write_video(p, src, Fraction(16), crf=0)
    clip = read_video(p)
    assert isinstance(clip, Clip)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == src.shape
    assert clip.fps == Fraction(16)
    assert (clip.src_frames, clip.src_height, clip.src_width) == (9, 64, 96)
    assert clip.notes == []
    assert mean_abs(clip.frames, src) < 3.0  # yuv420p chroma subsampling only


def test_round_trip_ntsc_rate_and_faststart(tmp_path):
    p = tmp_path / "ntsc.mp4"
    write_video(p, gradient_clip(5), Fraction(30000, 1001))
    clip = read_video(p)
    assert clip.fps == Fraction(30000, 1001)
    data = p.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # faststart: index first
    with av.open(str(p)) as c:
        cc = c.streams.video[0].codec_context
        assert cc.pix_fmt == "yuv420p" and cc.name == "h264"


def test_write_odd_size_is_padded_to_even(tmp_path):
    src = gradient_clip(3, 31, 47)
    p = tmp_path / "odd.mp4"
    write_video(p, src, Fraction(16), crf=0)
    clip = read_video(p)
    assert clip.frames.shape == (3, 32, 48, 3)
    assert mean_abs(clip.frames[:, :31, :47], src) < 3.0


def test_write_errors(tmp_path):
    with pytest.raises(VideoError):
        write_video(tmp_path / "missing_dir" / "x.mp4", gradient_clip(2), Fraction(16))
    with pytest.raises(VideoError):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8), np.uint8), Fraction(16))
    with pytest.raises(VideoError):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), Fraction(16))
    with pytest.raises(VideoError):
        write_video(tmp_path / "x.mp4", gradient_clip(2), Fraction(0))
    assert not (tmp_path / "x.mp4").exists()


def test_example_clip():
    assert EXAMPLE.stat().st_size < 200_000
    clip = read_video(EXAMPLE)
    assert clip.frames.shape == (33, 180, 320, 3)
    assert clip.fps == Fraction(16)
    assert clip.notes == []
    assert clip.frames.std() > 20  # real content, not blank


def test_start_and_max_frames(tmp_path):
    p = tmp_path / "g.mp4"
    src = gradient_clip(20)
    write_video(p, src, Fraction(16), crf=0)
    clip = read_video(p, start_seconds=0.5)
    assert clip.src_frames == 12  # frames 8..19
    assert mean_abs(clip.frames, src[8:]) < 3.0
    assert any("skipped 8 frames" in n for n in clip.notes)
    clip = read_video(p, start_seconds=0.25, max_frames=5)
    assert clip.frames.shape[0] == 5 and clip.src_frames == 5
    assert mean_abs(clip.frames, src[4:9]) < 3.0
    assert any("trimmed to 5 frames" in n for n in clip.notes)
    with pytest.raises(VideoError, match="past the end"):
        read_video(p, start_seconds=5)
    with pytest.raises(LimitError):
        read_video(p, start_seconds=-1)
    with pytest.raises(LimitError):
        read_video(p, max_frames=0)


# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "src, expected",
    [
        ((132, 720, 1280), (81, 480, 832)),  # landscape, long clip
        ((100, 1280, 720), (81, 832, 480)),  # portrait
        ((33, 180, 320), (33, 480, 832)),
        ((80, 5, 7), (77, 480, 832)),  # 4k+1 below 80
        ((1, 1, 1), (1, 480, 832)),  # square -> native landscape
        ((4, 10, 10), (1, 480, 832)),
        ((5, 4000, 10), (5, 832, 480)),
        ((3, 10, 4000), (1, 480, 832)),
    ],
)
def test_coded_geometry(src, expected):
    assert coded_geometry(*src, **WAN) == expected


def test_coded_geometry_frames_are_4k_plus_1():
    for n in range(1, 120):
        f, h, w = coded_geometry(n, 480, 832, **WAN)
        assert f % 4 == 1 and f <= min(n, 81) and f + 4 > min(n, 81)
        assert h % 16 == 0 and w % 16 == 0


def test_coded_geometry_bad_input():
    with pytest.raises(VideoError):
        coded_geometry(0, 480, 832, **WAN)
    with pytest.raises(ValueError):
        coded_geometry(5, 480, 832, native_frames=81, native_height=481, native_width=832)


@pytest.mark.parametrize("h, w", [(1, 1), (7, 5), (5, 7), (4000, 10), (10, 4000), (480, 832), (720, 1280)])
def test_fit_to_geometry_sizes(h, w):
    rng = np.random.default_rng(0)
    src = (rng.random((2, h, w, 3)) * 255).astype(np.uint8)
    f, H, W = coded_geometry(2, h, w, **WAN)
    out = fit_to_geometry(src, f, H, W)
    assert out.shape == (f, H, W, 3) and out.dtype == np.uint8


def test_fit_to_geometry_content():
    # constant colour survives resizing exactly
    out = fit_to_geometry(np.full((3, 7, 5, 3), 77, np.uint8), 1, 832, 480)
    assert out.shape == (1, 832, 480, 3) and np.all(out == 77)
    # 1280x720 -> cover 832x480: scale 2/3 (height), width 853 -> centre crop;
    # a source with black side bars wider than the crop loses them
    src = np.full((1, 720, 1280, 3), 200, np.uint8)
    src[:, :, :10] = 0
    src[:, :, -10:] = 0
    out = fit_to_geometry(src, 1, 480, 832)
    assert out.min() >= 190
    # first frames are the ones kept
    seq = np.stack([np.full((8, 8, 3), i * 10, np.uint8) for i in range(9)])
    out = fit_to_geometry(seq, 5, 16, 16)
    assert [int(x) for x in out[:, 0, 0, 0]] == [0, 10, 20, 30, 40]
    with pytest.raises(VideoError):
        fit_to_geometry(seq, 13, 16, 16)


def test_tensor_round_trip():
    src = gradient_clip(3, 17, 23)
    x = video_to_tensor(src)
    assert x.shape == (3, 3, 17, 23) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert np.array_equal(tensor_to_video(x), src)
    assert np.array_equal(tensor_to_video(x[None]), src)
    y = tensor_to_video(torch.full((3, 1, 2, 2), 5.0))
    assert y.dtype == np.uint8 and np.all(y == 255)
    assert np.all(tensor_to_video(torch.full((3, 1, 2, 2), -5.0)) == 0)


# ---------------------------------------------------------------------------- bad and odd inputs


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="directory"):
        read_video(tmp_path)


def test_text_file_renamed_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError) as e:
        read_video(p)
    assert "\n" not in str(e.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        read_video(p)


def test_audio_only(tmp_path):
    p = tmp_path / "tone.m4a"
    with av.open(str(p), "w") as c:
        s = c.add_stream("aac", rate=16000)
        t = np.arange(1024 * 8) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(8):
            f = av.AudioFrame.from_ndarray(samples[None, i * 1024:(i + 1) * 1024], format="fltp", layout="mono")
            f.sample_rate = 16000
            f.pts = i * 1024
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    with pytest.raises(VideoError, match="no video stream"):
        read_video(p)


def test_audio_with_cover_art_is_not_a_video(tmp_path):
    enc = av.CodecContext.create("png", "w")
    enc.width, enc.height, enc.pix_fmt = 32, 32, "rgb24"
    cover = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 99, np.uint8), format="rgb24")
    png = b"".join(bytes(pk) for pk in list(enc.encode(cover)) + list(enc.encode(None)))
    assert png.startswith(b"\x89PNG")
    p = tmp_path / "song.mp4"
    with av.open(str(p), "w") as c:
        a = c.add_stream("aac", rate=16000)
        v = c.add_stream("png", rate=1)
        v.width, v.height, v.pix_fmt = 32, 32, "rgb24"
        flag = av.stream.Disposition.attached_pic
        v.disposition = int(getattr(flag, "value", flag))
        for i in range(4):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for pk in a.encode(f):
                c.mux(pk)
        pk = av.Packet(png)
        pk.stream, pk.pts, pk.dts = v, 0, 0
        c.mux(pk)
        for pk in a.encode(None):
            c.mux(pk)
    with pytest.raises(VideoError, match="cover image"):
        read_video(p)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_zero_frame_file(tmp_path, ext):
    p = tmp_path / f"zero.{ext}"
    c = av.open(str(p), "w")
    s = c.add_stream("libx264", rate=16)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    c.start_encoding()
    c.close()
    assert p.stat().st_size > 0
    with pytest.raises(VideoError):
        read_video(p)


def test_truncated_files(tmp_path):
    src = gradient_clip(20)
    p = tmp_path / "full.mp4"
    write_video(p, src, Fraction(16))  # faststart: index at the front
    data = p.read_bytes()
    outcomes = []
    for frac in (0.05, 0.3, 0.6, 0.9, 0.97):
        q = tmp_path / f"cut{int(frac * 100)}.mp4"
        q.write_bytes(data[: int(len(data) * frac)])
        try:
            clip = read_video(q)
        except VideoError as e:
            assert "\n" not in str(e)
            outcomes.append("error")
        else:
            assert 1 <= clip.src_frames < 20
            assert any("truncated" in n or "stopped early" in n for n in clip.notes)
            outcomes.append("partial")
    assert outcomes[0] == "error" and outcomes[-1] == "partial"
    # without faststart the index is at the end: a cut file cannot be opened at all
    q = tmp_path / "nofs.mp4"
    video_mod._encode(str(q), src, Fraction(16), codec="libx264", options={"crf": "18"})
    q.write_bytes(q.read_bytes()[: q.stat().st_size // 2])
    with pytest.raises(VideoError):
        read_video(q)


def test_10bit_hevc(tmp_path):
    src = gradient_clip(5)
    p = tmp_path / "ten.mp4"
    video_mod._encode(
        str(p), src, Fraction(16), codec="libx265",
        options={"crf": "12", "x265-params": "log-level=error"}, pix_fmt="yuv420p10le",
    )
    clip = read_video(p)
    assert clip.frames.shape == src.shape and clip.frames.dtype == np.uint8
    assert mean_abs(clip.frames, src) < 4.0
    assert any("10-bit" in n for n in clip.notes)


def test_10bit_ffv1_odd_size(tmp_path):
    src = gradient_clip(3, 17, 31)
    p = tmp_path / "ten.mkv"
    write_raw(p, src, codec="ffv1", pix_fmt="yuv444p10le")
    clip = read_video(p)
    assert clip.frames.shape == (3, 17, 31, 3)
    assert mean_abs(clip.frames, src) < 2.0  # lossless 4:4:4, only colour-matrix rounding
    assert any("10-bit" in n for n in clip.notes)


@pytest.mark.parametrize("codec, pix_fmt, layout", [("png", "rgba", "rgba"), ("qtrle", "argb", "argb")])
def test_alpha_is_dropped(tmp_path, codec, pix_fmt, layout):
    rgba = np.zeros((3, 17, 33, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 30, 90, 128  # r, g, b, a
    arr = rgba if layout == "rgba" else rgba[..., [3, 0, 1, 2]]
    p = tmp_path / f"alpha_{codec}.mov"
    write_raw(p, arr, codec=codec, pix_fmt=pix_fmt, src_format=layout)
    clip = read_video(p)
    assert clip.frames.shape == (3, 17, 33, 3)
    assert np.all(clip.frames == np.array([200, 30, 90], np.uint8))
    assert any("alpha" in n for n in clip.notes)


def test_variable_frame_rate(tmp_path):
    p = tmp_path / "vfr.mkv"
    src = gradient_clip(10)
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        pts = [0, 40, 80, 200, 240, 280, 400, 440, 480, 600]
        for t, f in zip(pts, src):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for pk in s.encode(vf):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    clip = read_video(p)
    assert clip.src_frames == 10
    assert 0 < float(clip.fps) <= 1000
    assert any("variable frame rate" in n for n in clip.notes)


@pytest.mark.parametrize("degrees, corner, shape", [(90, "bl", (64, 48)), (-90, "tr", (64, 48)), (180, "br", (48, 64))])
def test_display_rotation_is_applied(tmp_path, degrees, corner, shape):
    src = np.zeros((2, 48, 64, 3), np.uint8)
    src[:, :8, :8] = 255  # white top-left corner
    p = tmp_path / f"rot{degrees}.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=16)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        if not hasattr(s, "set_display_rotation"):
            pytest.skip("this PyAV cannot write a display matrix")
        s.set_display_rotation(degrees)  # counterclockwise, as FFmpeg's autorotate reads it
        for i, f in enumerate(src):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for pk in s.encode(vf):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    clip = read_video(p)
    assert clip.frames.shape[1:3] == shape and (clip.src_height, clip.src_width) == shape
    f = clip.frames[0].astype(int)
    corners = {"tl": f[:4, :4], "tr": f[:4, -4:], "bl": f[-4:, :4], "br": f[-4:, -4:]}
    assert {k for k, v in corners.items() if v.mean() > 200} == {corner}
    assert any("rotated" in n for n in clip.notes)


# ---------------------------------------------------------------------------- limits


class _NoDecode:
    """Wraps an input container; fails the test if anything is decoded."""

    def __init__(self, inner):
        self._inner = inner

    def decode(self, *a, **k):
        raise AssertionError("decoded although the limit was known from metadata")

    def demux(self, *a, **k):
        raise AssertionError("demuxed although the limit was known from metadata")

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture
def clip20(tmp_path):
    p = tmp_path / "g20.mp4"
    write_video(p, gradient_clip(20), Fraction(16))
    return p


@pytest.mark.parametrize(
    "limits, match",
    [
        (Limits(max_pixels=96 * 64 - 1), "pixels"),
        (Limits(max_seconds=1.0), "long"),
        (Limits(max_frames_read=19), "frames"),
        (Limits(max_decoded_bytes=96 * 64 * 3 * 19), "decoded"),
    ],
)
def test_limits_refused_before_decoding(clip20, monkeypatch, limits, match):
    real_open = av.open
    monkeypatch.setattr(video_mod.av, "open", lambda *a, **k: _NoDecode(real_open(*a, **k)))
    with pytest.raises(LimitError, match=match):
        read_video(clip20, limits=limits)
    # within the limits (and with max_frames) it decodes
    monkeypatch.setattr(video_mod.av, "open", real_open)
    clip = read_video(clip20, max_frames=10, limits=Limits(max_frames_read=19, max_decoded_bytes=96 * 64 * 3 * 19))
    assert clip.src_frames == 10


def test_max_bytes_refused_before_opening(clip20, monkeypatch):
    def no_open(*a, **k):
        raise AssertionError("opened although the file is over max_bytes")

    monkeypatch.setattr(video_mod.av, "open", no_open)
    with pytest.raises(LimitError, match="over the limit"):
        read_video(clip20, limits=Limits(max_bytes=1000))


def test_errors_are_one_line(tmp_path):
    p = tmp_path / "junk.mov"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(LoraCodecError) as e:
        read_video(p)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
