"""Benchmark of the refinement track (lora_codec/refine.py) on the tiny backbone (CPU).

Prints one JSON object; ``run()`` returns the same dict:
  - ``decode_cost``: a code with a recorded track decoded by replaying it vs a plain ODE decode of the
    same schedule (whole `decode` call, and the sampling loop alone): process CPU seconds on one torch
    thread, fastest of interleaved repeats, and their ratio (plus the wall-clock ratio);
  - ``throughput``: the encoder's per-step selection (scores for N candidates) in candidates/s and
    normals/s, the candidate generation alone, and plain ``torch.randn`` of the same [N, n] size, for the
    tiny latent and two Wan latent sizes;
  - ``table``: N x steps -> extra bytes, latent MSE to the original (mean over noise seeds), decode
    CPU time and the track's encode CPU time (one thread); plus the plain ODE decode of each schedule;
  - ``prefixes``: progressive decoding, latent MSE when replaying only the first K indices.

Timings use CPU time where they compare: on a shared machine wall-clock varies by 2-10x.

The tiny backbone has NO visual knowledge: these numbers measure the plumbing (bytes, speed, that the
error falls with N), not image quality. Usage: python benchmarks/bench_refine.py [--quick] [--markdown]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lora_codec import bitstream, refine  # noqa: E402
from lora_codec.backbones import load_backbone  # noqa: E402
from lora_codec.codec import (EncodeSettings, _code_velocity, attach_code_adapter, compute_track, decode,  # noqa: E402
                              encode)
from lora_codec.sampling import initial_noise, sample_ode, sigma_schedule  # noqa: E402

WAN_LATENTS = {"wan 480x272x33": 16 * 9 * 34 * 60, "wan 832x480x81": 16 * 21 * 60 * 104}


def _clip():
    path = ROOT / "examples" / "bigbuckbunny_2s.mp4"
    if path.exists():
        return path, "examples/bigbuckbunny_2s.mp4"
    from lora_codec.video import Clip

    t = np.arange(17)[:, None, None]
    y = np.linspace(-1, 1, 72)[None, :, None]
    x = np.linspace(-1, 1, 128)[None, None, :]
    img = np.stack([np.sin(3 * x + 0.3 * t + 0 * y), np.cos(2 * y - 0.2 * t + 0 * x), np.sin(4 * x * y + 0.1 * t)], -1)
    frames = np.clip((img * 0.45 + 0.5) * 255, 0, 255).astype(np.uint8)
    return Clip(frames=frames, fps=Fraction(16), src_width=128, src_height=72, src_frames=17, notes=[]), "synthetic"


def _times(fn, repeats: int, clock=time.perf_counter) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


class _one_thread:
    """Run torch on one thread: process CPU time then measures the work itself, not the other load
    on a shared machine (wall-clock timings there vary by 2-10x)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def _best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` runs: the least disturbed by other load on the machine."""
    return min(_times(fn, repeats))


def _mse(a, b) -> float:
    return float(torch.mean((a.float().cpu() - b.float().cpu()) ** 2))


def decode_cost(bb, res, steps_list, n: int, repeats: int) -> list[dict]:
    """Replay vs plain ODE decode of the same schedule: process CPU seconds on one torch thread (the
    fastest of `repeats` interleaved runs), for the whole `decode` call and for the sampling loop."""
    out = []
    cpu = time.process_time
    for steps in steps_list:
        code, _ = compute_track(bb, res.code, res.latents, n=n, steps=steps)
        data = bitstream.write_code(code)
        track = refine.read_track(code)
        sigmas = sigma_schedule(steps, code.shift)
        with _one_thread():
            decode(data, backbone=bb)  # warm-up
            whole_replay, whole_plain, wall_replay, wall_plain = [], [], [], []
            for _ in range(repeats):  # interleaved, so load changes hit both alike
                whole_replay += _times(lambda: decode(data, backbone=bb), 1, cpu)
                whole_plain += _times(lambda: decode(data, backbone=bb, refine="none", steps=steps), 1, cpu)
                wall_replay += _times(lambda: decode(data, backbone=bb), 1)
                wall_plain += _times(lambda: decode(data, backbone=bb, refine="none", steps=steps), 1)
            adapter = attach_code_adapter(bb, code)
            try:
                velocity = _code_velocity(bb, code, adapter, code.caption)
                noise = initial_noise(code.noise_seed, tuple(res.latents.shape))
                loop_replay, loop_plain = [], []
                for _ in range(repeats):
                    loop_replay += _times(lambda: refine.replay(velocity, noise, track, sigmas, seed=code.noise_seed),
                                          1, cpu)
                    loop_plain += _times(lambda: sample_ode(velocity, noise, sigmas), 1, cpu)
            finally:
                bb.pipe.transformer = adapter.detach()
        wr, wp, lr, lp = (min(t) for t in (whole_replay, whole_plain, loop_replay, loop_plain))
        out.append({"steps": steps, "n": n, "repeats": repeats,
                    "timing": "process CPU seconds, 1 torch thread, fastest of the interleaved repeats",
                    "decode_replay_cpu_s": round(wr, 4), "decode_plain_cpu_s": round(wp, 4),
                    "decode_ratio": round(wr / wp, 4),
                    "sampling_replay_cpu_s": round(lr, 4), "sampling_plain_cpu_s": round(lp, 4),
                    "sampling_ratio": round(lr / lp, 4),
                    "wall_decode_ratio": round(min(wall_replay) / min(wall_plain), 4)})
    return out


def throughput(sizes: dict[str, int], normals_per_size: int) -> list[dict]:
    out = []
    for name, n in sizes.items():
        count = max(2, normals_per_size // n)
        d = torch.randn(n)
        refine.candidate_dots(0, 0, d, min(count, 4))  # warm-up
        t_sel = _best_time(lambda: refine.candidate_dots(1, 2, d, count), 3)
        # generation alone: the same counter grid without the dot products
        blocks = (n + 3) // 4
        block_blocks = (1 << 16) // 4
        k0, k1 = refine._key(1)

        def gen_only():
            if blocks <= block_blocks:
                kc = max(1, block_blocks // blocks)
                for lo in range(0, count, kc):
                    ks = np.arange(lo, min(count, lo + kc), dtype=np.uint64).reshape(-1, 1)
                    j = np.arange(blocks, dtype=np.uint64).reshape(1, -1)
                    refine._normals_numpy(refine._philox_numpy(j, ks, np.uint64(2), np.uint64(refine.NOISE_DOMAIN),
                                                               k0, k1), exact=False)
            else:
                for k in range(count):
                    for j0 in range(0, blocks, block_blocks):
                        j = np.arange(j0, min(blocks, j0 + block_blocks), dtype=np.uint64)
                        refine._normals_numpy(refine._philox_numpy(j, np.uint64(k), np.uint64(2),
                                                                   np.uint64(refine.NOISE_DOMAIN), k0, k1), exact=False)

        t_gen = _best_time(gen_only, 3)
        buf = torch.empty(count, n)
        torch.randn(count, n, out=buf)
        t_randn = _best_time(lambda: torch.randn(count, n, out=buf), 3)
        t_single = _best_time(lambda: refine.candidate_noise(1, 2, 3, n), 3)
        out.append({
            "latent": name, "n": n, "candidates": count,
            "selection_candidates_per_s": round(count / t_sel, 1),
            "selection_mnormals_per_s": round(count * n / t_sel / 1e6, 1),
            "generation_only_candidates_per_s": round(count / t_gen, 1),
            "generation_share_of_selection": round(t_gen / t_sel, 3),
            "torch_randn_candidates_per_s": round(count / t_randn, 1),
            "selection_vs_randn": round(t_randn / t_sel, 3),
            "decoder_one_candidate_ms": round(t_single * 1e3, 3),
        })
    return out


def table(bb, res, steps_list, n_list, seeds: int) -> list[dict]:
    rows = []
    for steps in steps_list:
        # plain ODE decode of the same schedule
        errs = []
        for s in range(seeds):
            code = dataclasses.replace(res.code, noise_seed=s, steps=steps)
            errs.append(_mse(decode(bitstream.write_code(code), backbone=bb).latents, res.latents))
        plain = dataclasses.replace(res.code, noise_seed=0, steps=steps)
        plain_data = bitstream.write_code(plain)
        with _one_thread():
            t_plain = min(_times(lambda: decode(plain_data, backbone=bb), 5, time.process_time))
        rows.append({"n": "ODE", "steps": steps, "extra_bytes": 0, "index_bits": 0,
                     "latent_mse": round(float(np.mean(errs)), 4), "decode_cpu_s": round(t_plain, 3),
                     "encode_track_cpu_s": 0.0})
        for n in n_list:
            errs, data0, t_rec = [], None, []
            for s in range(seeds):
                code = dataclasses.replace(res.code, noise_seed=s)
                with _one_thread():
                    t0 = time.process_time()
                    new, rec = compute_track(bb, code, res.latents, n=n, steps=steps)
                    t_rec.append(time.process_time() - t0)
                errs.append(_mse(rec.latents, res.latents))
                if s == 0:
                    data0 = bitstream.write_code(new)
            info = bitstream.size_report(data0)
            with _one_thread():
                t_dec = min(_times(lambda: decode(data0, backbone=bb), 5, time.process_time))
            rows.append({"n": n, "steps": steps, "extra_bytes": info["section_bytes_by_tag"][1],
                         "index_bits": (steps - 1) * (n.bit_length() - 1),
                         "latent_mse": round(float(np.mean(errs)), 4), "decode_cpu_s": round(t_dec, 3),
                         "encode_track_cpu_s": round(min(t_rec), 2)})
    return rows


def prefixes(bb, res, steps: int, n: int, seeds: int, fractions=(0, 0.25, 0.5, 0.75, 1.0)) -> list[dict]:
    """Progressive decoding: latent MSE when replaying only the first K indices of a track."""
    rows = {}
    for s in range(seeds):
        code, _ = compute_track(bb, dataclasses.replace(res.code, noise_seed=s), res.latents, n=n, steps=steps)
        data = bitstream.write_code(code)
        count = refine.read_track(code).count
        for f in fractions:
            k = int(round(f * count))
            rows.setdefault(k, []).append(_mse(decode(data, backbone=bb, refine=k).latents, res.latents))
    log2_n = n.bit_length() - 1
    return [{"steps": steps, "n": n, "k": k, "index_bits": k * log2_n, "latent_mse": round(float(np.mean(v)), 4)}
            for k, v in sorted(rows.items())]


def run(quick: bool = False, fit_steps: int = 100, seeds: int = 3) -> dict:
    bb = load_backbone("tiny")
    clip, clip_name = _clip()
    t0 = time.perf_counter()
    res = encode(clip, EncodeSettings(model="tiny", caption="", seed=0, fit_steps=fit_steps), backbone=bb)
    fit_s = time.perf_counter() - t0
    steps_list = [10, 20] if quick else [10, 20, 50]
    n_list = [16, 256] if quick else [16, 256, 4096, 65536]
    sizes = {"tiny 17x64x112": res.latents.numel(), **WAN_LATENTS}
    if quick:
        sizes.pop("wan 832x480x81")
    return {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__},
        "backbone": "tiny (CPU; random weights, NO visual knowledge: plumbing numbers, not image quality)",
        "clip": clip_name,
        "geometry": [res.geometry.frames, res.geometry.height, res.geometry.width],
        "latent_shape": list(res.latents.shape),
        "fit_steps": fit_steps,
        "fit_seconds": round(fit_s, 1),
        "code_bytes_without_track": len(res.data),
        "seeds": seeds,
        "decode_cost": decode_cost(bb, res, [20] if quick else [20, 50], 256, 5 if quick else 15),
        "throughput": throughput(sizes, (1 << 22) if quick else (1 << 24)),
        "table": table(bb, res, steps_list, n_list, 2 if quick else seeds),
        "prefixes": prefixes(bb, res, 20, 256, 2 if quick else seeds),
    }


def markdown(result: dict) -> str:
    lines = ["| N | steps | extra bytes | index bits | latent MSE | decode CPU s | track encode CPU s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["table"]:
        lines.append(f"| {r['n']} | {r['steps']} | {r['extra_bytes']} | {r['index_bits']} | {r['latent_mse']:.4f} | "
                     f"{r['decode_cpu_s']:.3f} | {r['encode_track_cpu_s']:.2f} |")
    lines += ["", "| steps | N | replayed K | index bits | latent MSE |", "|---|---|---|---|---|"]
    for r in result["prefixes"]:
        lines.append(f"| {r['steps']} | {r['n']} | {r['k']} | {r['index_bits']} | {r['latent_mse']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown (stderr)")
    args = ap.parse_args()
    out = run(quick=args.quick)
    print(json.dumps(out))
    if args.markdown:
        print(markdown(out), file=sys.stderr)
