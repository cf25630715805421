"""The `small` trained backbone on the two evaluation clips it never saw in training; prints JSON.

    python benchmarks/bench_small.py [--quick]

Per clip (`examples/bigbuckbunny_eval.mp4`: the film from 4.0 s, a held-out time range;
`examples/coffee_pan.mp4`: a pan over a photograph not used in training), against the clip at the
coded geometry (9 frames of 128x80):

* `vae`: the VAE's own reconstruction (encode + decode of the clip's latents): the ceiling a code can reach;
* `unadapted`: the plain model sampled from the same seed, caption and schedule with an all-zero adapter;
* `default`: the default encode (what `python -m lora_codec encode` does), decoded as a receiver would;
* `rate_points`: the same fit at other rate weights (a rate-distortion curve);
* `refine`: a refinement track with N = 256 candidates per step vs the plain ODE on the same schedule, for
  a fit on random noise (the paper's) and on the decoder's own noise (small's default);
* `classic`: x264 / x265 / SVT-AV1 (PyAV) at each code's size (`lora_codec.evaluation.compare`).

Timings are wall-clock on this machine (`benchmarks/run.py` records the load average).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVAL_CLIPS = {
    "film (held-out 4.0-5.0 s)": (ROOT / "examples" / "bigbuckbunny_eval.mp4",
                                  "a cartoon animation: a big grey rabbit in a green meadow with trees"),
    "photo pan (unseen photograph)": (ROOT / "examples" / "coffee_pan.mp4", "a photo of a cup of coffee on a saucer"),
}
RATE_LAMBDAS = (3e-2, 3e-3, 1e-3)


def unadapted_code(code) -> bytes:
    """The same code with every symbol 0: the plain model from the same seed, caption and schedule."""
    from lora_codec import bitstream

    return bitstream.write_code(dataclasses.replace(code, symbols=np.zeros_like(code.symbols), sections={}))


def quality(ref: np.ndarray, frames: np.ndarray) -> dict:
    from lora_codec.metrics import ms_ssim, psnr

    return {"psnr_rgb": round(psnr(ref, frames), 2), "ms_ssim": round(ms_ssim(ref, frames), 4)}


def measure_clip(bb, path: Path, caption: str, quick: bool) -> dict:
    from lora_codec.codec import EncodeSettings, decode, encode
    from lora_codec.evaluation import compare
    from lora_codec.video import tensor_to_video

    out: dict = {"clip": str(path.relative_to(ROOT))}
    t0 = time.perf_counter()
    res = encode(path, EncodeSettings(model=bb.name, caption=caption), backbone=bb)
    out["default"] = {"bytes": len(res.data), "fit_steps": res.report["steps"],
                      "encode_seconds": round(time.perf_counter() - t0, 1),
                      **quality(res.frames, res.decoded.frames)}  # the encoder's own receiver decode
    out["vae"] = quality(res.frames, tensor_to_video(bb.decode_latents(res.latents)))
    out["unadapted"] = quality(res.frames, decode(unadapted_code(res.code), backbone=bb).frames)
    codes, names = [res.data], [f"lambda {bb.defaults.rate_lambda:g} (default)"]
    out["rate_points"] = []
    for lam in RATE_LAMBDAS[:1] if quick else RATE_LAMBDAS:
        r = encode(path, EncodeSettings(model=bb.name, caption=caption, rate_lambda=lam), backbone=bb)
        out["rate_points"].append({"rate_lambda": lam, "bytes": len(r.data),
                                   **quality(r.frames, r.decoded.frames)})
        codes.append(r.data)
        names.append(f"lambda {lam:g}")
    if not quick:
        out["refine"] = []
        for mode in ("random", "seed"):
            r = encode(path, EncodeSettings(model=bb.name, caption=caption, noise_mode=mode, refine_n=256), backbone=bb)
            out["refine"].append({"n": 256, "noise_mode": mode, "bytes": len(r.data),
                                  "track": quality(r.frames, decode(r.data, backbone=bb, refine="all").frames),
                                  "plain_ode": quality(r.frames, decode(r.data, backbone=bb, refine="none").frames)})
    cmp = compare(path, codes, codecs=("x264", "x265", "av1"), curve="none", backbone=bb, code_names=names,
                  perceptual=False)
    out["classic"] = [{k: row.get(k) for k in ("name", "budget", "bytes", "fits", "psnr_rgb", "ms_ssim")}
                      for row in cmp["rows"]]
    return out


def run(quick: bool = False) -> dict:
    from lora_codec.backbones import SMALL_NAME, SMALL_WEIGHTS, load_backbone

    bb = load_backbone(SMALL_NAME)
    training = json.loads((SMALL_WEIGHTS / "small.json").read_text())
    result = {
        "backbone": f"{SMALL_NAME} (trained weights, CPU)",
        "training": {"command": training.get("command"), "vae_seconds": training.get("vae", {}).get("seconds"),
                     "transformer_seconds": training.get("transformer", {}).get("seconds"),
                     "total_seconds": training.get("total_seconds"), "threads": training.get("threads")},
        "defaults": dataclasses.asdict(bb.defaults),
        "clips": {},
    }
    for name, (path, caption) in EVAL_CLIPS.items():
        result["clips"][name] = measure_clip(bb, path, caption, quick)
    return result


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
