"""Long fuzz run of the code parser and the decoder's entry checks. Prints JSON counts.

    .venv/bin/python scripts/fuzz_codes.py [--count 20000] [--seed 0] [--atheris SECONDS]

Every input must end in a LoraCodecError with a message (or parse as a well-formed code) within 1 s
and without large allocations; anything else is a failure (exit 1)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_codec.bitstream import load_code_bytes, read_code  # noqa: E402
from lora_codec.errors import LoraCodecError  # noqa: E402
from lora_codec.fuzzing import hostile_inputs, sample_code, sample_segmented_code  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    counts: dict[str, dict[str, int]] = {}
    failures = []
    slowest = 0.0
    tracemalloc.start()
    t_start = time.perf_counter()
    valids = [(1, sample_code(seed=1, theta_length=2048)), (2, sample_code(seed=2, theta_length=131072)),
              # multi-segment codes (format version 2): one shared prior, and a prior per segment
              (3, sample_segmented_code(seed=3, segments=4, shared=True)),
              (4, sample_segmented_code(seed=4, segments=3, shared=False))]
    for base_seed, valid in valids:
        for kind, data in hostile_inputs(valid, a.count // len(valids), seed=a.seed + base_seed):
            t0 = time.perf_counter()
            try:
                read_code(load_code_bytes(data))
                outcome = "parsed"
            except LoraCodecError as exc:
                outcome = "refused" if str(exc) else "empty-message"
            except Exception as exc:  # noqa: BLE001 - a failure of the fuzz target
                outcome = "crash"
                failures.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
            dt = time.perf_counter() - t0
            slowest = max(slowest, dt)
            if dt > 1.0:
                failures.append(f"{kind}: took {dt:.2f} s")
            counts.setdefault(kind, {}).setdefault(outcome, 0)
            counts[kind][outcome] += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    total = sum(sum(v.values()) for v in counts.values())
    print(json.dumps({"inputs": total, "by_kind": counts, "failures": failures[:20], "n_failures": len(failures),
                      "slowest_s": round(slowest, 4), "peak_traced_bytes": peak,
                      "seconds": round(time.perf_counter() - t_start, 1)}))
    return 1 if failures or peak > (256 << 20) else 0


if __name__ == "__main__":
    sys.exit(main())
