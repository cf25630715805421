"""scripts/gpu_check.py on the CPU at its reduced size (`--device cpu --dry-run`): every measurement
runs and the JSON has the fields `benchmarks/run.py --gpu-check` renders and the app's cost model reads.
(No GPU numbers come from here: the app ignores a CPU run.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_codec import app_support as S

from .conftest import ROOT


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--dry-run", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    return out, json.loads(out.read_text())


def test_dry_run_measures_every_part(dry_run):
    _path, res = dry_run
    assert res["dry_run"] and res["device_type"] == "cpu" and not res["errors"]
    assert res["structural_test"]["passed"]
    assert [(f["geometry"], f["batch"]) for f in res["fit"]] == [([5, 64, 64], 1), ([5, 64, 64], 2)]
    assert all(f["seconds_per_sample"] > 0 for f in res["fit"])
    assert res["decode"]["seconds_per_step"] > 0 and res["decode"]["vae_decode_s"] > 0
    assert res["refine"]["candidates_per_second"] > 0 and res["refine"]["chosen_equal_cpu"] is True


def test_results_feed_the_app_and_the_results_page(dry_run, tmp_path, monkeypatch):
    path, res = dry_run
    assert S.load_gpu_results(path) is None  # a CPU dry run is never taken for GPU numbers
    as_gpu = dict(res, device_type="cuda", device_name="test GPU", sm_count=132)
    gpu_file = tmp_path / "gpu.json"
    gpu_file.write_text(json.dumps(as_gpu))
    loaded = S.load_gpu_results(gpu_file)
    m = S.wan_costs(1000, 1000, results_path=gpu_file)
    assert m.source == "measured" and "gpu_check" in m.note
    assert m.fit_sample_s == pytest.approx(loaded["fit"][0]["seconds_per_sample"])
    assert m.ref_tokens == S.wan_tokens(5, 64, 64)
    assert S.wan_costs(1000, 1000, results_path=tmp_path / "missing.json").source == "estimate"

    # benchmarks/run.py folds it into the results page
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run as bench_run

    monkeypatch.setattr(bench_run, "GPU_CHECK", gpu_file)
    md = "\n".join(bench_run.gpu_markdown(as_gpu))
    assert "test GPU" in md and "seconds_per_sample" in md and "structural test: passed" in md
    assert "No GPU numbers have been measured yet" in "\n".join(bench_run.gpu_markdown(None))
