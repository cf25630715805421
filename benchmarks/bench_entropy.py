"""Benchmark of lora_codec.entropy on synthetic discretised-Laplace symbol vectors.

Prints one JSON object. ``run()`` returns the same dict:
  - ``theta``: for a 131,072-entry vector at several Laplace scales: ideal bits, payload bits,
    overhead (bits and %), prior bytes, median encode / decode / estimate times in ms;
  - ``overhead_by_length``: payload-minus-ideal bits (mean and max over seeds) for
    d = 2048, 4096, 8192, 131072, and the same for plain constriction ANS started from an
    empty stack (the baseline our exact-tail seeding improves on).

Usage: python benchmarks/bench_entropy.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lora_codec import entropy  # noqa: E402


def laplace_symbols(d: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.laplace(0.0, scale, d)).astype(np.int32)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def _plain_ans_bits(symbols: np.ndarray) -> int:
    """Payload bits of plain constriction ANS from an empty stack, same byte trimming."""
    import constriction

    lo = int(symbols.min())
    counts = np.bincount(symbols.astype(np.int64) - lo)
    nz = np.flatnonzero(counts)
    if nz.size < 2:
        return 0
    lut = np.zeros(counts.size, dtype=np.int32)
    lut[nz] = np.arange(nz.size, dtype=np.int32)
    probs = counts[nz].astype(np.float64) / symbols.size
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(lut[symbols - lo], constriction.stream.model.Categorical(probs, perfect=False))
    return 8 * len(coder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00"))


def run(quick: bool = False) -> dict:
    d = 131072
    repeats = 3 if quick else 9
    theta = []
    for scale in (1.0, 2.0, 4.0):
        q = laplace_symbols(d, scale, seed=1)
        enc = entropy.encode_symbols(q)
        out = entropy.decode_symbols(enc.prior, enc.payload, enc.count)
        assert np.array_equal(out, q)
        payload_bits = 8 * len(enc.payload)
        theta.append(
            {
                "d": d,
                "laplace_scale": scale,
                "ideal_bits": round(enc.ideal_bits, 1),
                "bits_per_symbol": round(enc.ideal_bits / d, 4),
                "payload_bits": payload_bits,
                "overhead_bits": round(payload_bits - enc.ideal_bits, 2),
                "overhead_pct": round(100.0 * (payload_bits - enc.ideal_bits) / enc.ideal_bits, 5),
                "prior_bytes": len(enc.prior),
                "payload_bytes": len(enc.payload),
                "encode_ms": _median_ms(lambda: entropy.encode_symbols(q), repeats),
                "decode_ms": _median_ms(lambda: entropy.decode_symbols(enc.prior, enc.payload, enc.count), repeats),
                "estimate_ms": _median_ms(lambda: entropy.estimate_code_bytes(q), repeats),
            }
        )
    by_length = []
    seeds = range(5 if quick else 20)
    for n in (2048, 4096, 8192, 131072):
        for scale in (1.0, 2.0, 4.0):
            over, over_pct, plain = [], [], []
            for seed in seeds:
                if n == 131072 and seed >= 5:
                    break
                q = laplace_symbols(n, scale, seed=100 + seed)
                enc = entropy.encode_symbols(q)
                o = 8 * len(enc.payload) - enc.ideal_bits
                over.append(o)
                over_pct.append(100.0 * o / enc.ideal_bits)
                plain.append(_plain_ans_bits(q) - enc.ideal_bits)
            by_length.append(
                {
                    "d": n,
                    "laplace_scale": scale,
                    "runs": len(over),
                    "bits_per_symbol": round(enc.ideal_bits / n, 3),
                    "overhead_bits_mean": round(float(np.mean(over)), 2),
                    "overhead_bits_max": round(float(np.max(over)), 2),
                    "overhead_pct_max": round(float(np.max(over_pct)), 4),
                    "plain_ans_overhead_bits_mean": round(float(np.mean(plain)), 2),
                    "prior_bytes": len(enc.prior),
                }
            )
    return {"theta": theta, "overhead_by_length": by_length}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=1))
