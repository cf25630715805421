"""Fit-step cost of the adapter: (fit step with the UniLoRA adapter) / (frozen model forward+backward
without it). The floor is 1.0 (the backward through the frozen model is needed either way); target < 1.15.

Measured on the CPU for two configurations built from the Wan classes: the `tiny` backbone, and a
"wan-width" transformer (the real model's block: dim 1536, 12 heads, ffn 8960, text_dim 4096) with 2
blocks instead of 30, random weights, at a small latent. The real model needs a GPU: run this there with
--device cuda to measure it. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def measure(transformer, latent_shape, text_len, text_dim, *, theta_length, batch=1, repeats=10, device="cpu",
            dtype=torch.float32) -> dict:
    from lora_codec.adapter import Adapter, AdapterConfig
    from lora_codec.fit import FitConfig, Fitter

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(latent_shape, generator=g)
    emb = torch.randn(1, text_len, text_dim, generator=g).to(device, dtype)

    adapter = Adapter(transformer, AdapterConfig(theta_length=theta_length), init_seed=0)
    fitter = Fitter(adapter, x0, emb, FitConfig(stage1_steps=10**6, stage2_steps=0, batch=batch), device=device, dtype=dtype)
    fitter._progress = lambda loss, mse: None  # time the optimisation step only (not the size estimate)

    # The baseline is the same model with the adapter switched off (peft `disable_adapter`), the same
    # loss, and a backward through every block to the first block's input (the patch embedding's
    # output is made a leaf that requires grad): the backward the fit needs anyway.
    def frozen_step():
        t = torch.rand(batch)
        eps = torch.randn((batch, *latent_shape))
        x_t = ((1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps).to(device, dtype)
        hook = transformer.patch_embedding.register_forward_hook(lambda m, i, o: o.detach().requires_grad_(True))
        try:
            with adapter.model.disable_adapter():
                out = adapter.model(hidden_states=x_t, timestep=(t * 1000).to(device),
                                    encoder_hidden_states=emb.expand(batch, -1, -1), return_dict=False)[0].float()
                torch.nn.functional.mse_loss(out, (eps - x0).to(device)).backward()
        finally:
            hook.remove()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    # Interleave the two so that load from other processes hits both alike; median of the pairs.
    frozen_step(); fitter.train_step(); sync()
    bases, adapted, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); frozen_step(); sync(); b = time.perf_counter() - t0
        t0 = time.perf_counter(); fitter.train_step(); sync(); a = time.perf_counter() - t0
        bases.append(b); adapted.append(a); ratios.append(a / b)
    base, adapted_s = statistics.median(bases), statistics.median(adapted)
    adapter.detach()
    return {"frozen_fwd_bwd_s": round(base, 5), "fit_step_s": round(adapted_s, 5), "ratio": round(statistics.median(ratios), 3),
            "adapted_layers": adapter.num_layers, "lora_entries": adapter.lora_entries}


def run(device: str = "cpu", repeats: int = 10) -> dict:
    from diffusers import WanTransformer3DModel

    from lora_codec.backbones import build_tiny, wan_reference_config

    torch.manual_seed(0)
    tiny = build_tiny()
    out = {"device": device, "threads": torch.get_num_threads()}
    out["tiny"] = measure(tiny.transformer, (4, 5, 8, 14), 128, 32, theta_length=2048, batch=2, repeats=repeats,
                          device=device)
    cfg = {k: v for k, v in wan_reference_config()["transformer"].items() if not k.startswith("_")}
    cfg.update(num_layers=2, patch_size=tuple(cfg["patch_size"]))
    wide = WanTransformer3DModel(**cfg).eval().requires_grad_(False).to(device)
    out["wan_width_2_blocks"] = measure(wide, (16, 3, 16, 16), 64, 4096, theta_length=16384, batch=1,
                                        repeats=max(3, repeats // 3), device=device)
    out["note"] = ("random weights; CPU float32 unless --device says otherwise; the real 30-block model "
                   "needs a GPU with the weights")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    print(json.dumps(run(a.device, a.repeats)))
