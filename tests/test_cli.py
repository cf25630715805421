"""The command line, end to end on a small clip, and its user errors (exit 2, one line, no traceback)."""

import json
import os
import subprocess
import sys

import pytest

from lora_codec import bitstream
from lora_codec.cli import main

from .conftest import ROOT


def run_cli(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lora_codec", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_cli_encode_info_decode(clip_path, tmp_path):
    code = tmp_path / "clip.vov"
    r = run_cli("encode", clip_path, "-o", code, "--model", "tiny", "--steps", "20", "--sample-steps", "3", "--json",
                "--caption", "stripes", "--text", tmp_path / "clip.txt")
    assert r.returncode == 0, r.stderr
    enc = json.loads(r.stdout)
    for key in ("total_bytes", "header_bytes", "caption_bytes", "prior_bytes", "payload_bytes", "ideal_payload_bits",
                "model", "frames", "height", "width", "fps", "theta_length", "rank", "fit_seconds", "steps"):
        assert key in enc, key
    assert enc["total_bytes"] == code.stat().st_size
    assert enc["steps"] == 20
    r = run_cli("info", code, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["total_bytes"] == enc["total_bytes"] and info["model"] == "tiny"
    out = tmp_path / "out.mp4"
    r = run_cli("decode", tmp_path / "clip.txt", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    dec = json.loads(r.stdout)
    assert out.stat().st_size > 0 and dec["decode_steps"] == 3


def _err(capsys, *argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err.strip()


def test_missing_file(capsys, tmp_path):
    rc, err = _err(capsys, "encode", tmp_path / "nope.mp4", "-o", tmp_path / "x.vov", "--model", "tiny")
    assert rc == 2 and err.startswith("error:") and "Traceback" not in err and "no such file" in err
    rc, err = _err(capsys, "decode", tmp_path / "nope.vov", "-o", tmp_path / "x.mp4")
    assert rc == 2 and "no such file" in err


def test_not_a_video(capsys, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    rc, err = _err(capsys, "encode", fake, "-o", tmp_path / "x.vov", "--model", "tiny")
    assert rc == 2 and err.startswith("error:") and len(err.splitlines()) == 1


def test_corrupt_truncated_and_wrong_version_codes(capsys, encoded, tmp_path):
    data = encoded.data
    cases = {
        "corrupt": data[:20] + bytes([data[20] ^ 0x40]) + data[21:],
        "truncated": data[: len(data) // 2],
        "version": data[:3] + bytes([99]) + data[4:],
        "garbage": b"hello world, not a code",
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.vov"
        p.write_bytes(blob)
        for cmd in (("info", p), ("decode", p, "-o", tmp_path / "o.mp4")):
            rc, err = _err(capsys, *cmd)
            assert rc == 2 and err.startswith("error:") and len(err.splitlines()) == 1, (name, err)
    rc, err = _err(capsys, "info", tmp_path / "version.vov")
    assert "version" in err


def test_other_backbone_and_missing_weights(capsys, encoded, tmp_path):
    code = bitstream.read_code(encoded.data)
    code.model = "wan2.1-t2v-1.3b"
    p = tmp_path / "wan.vov"
    p.write_bytes(bitstream.write_code(code))
    rc, err = _err(capsys, "decode", p, "-o", tmp_path / "o.mp4")
    assert rc == 2 and "--model tiny" in err
    rc, err = _err(capsys, "encode", tmp_path / "none.mp4", "-o", tmp_path / "x.vov", "--model", "nosuch")
    assert rc == 2


def test_info_prints_a_summary_for_a_person(encoded, tmp_path, capsys):
    """`info` without --json: rounded numbers with units (kB = 1000 bytes, kbit/s), no raw keys, no None."""
    p = tmp_path / "c.vov"
    p.write_bytes(encoded.data)
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    n = len(encoded.data)
    assert f"{n:,} bytes ({n / 1000:.2f} kB)" in out and "kbit/s" in out and "bits per pixel" in out
    assert "17 frames of 112x64 at 16 fps" in out and "refinement track: none" in out
    assert "None" not in out and "_bytes" not in out and "total_bytes" not in out
    assert main(["info", str(p), "--json"]) == 0  # unchanged: every field, machine-readable
    assert json.loads(capsys.readouterr().out)["total_bytes"] == n
