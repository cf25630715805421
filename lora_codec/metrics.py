"""Quality metrics between two clips, uint8 RGB [T, H, W, 3] of the same shape.

- PSNR over all pixels of the clip (one MSE for the whole clip, not a mean of per-frame
  PSNRs), on RGB or on BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B (full-range, 0..255).
- MS-SSIM from `pytorch_msssim` on RGB (frames as the batch, averaged over frames and
  channels; data_range 255, Gaussian window 11, sigma 1.5, standard five-scale weights).
  Frames whose shorter side is <= 160 px are too small for five scales: then the number of
  scales is reduced to the most that fit (the first weights, renormalised to sum to 1; a
  single scale is plain SSIM), and below 11 px the window shrinks to the shorter side.
  Either case is reported through `notes` (see `ms_ssim`) and in `evaluate()['notes']`.
- LPIPS (`lpips`, AlexNet) and DISTS (`piq`) only when the package and all its weights are
  already on this machine; nothing is ever downloaded, and nothing is faked.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VideoError

__all__ = ["psnr", "ms_ssim", "perceptual_metrics", "evaluate"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN = 11
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_CHUNK_PIXELS = 4 << 20  # frames * H * W per MS-SSIM batch, bounds the memory


def _check_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    from .video import check_frames

    check_frames(a, "clip a")
    check_frames(b, "clip b")
    if a.shape != b.shape:
        raise VideoError(f"cannot compare clips of different shapes {list(a.shape)} and {list(b.shape)}")
    return a, b


def _luma(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def psnr(a: np.ndarray, b: np.ndarray, *, channel: str = "rgb") -> float:
    """PSNR in dB over the whole clip (peak 255); identical clips give float('inf').

    channel='rgb': MSE over all three channels; channel='y': MSE of BT.601 luma.
    """
    a, b = _check_pair(a, b)
    if channel == "rgb":
        mse = 0.0
        # per frame in float64 to keep memory small for long clips
        for fa, fb in zip(a, b):
            d = fa.astype(np.float64) - fb.astype(np.float64)
            mse += float(np.mean(d * d))
        mse /= a.shape[0]
    elif channel == "y":
        mse = 0.0
        for fa, fb in zip(a, b):
            d = _luma(fa) - _luma(fb)
            mse += float(np.mean(d * d))
        mse /= a.shape[0]
    else:
        raise ValueError(f"channel must be 'rgb' or 'y', got {channel!r}")
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0 ** 2 / mse)


def _gauss_1d(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    C = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).repeat(C, 1, 1, 1), groups=C)
    return F.conv2d(x, g.view(1, 1, k, 1).repeat(C, 1, 1, 1), groups=C)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (batch, channel) mean SSIM and contrast-structure term, as in pytorch_msssim."""
    c1 = (_K1 * 255.0) ** 2
    c2 = (_K2 * 255.0) ** 2
    mu1, mu2 = _blur(x, g), _blur(y, g)
    s11 = _blur(x * x, g) - mu1 * mu1
    s22 = _blur(y * y, g) - mu2 * mu2
    s12 = _blur(x * y, g) - mu1 * mu2
    cs_map = (2 * s12 + c2) / (s11 + s22 + c2)
    ssim_map = ((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1)) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _ms_ssim_reduced(x: torch.Tensor, y: torch.Tensor, levels: int, win: int) -> torch.Tensor:
    """MS-SSIM with `levels` scales (first weights renormalised) and window `win`; per batch."""
    w = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float32)
    w = w / w.sum()
    g = _gauss_1d(win, _SIGMA)
    mcs = []
    for i in range(levels):
        ssim_pc, cs = _ssim_cs(x, y, g)
        if i < levels - 1:
            mcs.append(torch.relu(cs))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    vals = torch.stack(mcs + [torch.relu(ssim_pc)], dim=0)  # (levels, batch, channel)
    return torch.prod(vals ** w.view(-1, 1, 1), dim=0).mean(1)


def _scales_for(side: int) -> tuple[int, int]:
    """(levels, window) for frames whose shorter side is `side` (pytorch_msssim's rule:
    side > (win - 1) * 2**(levels - 1))."""
    for levels in (5, 4, 3, 2, 1):
        if side > (_WIN - 1) * 2 ** (levels - 1):
            return levels, _WIN
    if side >= _WIN:
        return 1, _WIN
    win = side if side % 2 == 1 else side - 1
    return 1, max(win, 1)


