"""Quality metrics: known values."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as pm_ms_ssim
from pytorch_msssim import ssim as pm_ssim

from lora_codec import metrics
from lora_codec.errors import VideoError
from lora_codec.metrics import evaluate, ms_ssim, perceptual_metrics, psnr


def noisy_pair(shape=(4, 96, 128, 3), k=10, same_noise_all_channels=False, seed=0):
    """Mid-grey clip and a copy plus integer noise uniform on {-k..k} (no clipping)."""
    rng = np.random.default_rng(seed)
    a = np.full(shape, 128, np.uint8)
    nshape = shape[:-1] + (1,) if same_noise_all_channels else shape
    noise = rng.integers(-k, k + 1, size=nshape)
    b = (a.astype(np.int16) + noise).astype(np.uint8)
    return a, b


def psnr_formula(var: float) -> float:
    return 10 * math.log10(255.0 ** 2 / var)


def test_identical():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 40, 50, 3)) * 255).astype(np.uint8)
    assert psnr(a, a.copy()) == float("inf")
    assert psnr(a, a.copy(), channel="y") == float("inf")
    assert ms_ssim(a, a.copy()) == 1.0
    r = evaluate(a, a.copy())
    assert r["psnr_rgb"] == float("inf") and r["psnr_y"] == float("inf") and r["ms_ssim"] == 1.0


def test_psnr_uniform_noise_known_variance():
    k = 10
    var = k * (k + 1) / 3  # variance of the discrete uniform on {-k..k}
    a, b = noisy_pair(k=k)
    assert abs(psnr(a, b) - psnr_formula(var)) < 0.1
    # independent noise per channel: luma variance is var * (0.299^2 + 0.587^2 + 0.114^2)
    assert abs(psnr(a, b, channel="y") - psnr_formula(var * (0.299**2 + 0.587**2 + 0.114**2))) < 0.1
    # the same noise on R, G and B: luma noise equals it (weights sum to 1)
    a, b = noisy_pair(k=k, same_noise_all_channels=True)
    assert abs(psnr(a, b, channel="y") - psnr_formula(var)) < 0.1


def test_psnr_exact_value_and_symmetry():
    a = np.zeros((1, 2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 12  # MSE = 144 / 12 = 12
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 12))
    assert psnr(a, b) == psnr(b, a)
    with pytest.raises(ValueError):
        psnr(a, b, channel="u")


def test_shape_and_dtype_errors():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(VideoError):
        psnr(a, np.zeros((2, 8, 9, 3), np.uint8))
    with pytest.raises(VideoError):
        ms_ssim(a, a.astype(np.float32))
    with pytest.raises(VideoError):
        evaluate(a, a[..., :2])


def test_ms_ssim_matches_pytorch_msssim_on_large_frames():
    a, b = noisy_pair(shape=(3, 176, 200, 3), k=25, seed=3)
    rng = np.random.default_rng(4)
    a = (rng.random(a.shape) * 255).astype(np.uint8)  # textured reference
    b = np.clip(a.astype(np.int16) + rng.integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    notes: list[str] = []
    value = ms_ssim(a, b, notes=notes)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(b).permute(0, 3, 1, 2).float()
    assert value == pytest.approx(float(pm_ms_ssim(x, y, data_range=255)), abs=1e-5)
    assert notes == []
    # the own implementation used for small frames agrees with the library at 5 and 1 scales
    assert float(metrics._ms_ssim_reduced(x, y, 5, 11).mean()) == pytest.approx(value, abs=1e-4)
    assert float(metrics._ms_ssim_reduced(x, y, 1, 11).mean()) == pytest.approx(
        float(pm_ssim(x, y, data_range=255)), abs=1e-4
    )


@pytest.mark.parametrize("h, w, what", [(100, 240, "4 scales"), (30, 40, "2 scales"), (12, 40, "single-scale SSIM"),
                                        (5, 7, "5x5 window"), (1, 1, "1x1 window")])
def test_ms_ssim_small_frames(h, w, what):
    rng = np.random.default_rng(5)
    a = (rng.random((2, h, w, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    notes: list[str] = []
    v = ms_ssim(a, b, notes=notes)
    assert 0.0 <= v < 1.0
    assert len(notes) == 1 and what in notes[0]
    assert "notes" in evaluate(a, b) and evaluate(a, b)["notes"]


def test_ms_ssim_orders_quality():
    rng = np.random.default_rng(6)
    a = (rng.random((2, 64, 64, 3)) * 255).astype(np.uint8)
    small = np.clip(a.astype(np.int16) + rng.integers(-5, 6, a.shape), 0, 255).astype(np.uint8)
    large = np.clip(a.astype(np.int16) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ms_ssim(a, small) > ms_ssim(a, large) > 0.0


def test_perceptual_never_faked(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import fails
    monkeypatch.setitem(sys.modules, "piq", None)
    monkeypatch.setattr(metrics, "_PERCEPTUAL_CACHE", {})
    a = np.zeros((1, 64, 64, 3), np.uint8)
    r = perceptual_metrics(a, a)
    assert r["lpips"] is None and r["dists"] is None
    assert "lpips" in r["unavailable"] and "piq" in r["unavailable"]


def test_no_downloads_guard():
    import torch.hub as hub

    with metrics._no_downloads():
        with pytest.raises(metrics._NoDownload):
            hub.download_url_to_file("https://example.invalid/w.pth", "/nonexistent/w.pth")
    assert hub.download_url_to_file is not None and hub.download_url_to_file.__name__ != "refuse"


def test_evaluate_keys():
    a, b = noisy_pair(shape=(2, 32, 32, 3))
    r = evaluate(a, b)
    for key in ("psnr_rgb", "psnr_y", "ms_ssim", "lpips", "dists", "notes"):
        assert key in r
    assert r["psnr_y"] > r["psnr_rgb"]  # independent channel noise partly cancels in luma
    if r["lpips"] is None or r["dists"] is None:
        assert r.get("unavailable")
