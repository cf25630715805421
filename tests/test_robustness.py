"""Odd clips through the whole encoder (tiny backbone): each one either gives a valid code at the
tiny backbone's coded geometry, or a one-line LoraCodecError. And a too-large file is refused
before any decoding work."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from lora_codec.errors import LimitError, LoraCodecError

TINY_GEOMETRIES = {(64, 112), (112, 64)}


def _write_clip(path, frames: np.ndarray, fps: int = 16) -> None:
    """Write RGB frames with a lossless codec that accepts odd sizes: ffv1 (yuv444p) in mkv."""
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("ffv1", rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv444p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


def _pattern(n: int, h: int, w: int) -> np.ndarray:
    t = np.arange(n)[:, None, None, None]
    y = np.arange(h)[None, :, None, None]
    x = np.arange(w)[None, None, :, None]
    c = np.arange(3)[None, None, None, :]
    return ((x * 7 + y * 13 + t * 17 + c * 60) % 256).astype(np.uint8)


@pytest.mark.parametrize("frames, height, width", [
    (5, 1, 1),      # a single pixel
    (5, 2, 2),
    (9, 5, 7),      # odd sizes (7x5)
    (5, 10, 4000),  # extreme aspect ratio
    (1, 64, 112),   # one frame
])
def test_odd_clips_encode_or_fail_cleanly(tmp_path, tiny, frames, height, width):
    from lora_codec.codec import EncodeSettings, describe, encode

    path = tmp_path / f"clip_{width}x{height}_{frames}.mkv"
    _write_clip(path, _pattern(frames, height, width))
    settings = EncodeSettings(model="tiny", caption="odd", fit_steps=4, sample_steps=2)
    try:
        result = encode(path, settings, backbone=tiny)
    except LoraCodecError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip(), msg
        assert "Traceback" not in msg
        return
    except Exception as exc:  # anything else is a bug: the encoder must only raise LoraCodecError
        pytest.fail(f"{width}x{height}x{frames}: {type(exc).__name__} instead of a LoraCodecError: {exc}")
    info = describe(result.data)
    assert info["total_bytes"] == len(result.data)
    assert (info["height"], info["width"]) in TINY_GEOMETRIES, info
    assert 1 <= info["frames"] <= 17 and (info["frames"] - 1) % 4 == 0, info
    assert info["frames"] <= max(1, frames)


def test_oversized_file_is_refused_before_decoding(tmp_path, monkeypatch):
    from lora_codec import video

    path = tmp_path / "clip.mkv"
    _write_clip(path, _pattern(3, 16, 16))
    size = path.stat().st_size

    def no_decoding(*a, **k):
        raise AssertionError("av.open was called for a file over the size limit")

    monkeypatch.setattr(video.av, "open", no_decoding)
    with pytest.raises(LimitError, match="over the limit") as e:
        video.read_video(path, limits=video.Limits(max_bytes=size - 1))
    assert "\n" not in str(e.value)

    from lora_codec.codec import EncodeSettings, encode

    with pytest.raises(LimitError):  # through the encoder too (no backbone needed: refused first)
        encode(path, EncodeSettings(model="tiny", fit_steps=4, sample_steps=2),
               limits=video.Limits(max_bytes=size - 1))
