"""Classic-codec baselines: CRF encodes and the budget search."""

from __future__ import annotations

import io
import os
import threading
from fractions import Fraction
from pathlib import Path

import math
import random

import numpy as np
import pytest

from lora_codec.baselines import (
    CODECS,
    CRF_RANGES,
    BaselineResult,
    _search_crf,
    available_codecs,
    encode_at_budget,
    encode_at_crf,
)
from lora_codec.errors import LimitError, VideoError
from lora_codec.metrics import psnr
from lora_codec.video import read_video

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bigbuckbunny_2s.mp4"
AVAILABLE = available_codecs()
CODEC_PARAMS = [
    pytest.param(c, marks=pytest.mark.skipif(not AVAILABLE.get(c), reason=f"{c} not in this PyAV build"))
    for c in CODECS
]


@pytest.fixture(scope="module")
def clip():
    c = read_video(EXAMPLE, max_frames=9)  # 9 frames of 320x180 keep the searches fast
    return c.frames, c.fps


def test_x264_available():
    assert AVAILABLE["x264"]
    assert set(AVAILABLE) == set(CODECS)


@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_encode_at_crf(clip, codec):
    frames, fps = clip
    lo, hi = CRF_RANGES[CODECS[codec]]
    good_crf, bad_crf = (20, 40) if codec != "av1" else (25, 55)
    data_good, dec_good = encode_at_crf(frames, fps, codec, good_crf)
    data_bad, dec_bad = encode_at_crf(frames, fps, codec, bad_crf)
    assert data_good[4:8] == b"ftyp"  # a complete mp4 file
    assert dec_good.shape == frames.shape and dec_good.dtype == np.uint8
    assert len(data_bad) < len(data_good)
    assert psnr(frames, dec_good) > psnr(frames, dec_bad) > 20


@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_odd_and_tiny_sizes_keep_shape(codec):
    rng = np.random.default_rng(0)
    for h, w in ((31, 45), (7, 5)):
        frames = (rng.random((3, h, w, 3)) * 255).astype(np.uint8)
        _data, dec = encode_at_crf(frames, Fraction(16), codec, 20)
        assert dec.shape == frames.shape


@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_budget_search(clip, codec):
    frames, fps = clip
    name = CODECS[codec]
    probe = 30 if codec != "av1" else 40
    size_a = len(encode_at_crf(frames, fps, codec, probe)[0])
    size_b = len(encode_at_crf(frames, fps, codec, probe + 6)[0])
    assert size_b < size_a
    budget = (size_a + size_b) // 2
    r = encode_at_budget(frames, fps, codec, budget)
    assert isinstance(r, BaselineResult)
    assert r.fits and r.bytes <= budget and r.bytes == len(r.data)
    assert r.codec == codec and probe < r.crf <= probe + 6
    assert 0 < r.payload_bytes < r.bytes
    assert r.frames.shape == frames.shape
    # the next better CRF does not fit
    lo, _hi = CRF_RANGES[name]
    assert r.crf > lo
    assert len(encode_at_crf(frames, fps, codec, r.crf - 1)[0]) > budget


def test_budget_extremes(clip):
    frames, fps = clip
    r = encode_at_budget(frames, fps, "x264", 100)  # nothing fits in 100 bytes
    assert not r.fits and r.crf == CRF_RANGES["libx264"][1] and r.bytes > 100
    assert r.frames.shape == frames.shape
    r = encode_at_budget(frames[:2, :32, :32], fps, "libx264", 10_000_000)  # everything fits
    assert r.fits and r.crf == CRF_RANGES["libx264"][0] and r.codec == "x264"


def test_bad_arguments(clip):
    frames, fps = clip
    with pytest.raises(VideoError, match="unknown codec"):
        encode_at_crf(frames, fps, "mpeg2", 20)
    with pytest.raises(LimitError):
        encode_at_crf(frames, fps, "x264", 52)
    with pytest.raises(LimitError):
        encode_at_crf(frames, fps, "av1", 0)
    with pytest.raises(LimitError):
        encode_at_budget(frames, fps, "x264", 0)
    with pytest.raises(VideoError):
        encode_at_crf(frames.astype(np.float32), fps, "x264", 20)


def test_search_crf_on_synthetic_curves():
    """The search's contract on many size curves (exponential with wiggles, power laws):
    the answer fits, the next better CRF was measured not to fit, few encodes."""
    rng = random.Random(0)
    counts = []
    for _ in range(3000):
        lo, hi = rng.choice([(0, 51), (1, 63)])
        base, rate = rng.uniform(1e3, 1e7), rng.uniform(0.03, 0.3)
        if rng.random() < 0.7:
            sizes = {c: max(1, int(base * math.exp(-rate * c) * rng.uniform(0.97, 1.03))) for c in range(lo, hi + 1)}
        else:
            power = rng.uniform(0.5, 4)
            sizes = {c: int(base * (1 + hi - c) ** power) for c in range(lo, hi + 1)}
        budget = max(1, int(rng.choice([1, base * math.exp(-rate * rng.uniform(lo - 5, hi + 5)), 1e12])))
        calls = []

        def size(c):
            calls.append(c)
            return sizes[c]

        best, fits = _search_crf(size, lo, hi, budget)
        if not fits:
            assert best == hi and sizes[hi] > budget
        else:
            assert best in calls and sizes[best] <= budget
            assert best == lo or (best - 1 in calls and sizes[best - 1] > budget)
        counts.append(len(set(calls)))
    assert max(counts) <= 3 * 6
    assert sum(counts) / len(counts) < 4


def _in_a_new_thread(fn):
    """Run `fn` in a fresh thread and return that thread's scheduling (policy, priority) after it, so
    that a switch to real time cannot leak into the test process."""
    out = {}

    def body():
        fn()
        out["sched"] = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority

    t = threading.Thread(target=body)
    t.start()
    t.join(120)
    assert "sched" in out, "the encode did not finish"
    return out["sched"]


@pytest.mark.skipif(not AVAILABLE.get("av1") or not hasattr(os, "sched_getscheduler"),
                    reason="needs SVT-AV1 and the POSIX scheduling API")
def test_an_av1_encode_leaves_the_thread_scheduling_as_it_was(clip):
    """SVT-AV1 switches the thread that opens an encoder to SCHED_FIFO priority 99 where it may (root)
    and never back; everything that thread starts later inherits it (the browser tests' chromium and
    Playwright driver spun at real-time priority and starved the app server). The encoder's callers
    get their scheduling back."""
    from lora_codec import video

    frames, fps = clip
    frames = frames[:3, :64, :64]
    normal = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    raw = _in_a_new_thread(lambda: video._encode_frames(
        io.BytesIO(), frames, fps, codec="libsvtav1", options={"crf": "50", "preset": "12"},
        format="mp4", container_options=None, pix_fmt="yuv420p"))
    if raw == normal:
        pytest.skip("SVT-AV1 cannot raise this thread's priority here (not root): nothing to restore")
    assert raw[0] == os.SCHED_FIFO  # what the library does by itself (the test would catch a regression)
    assert _in_a_new_thread(lambda: encode_at_crf(frames, fps, "av1", 50)) == normal