def ms_ssim(a: np.ndarray, b: np.ndarray, *, notes: list[str] | None = None) -> float:
    """MS-SSIM of two uint8 clips (1.0 when identical), mean over frames and RGB channels.

    Uses pytorch_msssim.ms_ssim (5 scales) when the shorter frame side is > 160 px. Smaller
    frames use fewer scales with renormalised weights (1 scale = SSIM), and below 11 px a
    smaller window; a sentence saying so is appended to `notes` when a list is given.
    """
    a, b = _check_pair(a, b)
    if np.array_equal(a, b):
        return 1.0
    T, H, W, _ = a.shape
    side = min(H, W)
    levels, win = _scales_for(side)
    if notes is not None and (levels, win) != (5, _WIN):
        if levels == 1:
            what = "single-scale SSIM" + (f" with a {win}x{win} window" if win != _WIN else "")
        else:
            what = f"MS-SSIM with {levels} scales (weights renormalised)"
        notes.append(f"frames are {W}x{H}, too small for 5-scale MS-SSIM (needs > 160 px): used {what}")
    chunk = max(1, _CHUNK_PIXELS // (H * W))
    total = 0.0
    with torch.no_grad():
        for i in range(0, T, chunk):
            x = torch.from_numpy(np.ascontiguousarray(a[i:i + chunk])).permute(0, 3, 1, 2).float()
            y = torch.from_numpy(np.ascontiguousarray(b[i:i + chunk])).permute(0, 3, 1, 2).float()
            if levels == 5:
                from pytorch_msssim import ms_ssim as _pm_ms_ssim

                v = _pm_ms_ssim(x, y, data_range=255, size_average=False, win_size=_WIN, win_sigma=_SIGMA)
            else:
                v = _ms_ssim_reduced(x, y, levels, win)
            total += float(v.double().sum())
    return total / T


# --------------------------------------------------------------------------------------------
# LPIPS / DISTS, strictly offline
# --------------------------------------------------------------------------------------------


class _NoDownload(Exception):
    pass


@contextlib.contextmanager
def _no_downloads():
    """Make torch.hub (used by torchvision, lpips and piq for weights) refuse to download."""
    import torch.hub as hub

    saved = hub.download_url_to_file

    def refuse(url, *args, **kwargs):
        raise _NoDownload(f"weights not cached locally ({url})")

    hub.download_url_to_file = refuse
    try:
        yield
    finally:
        hub.download_url_to_file = saved


_PERCEPTUAL_CACHE: dict[str, Any] = {}


def _load_lpips():
    if "lpips" not in _PERCEPTUAL_CACHE:
        try:
            import lpips  # type: ignore

            with _no_downloads():
                model = lpips.LPIPS(net="alex", verbose=False).eval()
            _PERCEPTUAL_CACHE["lpips"] = (model, None)
        except ImportError:
            _PERCEPTUAL_CACHE["lpips"] = (None, "lpips package not installed")
        except Exception as e:  # weights missing, incompatible versions, ...
            _PERCEPTUAL_CACHE["lpips"] = (None, f"lpips unusable offline: {' '.join(str(e).split())[:200]}")
    return _PERCEPTUAL_CACHE["lpips"]


def _load_dists():
    if "dists" not in _PERCEPTUAL_CACHE:
        try:
            import piq  # type: ignore

            with _no_downloads():
                model = piq.DISTS(reduction="none").eval()
            _PERCEPTUAL_CACHE["dists"] = (model, None)
        except ImportError:
            _PERCEPTUAL_CACHE["dists"] = (None, "piq package not installed (DISTS)")
        except Exception as e:
            _PERCEPTUAL_CACHE["dists"] = (None, f"piq DISTS unusable offline: {' '.join(str(e).split())[:200]}")
    return _PERCEPTUAL_CACHE["dists"]


def perceptual_metrics(a: np.ndarray, b: np.ndarray, *, batch: int = 8) -> dict:
    """{'lpips': float | None, 'dists': float | None[, 'unavailable': reason]}, means over frames.

    A metric is computed only if its package and weights are present locally (CPU, no
    network); otherwise it is None and 'unavailable' says why. LPIPS uses AlexNet on inputs
    scaled to [-1, 1]; DISTS uses piq on [0, 1].
    """
    a, b = _check_pair(a, b)
    out: dict[str, Any] = {"lpips": None, "dists": None}
    reasons = []
    for key, loader, lo in (("lpips", _load_lpips, -1.0), ("dists", _load_dists, 0.0)):
        model, reason = loader()
        if model is None:
            reasons.append(reason)
            continue
        total = 0.0
        try:
            with torch.no_grad():
                for i in range(0, a.shape[0], batch):
                    x = torch.from_numpy(np.ascontiguousarray(a[i:i + batch])).permute(0, 3, 1, 2).float() / 255.0
                    y = torch.from_numpy(np.ascontiguousarray(b[i:i + batch])).permute(0, 3, 1, 2).float() / 255.0
                    if lo < 0:
                        x, y = x * 2 - 1, y * 2 - 1
                    total += float(model(x, y).double().sum())
            out[key] = total / a.shape[0]
        except Exception as e:  # e.g. frames too small for the network
            reasons.append(f"{key} failed: {' '.join(str(e).split())[:200]}")
    if reasons:
        out["unavailable"] = "; ".join(reasons)
    return out


def evaluate(a: np.ndarray, b: np.ndarray) -> dict:
    """{'psnr_rgb', 'psnr_y', 'ms_ssim', 'lpips', 'dists'[, 'unavailable'], 'notes'}.

    `a` is the reference, `b` the reconstruction (the metrics used here are symmetric
    except for their perceptual networks' conventions).
    """
    a, b = _check_pair(a, b)
    notes: list[str] = []
    result: dict[str, Any] = {
        "psnr_rgb": psnr(a, b, channel="rgb"),
        "psnr_y": psnr(a, b, channel="y"),
        "ms_ssim": ms_ssim(a, b, notes=notes),
    }
    result.update(perceptual_metrics(a, b))
    result["notes"] = notes
    return result
