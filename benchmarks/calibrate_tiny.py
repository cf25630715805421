"""Measure the tiny VAE's per-channel latent statistics on the example clip (prints JSON).

The numbers in `backbones.TINY_CONFIG['vae']['latents_mean'/'latents_std']` came from this script."""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run() -> dict:
    from lora_codec.backbones import build_tiny
    from lora_codec.video import fit_to_geometry, read_video, video_to_tensor

    bb = build_tiny()
    cfg = bb.vae.config
    clip = read_video(Path(__file__).resolve().parents[1] / "examples" / "bigbuckbunny_2s.mp4")
    g = bb.coded_geometry(*clip.frames.shape[:3])
    frames = fit_to_geometry(clip.frames, g.frames, g.height, g.width)
    z = bb.encode_video(video_to_tensor(frames))  # normalised with the configured stats
    # undo the configured normalisation to get raw statistics
    import torch

    mean_cfg = torch.tensor(cfg.latents_mean).view(-1, 1, 1, 1)
    std_cfg = torch.tensor(cfg.latents_std).view(-1, 1, 1, 1)
    raw = z * std_cfg + mean_cfg
    return {
        "clip": "examples/bigbuckbunny_2s.mp4",
        "backbone": "tiny (seeded weights, CPU)",
        "raw_latent_mean": [round(float(v), 4) for v in raw.mean(dim=(1, 2, 3))],
        "raw_latent_std": [round(float(v), 4) for v in raw.std(dim=(1, 2, 3))],
        "normalised_std": [round(float(v), 4) for v in z.std(dim=(1, 2, 3))],
    }


if __name__ == "__main__":
    print(json.dumps(run()))
