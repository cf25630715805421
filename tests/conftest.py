"""Shared fixtures. Everything runs offline on the CPU, with the tiny backbone unless a test says otherwise."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub call would hang ~50 s before failing
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The app's plumbing tests (test_app, test_browser) serve the fast random `tiny` backbone; without CUDA the
# app's default would be the trained `small` one, which has its own tests (test_small.py).
os.environ.setdefault("LORA_CODEC_MODEL", "tiny")

# gradio (the app's tests import it) before any test runs torch: importing it after torch has run an op can
# abort the interpreter at exit ("terminate called without an active exception", status 134) - the app's
# runtime does the same (lora_codec/app/runtime.py)
import gradio  # noqa: E402,F401

from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bigbuckbunny_2s.mp4"


def synthetic_frames(frames=17, height=72, width=128, seed=0) -> np.ndarray:
    """A smooth moving pattern (uint8 RGB) - compressible, deterministic."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6.28, size=3)
    t = np.arange(frames)[:, None, None]
    y = np.linspace(-1, 1, height)[None, :, None]
    x = np.linspace(-1, 1, width)[None, None, :]
    chans = [np.sin(3 * x + 0.3 * t + phase[0] + 0 * y), np.cos(2 * y - 0.2 * t + phase[1] + 0 * x),
             np.sin(4 * x * y + 0.1 * t + phase[2])]
    img = (np.stack(chans, -1) * 0.45 + 0.5) * 255
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny():
    from lora_codec.backbones import load_backbone

    return load_backbone("tiny")


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory) -> Path:
    from lora_codec.video import write_video

    path = tmp_path_factory.mktemp("clips") / "synthetic.mp4"
    write_video(path, synthetic_frames(), Fraction(16))
    return path


FAST = dict(fit_steps=24, sample_steps=4)


@pytest.fixture(scope="session")
def encoded(clip_path, tiny):
    """One small encode shared by several tests."""
    from lora_codec.codec import EncodeSettings, encode

    settings = EncodeSettings(model="tiny", caption="a test pattern", seed=3, **FAST)
    return encode(clip_path, settings, backbone=tiny)


def _scheduling():
    try:
        return os.sched_getscheduler(0), os.sched_getparam(0)  # of the calling (main) thread
    except (AttributeError, OSError):
        return None


@pytest.fixture(autouse=True)
def _main_thread_keeps_its_scheduling():
    """Every test leaves the main thread's scheduling as it found it. A native library that switches it
    to real time (SVT-AV1 does, as root) would pass it on to every process the run starts later: the
    browser tests' chromium and Playwright driver then spin at real-time priority and starve the app
    server they wait on (a hang at full CPU). Put it back, and fail the test that changed it."""
    before = _scheduling()
    yield
    after = _scheduling()
    if after != before:
        os.sched_setscheduler(0, *before)
        pytest.fail(f"this test left the main thread's scheduling at {after} (it was {before}); a library it "
                    "called switched the thread to real time")
