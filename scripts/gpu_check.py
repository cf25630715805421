"""GPU check of the Wan2.1-T2V-1.3B path with RANDOM full-size weights (no weights needed).

    python scripts/gpu_check.py > gpu_check.json            # on a CUDA machine (H100/H200-class)
    python benchmarks/run.py --gpu-check gpu_check.json --results-md docs/RESULTS.md

Measures, with the transformer (published config, bf16, gradient checkpointing) and the VAE (float32)
built from random weights on the GPU:
* seconds per fit sample at 832x480 x 33 and x 81 frames, batch 1 and 4 (the fit loop itself:
  `fit.Fitter` with the method's UniLoRA adapter, r = 1, theta 131,072), and peak GPU memory of each;
* seconds per sampling step (the decoder's `sampling.Velocity`), VAE encode and decode seconds, and
  the adapter's set-up time;
* refinement-track candidates per second with the device (torch) Philox path, and that the chosen
  candidates equal the CPU (numpy) path's;
* the structural test (tests/test_structure.py).
The caption is a random embedding of the real shape (1 x 512 x 4096): the text encoder is not loaded.

It prints one JSON object. `benchmarks/run.py --gpu-check FILE` folds it into docs/RESULTS.md and
copies it to benchmarks/results/gpu_check.json, which the web app's cost model then uses instead of
the published-architecture estimate (`app_support.wan_costs`).

`--device cpu --dry-run` runs every part on a CPU at a reduced size (2 of the 30 blocks, 64x64,
5 frames, fewer candidates) to test this script; its JSON says so and the app ignores it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FULL = dict(geometries=[(33, 480, 832), (81, 480, 832)], batches=[1, 4], timed_steps=2, sample_steps=3,
            candidates=1024, parity_candidates=256, parity_trials=3, num_layers=None)
DRY = dict(geometries=[(5, 64, 64)], batches=[1, 2], timed_steps=1, sample_steps=2, candidates=32,
           parity_candidates=16, parity_trials=2, num_layers=2)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build(device, dtype, num_layers: int | None):
    """Random transformer (published config; `num_layers` blocks if given) and VAE on `device`."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from lora_codec.backbones import _strip_private, wan_reference_config

    cfg = _strip_private(wan_reference_config()["transformer"])
    cfg["patch_size"] = tuple(cfg["patch_size"])
    if num_layers:
        cfg["num_layers"] = num_layers
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(**cfg).to(dtype)
        vae = AutoencoderKLWan()
    for m in (transformer, vae):
        m.eval().requires_grad_(False)
    return transformer, vae


