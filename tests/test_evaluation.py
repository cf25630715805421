"""`compare`: the clip at the coded geometry, codes against classic codecs at matched sizes, table / JSON / plot.

(Known metric values are in test_metrics.py; the CRF search's contract in test_baselines.py.)
The tiny backbone has no visual knowledge: the code's quality numbers here are plumbing, not results."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from lora_codec import evaluation
from lora_codec.evaluation import EvaluationError, coded_reference, compare, format_table, plot_rd

from .conftest import synthetic_frames
from .test_cli import run_cli


@pytest.fixture(scope="module")
def code_file(encoded, tmp_path_factory):
    path = tmp_path_factory.mktemp("codes") / "clip.vov"
    path.write_bytes(encoded.data)
    return path


def test_reference_is_what_the_encoder_coded(clip_path, encoded, tiny):
    ref = coded_reference(clip_path, encoded.code, tiny)
    assert np.array_equal(ref.frames, encoded.frames)
    assert ref.fps == Fraction(encoded.code.fps_num, encoded.code.fps_den)


def test_reference_refuses_another_clip(encoded, tiny, tmp_path):
    from lora_codec.video import write_video

    other = tmp_path / "portrait.mp4"
    write_video(other, synthetic_frames(17, 128, 72), Fraction(16))
    with pytest.raises(EvaluationError, match="cannot be the source"):
        coded_reference(other, encoded.code, tiny)
    other = tmp_path / "bigger.mp4"
    write_video(other, synthetic_frames(17, 96, 160), Fraction(16))
    with pytest.raises(EvaluationError, match="source"):
        coded_reference(other, encoded.code, tiny)


def test_compare_json_cli(clip_path, code_file, tmp_path):
    """`compare --json` on a tiny code: one row for the code, one per codec and budget, strict JSON."""
    plot = tmp_path / "rd.png"
    r = run_cli("compare", clip_path, code_file, "--codecs", "x264,av1", "--curve", "8", "--json", "--plot", plot)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # strict JSON: inf / nan would not parse in other languages
    size = code_file.stat().st_size
    rows = out["rows"]
    code_rows = [x for x in rows if x["kind"] == "code"]
    assert len(code_rows) == 1 and code_rows[0]["bytes"] == size and code_rows[0]["name"] == "clip.vov"
    g = out["geometry"]
    assert (g["frames"], g["height"], g["width"]) == (17, 64, 112)
    assert code_rows[0]["kbps"] == pytest.approx(size * 8 / 1000 / g["seconds"])
    base = [x for x in rows if x["kind"] == "baseline"]
    assert sorted((x["codec"], x["budget"]) for x in base) == sorted(
        (c, b) for c in ("x264", "av1") for b in (size, 8 * size))
    for x in base:
        assert x["fits"] == (x["bytes"] <= x["budget"])
        assert x["crf"] is not None and 0 < x["payload_bytes"] < x["bytes"]
        for key in ("psnr_rgb", "psnr_y", "ms_ssim"):
            assert isinstance(x[key], float) and math.isfinite(x[key])
        assert x["at_code_size"] == (x["budget"] == size)
    # at 8x the code's size (a few kB) the classic codecs fit; a bigger budget never codes worse
    for c in ("x264", "av1"):
        small, big = sorted((x for x in base if x["codec"] == c), key=lambda x: x["budget"])
        assert big["fits"] and big["crf"] <= small["crf"]
    assert out["perceptual_unavailable"]  # no LPIPS / DISTS weights here: said so, not faked
    assert all(x["lpips"] is None and x["dists"] is None for x in rows)
    assert any("tiny" in n and "no visual knowledge" in n for n in out["notes"])
    assert any("start time" in n for n in out["notes"])
    assert out["plot"] == str(plot) and plot.stat().st_size > 10_000
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_table_in_process(clip_path, encoded, tiny):
    res = compare(clip_path, [encoded.data], codecs=["x264"], curve="none", backbone=tiny, perceptual=False)
    assert [x["kind"] for x in res["rows"]] == ["code", "baseline"]
    text = format_table(res)
    head = text.splitlines()[0].split()
    assert head[:3] == ["codec", "budget", "bytes"] and "MS-SSIM" in head and "LPIPS" not in head
    assert "no visual knowledge" in text


def test_compare_user_errors(clip_path, code_file, tmp_path):
    for args, msg in (
        (("--codecs", "mpeg2"), "unknown codec"),
        (("--curve", "x"), "--curve"),
        (("--curve", "0"), "--curve"),
        (("--plot", tmp_path / "rd.bmp"), "--plot"),
    ):
        r = run_cli("compare", clip_path, code_file, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_cli("compare", tmp_path / "missing.mp4", code_file)
    assert r.returncode == 2 and "no such file" in r.stderr
    bad = tmp_path / "bad.vov"
    bad.write_bytes(b"not a code")
    r = run_cli("compare", clip_path, bad)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_parse_helpers():
    assert evaluation.parse_codecs("x264, libx265 ,x264") == ["x264", "x265"]
    assert evaluation.parse_curve("2,0.5,2") == [0.5, 2.0]
    assert evaluation.parse_curve("none") == []
    assert evaluation.dumps({"a": float("inf"), "b": [float("nan")]}) == '{"a": null, "b": [null]}'


def test_plot_rd(tmp_path):
    rows = [
        {"kind": "code", "codec": "lora", "kbps": 5.0, "psnr_rgb": 20.0, "ms_ssim": 0.8},
        {"kind": "baseline", "codec": "x264", "kbps": 4.0, "psnr_rgb": 19.0, "ms_ssim": 0.7},
        {"kind": "baseline", "codec": "x264", "kbps": 8.0, "psnr_rgb": float("inf"), "ms_ssim": 1.0},
    ]
    result = {"rows": rows, "codecs": ["x264"], "model": "tiny", "clip": "c.mp4",
              "geometry": {"frames": 9, "height": 64, "width": 112}}
    plot_rd(result, tmp_path / "a.svg")
    assert (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(EvaluationError):
        plot_rd(result, tmp_path / "a.jpg")


def test_benchmark_runner_writes_json_and_markdown(tmp_path):
    """benchmarks/run.py: one JSON with the machine and backbone, markdown rendered from it alone."""
    import subprocess
    import sys

    from .conftest import ROOT

    out, md = tmp_path / "latest.json", tmp_path / "RESULTS.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "entropy", "--out",
                        str(out), "--results-md", str(md), "--note", "a test run"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert list(result["benchmarks"]) == ["entropy"] and result["quick"] is True
    assert result["machine"]["cores"] and result["backbone"] in ("tiny", "small", "wan2.1-t2v-1.3b")
    text = md.read_text()
    assert "## entropy" in text and "a test run" in text and result["date_utc"] in text
    assert str(result["benchmarks"]["entropy"]["theta"][0]["payload_bits"]) in text
