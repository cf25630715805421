"""The real Wan2.1-T2V-1.3B path on this machine's CPU with RANDOM full-size weights: the CLI round
trip `encode -> info -> decode` (and a decode of the same code with theta = 0, the unadapted model)
that tests/test_wan_full.py runs, timed, with each command's peak resident memory.

The directory is written by tests/wan_random.py (transformer and VAE at the published configs, bf16
on disk; the text encoder at d_model 4096 with ONE layer and a 259-entry vocabulary). 1 frame at
64x64, 2 fit steps at batch 1, 1 sampling step (tests.wan_random.ROUNDTRIP). Prints one JSON object.

    python benchmarks/bench_wan_cpu.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run() -> dict:
    import datetime as _dt

    from tests.wan_random import ROUNDTRIP, _timed, cli_roundtrip

    run_info = {"date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="wan_random_") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        write = _timed([sys.executable, "-m", "tests.wan_random", str(tmp / "wan")], env, ROOT)
        if write["rc"] != 0:
            raise RuntimeError(write["stderr"][-500:])
        disk = sum(f.stat().st_size for f in (tmp / "wan").rglob("*") if f.is_file())
        t0 = time.perf_counter()
        res = cli_roundtrip(tmp / "wan", tmp / "work")
        total = time.perf_counter() - t0
        out = {"settings": dict(ROUNDTRIP, size=f"{ROUNDTRIP['size'][0]}x{ROUNDTRIP['size'][1]}"),
               "weights": "random; transformer + VAE at the published configs, text encoder 1 of 24 layers",
               "fixture": {"seconds": write["seconds"], "peak_rss_gb": write["peak_rss_gb"],
                           "disk_gb": round(disk / 1e9, 2)},
               "commands": {}, "roundtrip_seconds": round(total, 1),
               "run": dict(run_info, loadavg_after=[round(x, 2) for x in os.getloadavg()])}
        for name, r in res["runs"].items():
            row = {"seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"], "rc": r["rc"]}
            if r["rc"] == 0 and name != "info":
                rep = json.loads(r["stdout"].strip().splitlines()[-1])
                for key in ("total_bytes", "payload_bytes", "fit_seconds", "decode_seconds"):
                    if key in rep:
                        row[key] = rep[key]
            out["commands"][name] = row
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
