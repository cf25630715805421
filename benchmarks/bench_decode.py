"""Decode time of a code on the tiny backbone (CPU): parse + adapter + sampling + VAE decode, and the
plain model's sampling time without the adapter for comparison. Prints one JSON object."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(repeats: int = 3, fit_steps: int = 40) -> dict:
    import torch

    from lora_codec.backbones import load_backbone
    from lora_codec.codec import EncodeSettings, decode, encode
    from lora_codec.sampling import Velocity, initial_noise, sample_ode, sigma_schedule

    bb = load_backbone("tiny")
    res = encode(ROOT / "examples" / "bigbuckbunny_2s.mp4", EncodeSettings(model="tiny", fit_steps=fit_steps), backbone=bb)
    steps = res.code.steps
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode(res.data, backbone=bb)
        times.append(time.perf_counter() - t0)
    emb = bb.embed_caption(res.code.caption)
    shape = bb.latent_shape(res.geometry)
    plain = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        lat = sample_ode(Velocity(bb.transformer, emb, device=bb.device, dtype=bb.dtype), initial_noise(0, shape),
                         sigma_schedule(steps, res.code.shift))
        bb.decode_latents(lat)
        plain.append(time.perf_counter() - t0)
    return {
        "backbone": "tiny (CPU, no visual knowledge)",
        "threads": torch.get_num_threads(),
        "geometry": [res.geometry.frames, res.geometry.height, res.geometry.width],
        "sample_steps": steps,
        "code_bytes": len(res.data),
        "decode_s": round(statistics.median(times), 4),
        "frozen_model_sample_and_vae_s": round(statistics.median(plain), 4),
        "ratio": round(statistics.median(times) / statistics.median(plain), 3),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