def measure_fit(transformer, device, dtype, geom, batch: int, steps: int, text_emb) -> dict:
    import torch

    from lora_codec.adapter import Adapter, AdapterConfig
    from lora_codec.fit import FitConfig, Fitter

    frames, h, w = geom
    latents = torch.randn(16, (frames - 1) // 4 + 1, h // 8, w // 8)
    _reset_peak(device)
    t0 = time.perf_counter()
    adapter = Adapter(transformer, AdapterConfig(rank=1, theta_length=131072), init_seed=0)
    _sync(device)
    setup_s = time.perf_counter() - t0
    transformer.enable_gradient_checkpointing()
    try:
        fitter = Fitter(adapter, latents, text_emb, FitConfig(stage1_steps=1000, stage2_steps=0, batch=batch),
                        device=device, dtype=dtype)
        fitter.train_step()  # warm-up (kernels, allocator)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fitter.train_step()
        _sync(device)
        step_s = (time.perf_counter() - t0) / steps
    finally:
        transformer.disable_gradient_checkpointing()
        transformer = adapter.detach()  # the plain transformer back (peft unloads in place)
    return transformer, {"geometry": list(geom), "batch": batch, "tokens": ((frames - 1) // 4 + 1) * (h // 16) * (w // 16),
            "seconds_per_step": round(step_s, 4), "seconds_per_sample": round(step_s / batch, 4),
            "peak_gpu_gb": _peak_gb(device), "adapter_setup_s": round(setup_s, 3)}


def measure_decode(transformer, vae, device, dtype, geom, steps: int, text_emb) -> dict:
    import torch

    from lora_codec.adapter import Adapter, AdapterConfig
    from lora_codec.sampling import Velocity, initial_noise, sample_ode, sigma_schedule

    frames, h, w = geom
    shape = (16, (frames - 1) // 4 + 1, h // 8, w // 8)
    _reset_peak(device)
    adapter = Adapter(transformer, AdapterConfig(rank=1, theta_length=131072), init_seed=0)
    try:
        vel = Velocity(adapter.model, text_emb, dtype=dtype, device=device)
        x = initial_noise(0, shape).to(device)
        vel(x, 1.0)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        lat = sample_ode(vel, initial_noise(0, shape), sigma_schedule(steps, 3.0))
        _sync(device)
        step_s = (time.perf_counter() - t0) / steps
    finally:
        transformer = adapter.detach()
    with torch.no_grad():
        video = torch.rand(1, 3, frames, h, w, device=device) * 2 - 1
        _sync(device)
        t0 = time.perf_counter()
        z = vae.encode(video).latent_dist.mode()
        _sync(device)
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        vae.decode(lat.unsqueeze(0).to(device, z.dtype), return_dict=False)
        _sync(device)
        dec_s = time.perf_counter() - t0
    return transformer, {"geometry": list(geom), "steps": steps, "seconds_per_step": round(step_s, 4),
            "vae_encode_s": round(enc_s, 3), "vae_decode_s": round(dec_s, 3), "peak_gpu_gb": _peak_gb(device)}


def measure_refine(device, geom, candidates: int, parity_candidates: int, trials: int) -> dict:
    """Candidates per second of the device Philox path (`refine.candidate_dots` on `device`), and
    whether the chosen candidate (argmax of the scores) equals the CPU numpy path's."""
    import numpy as np
    import torch

    from lora_codec import refine

    frames, h, w = geom
    n = 16 * ((frames - 1) // 4 + 1) * (h // 8) * (w // 8)
    gen = torch.Generator().manual_seed(1)
    d = torch.randn(n, generator=gen).to(device)
    refine.candidate_dots(7, 0, d, min(candidates, 8))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    refine.candidate_dots(7, 0, d, candidates)
    _sync(device)
    secs = time.perf_counter() - t0
    same = []
    for trial in range(trials):
        dd = torch.randn(n, generator=gen)
        dev = refine.candidate_dots(11, trial, dd.to(device), parity_candidates)
        cpu = refine.candidate_dots(11, trial, dd, parity_candidates, backend="numpy")
        same.append(bool(int(np.argmax(-dev)) == int(np.argmax(-cpu))))
    return {"geometry": list(geom), "latent_numbers": n, "candidates": candidates,
            "candidates_per_second": round(candidates / secs, 1), "backend": "torch" if device.type != "cpu" else "numpy",
            "parity_trials": trials, "parity_candidates": parity_candidates, "chosen_equal_cpu": all(same)}


def structural_test() -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_structure.py"], cwd=ROOT,
                          capture_output=True, text=True)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"passed": proc.returncode == 0, "summary": tail, "seconds": round(time.perf_counter() - t0, 1)}


def run(device_name: str = "cuda", dry_run: bool = False) -> dict:
    import diffusers
    import torch

    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --dry-run to test this script")
    if device.type == "cpu" and not dry_run:
        raise SystemExit("the full-size check needs a CUDA GPU; on a CPU use --dry-run (reduced sizes)")
    plan = DRY if dry_run else FULL
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out: dict = {
        "script": "scripts/gpu_check.py" + (" --dry-run" if dry_run else ""),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "sm_count": torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        if device.type == "cuda" else None,
        "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
        "weights": "random; transformer at the published config" + (
            f" reduced to {plan['num_layers']} blocks (dry run)" if plan["num_layers"] else "")
        + f" in {str(dtype).replace('torch.', '')}, VAE float32; caption a random 1x512x4096 embedding",
        "dry_run": dry_run,
        "errors": {},
    }
    out["structural_test"] = structural_test()
    t0 = time.perf_counter()
    transformer, vae = build(device, dtype, plan["num_layers"])
    _sync(device)
    out["build_s"] = round(time.perf_counter() - t0, 2)
    text_emb = torch.randn(1, 512, 4096, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    out["fit"] = []
    for geom in plan["geometries"]:
        for b in plan["batches"]:
            try:
                transformer, row = measure_fit(transformer, device, dtype, geom, b, plan["timed_steps"], text_emb)
                out["fit"].append(row)
            except Exception as exc:  # e.g. out of memory at 81 frames x batch 4: recorded, the rest runs
                out["errors"][f"fit {geom} x{b}"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if out["fit"]:
        out["adapter_setup_s"] = out["fit"][0]["adapter_setup_s"]
    try:
        transformer, dec = measure_decode(transformer, vae, device, dtype, plan["geometries"][0], plan["sample_steps"],
                                          text_emb)
        out["decode"] = dec
        out["vae_encode_s"] = dec["vae_encode_s"]
    except Exception as exc:
        out["errors"]["decode"] = f"{type(exc).__name__}: {str(exc)[:300]}\n{traceback.format_exc(limit=3)}"
    try:
        out["refine"] = measure_refine(device, plan["geometries"][0], plan["candidates"], plan["parity_candidates"],
                                       plan["parity_trials"])
    except Exception as exc:
        out["errors"]["refine"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --dry-run)")
    ap.add_argument("--dry-run", action="store_true", help="reduced sizes, to test this script (e.g. on a CPU)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    result = run(args.device, args.dry_run)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if result["structural_test"]["passed"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
