"""The command line as a newcomer meets it (issue 10, item 14): Ctrl-C keeps a valid code and a resumable state,
one unit convention, help for every option, each warning once, `-q` quiet, the caption note, the smallest
possible code refused before fitting, and the real backbone refusing within seconds where it cannot run."""

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from lora_codec import bitstream, cli, codec, units
from lora_codec.backbones import Geometry

from .conftest import ROOT


def _cmd(*args):
    return [sys.executable, "-m", "lora_codec", *map(str, args)]


def _env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    env.pop("LORA_CODEC_WAN_PATH", None)
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


# -- Ctrl-C ----------------------------------------------------------------------------------------

STEPS = 200  # long enough that the signal lands mid-fit (test_interrupt.py: a tiny step takes ~20 ms)
ARGS = ["--model", "tiny", "--steps", str(STEPS), "--sample-steps", "3", "--seed", "4", "--json"]


def test_ctrl_c_mid_fit_writes_a_code_that_decodes_and_a_state_that_resumes(clip_path, tmp_path):
    out = tmp_path / "c.vov"
    state = tmp_path / "c.vov.state"
    proc = subprocess.Popen(_cmd("encode", clip_path, "-o", out, *ARGS, "--checkpoint-every", "5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the encode finished before the signal"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    report = json.loads(stdout)
    assert report["stopped"] is True and 0 < report["steps"] < STEPS and report["total_steps"] == STEPS
    assert report["output"] == str(out) and report["state"] == str(state)
    assert "Ctrl-C" in stderr and "--resume" in stderr  # where both are and how to continue
    assert out.stat().st_size == report["total_bytes"] and state.exists()

    r = subprocess.run(_cmd("decode", out, "-o", tmp_path / "c.mp4", "-q"), capture_output=True, text=True,
                       env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(tmp_path / "c.mp4") and (tmp_path / "c.mp4").stat().st_size > 0

    r = subprocess.run(_cmd("encode", clip_path, "-o", out, *ARGS, "--resume", state), capture_output=True,
                       text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    done = json.loads(r.stdout)
    assert done["steps"] == STEPS and "stopped" not in done
    assert not state.exists()  # the finished code replaces the checkpoint


def test_a_second_signal_aborts():
    stop = cli.StopOnSignal()
    before = signal.getsignal(signal.SIGINT)
    with stop:
        assert signal.getsignal(signal.SIGINT) == stop.handle and not stop()
        stop.handle(signal.SIGINT)
        assert stop() and stop.signal_name == "Ctrl-C"
        with pytest.raises(KeyboardInterrupt):
            stop.handle(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == before


# -- units -----------------------------------------------------------------------------------------


def test_one_unit_convention():
    assert units.format_kb(618) == "0.62 kB" and units.kilobytes(1000) == 1.0
    assert units.format_bytes_kb(1234) == "1,234 bytes (1.23 kB)"
    assert units.kbit_per_second(1000, 1.0) == 8.0 and units.format_rate(618, 17 / 16) == "4.65 kbit/s"
    assert units.format_file_size(512 << 20) == "536.9 MB" and units.format_file_size(999) == "999 bytes"
    assert units.ceil_kb(310) == 0.31 and units.ceil_kb(311) == 0.32
    with pytest.raises(ValueError):
        units.kbit_per_second(10, 0)


def test_info_encode_and_compare_use_it(encoded, tmp_path, capsys):
    from lora_codec.app_support import BYTE_HEADERS, byte_table
    from lora_codec.evaluation import format_table

    p = tmp_path / "c.vov"
    p.write_bytes(encoded.data)
    assert cli.main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    info = codec.describe(encoded.data)
    assert units.format_rate(info["total_bytes"], info["seconds"]) in out
    assert "kB/s" not in out and "KiB" not in out
    rows, _ = byte_table(info)
    assert BYTE_HEADERS[3] == "kbit/s" and rows[-1][3] == pytest.approx(
        units.kbit_per_second(info["total_bytes"], info["seconds"]), abs=1e-4)
    row = dict(kind="code", codec="lora", name="c.vov", budget=None, bytes=618, kbps=4.65, bpp=0.04, crf=None,
               fits=None, psnr_rgb=None, psnr_y=None, ms_ssim=None)
    table = format_table({"rows": [row], "clip": "x", "geometry": dict(width=16, height=16, frames=1, fps=1.0,
                                                                          seconds=1.0)})
    assert "kbit/s" in table.splitlines()[0] and "kbps" not in table


# -- help ------------------------------------------------------------------------------------------


def test_every_option_of_every_command_has_help():
    parser = cli.build_parser()
    missing = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                for name, sub in action.choices.items():
                    if name not in helped:
                        missing.append(f"{path} {name} (the command)")
                    walk(sub, f"{path} {name}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(parser, "lora_codec")
    commands = set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
    assert {"encode", "decode", "info", "compare", "batch"} <= commands
    assert not missing, "options without help text: " + ", ".join(missing)


# -- warnings once, -q, the caption note -------------------------------------------------------------


def test_each_warning_once_and_quiet_silences_them(capsys, monkeypatch):
    from lora_codec import backbones

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        cli.setup_output(quiet=False)
        for _ in range(3):
            backbones.resolve_name("auto")  # batch resolves, then loads: the same notice twice
            warnings.warn("a library deprecation", FutureWarning)
            warnings.warn("a library deprecation", FutureWarning)  # another line: Python's filter shows it again
        logging.getLogger("diffusers.models").warning("a library's developer note")
        err = capsys.readouterr().err
        assert err.count("no CUDA device: using the offline 'small' backbone") == 1, err
        assert err.count("FutureWarning: a library deprecation") == 1, err
        assert "developer note" not in err and "Traceback" not in err

        cli.setup_output(quiet=True)
        backbones.resolve_name("auto")
        warnings.warn("another library deprecation", FutureWarning)
        logging.getLogger("lora_codec.cli").warning("a note")
        assert capsys.readouterr().err == ""
    cli.setup_output(quiet=False)


def test_quiet_encode_prints_only_the_output_path(clip_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # restored afterwards (-q sets it)
    out = tmp_path / "q.vov"
    rc = cli.main(["encode", str(clip_path), "-o", str(out), "--model", "tiny", "--steps", "2", "--sample-steps", "2",
                   "-q"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out == f"{out}\n" and captured.err == ""
    assert out.stat().st_size > 0
    dec = tmp_path / "q.mp4"
    rc = cli.main(["decode", str(out), "-o", str(dec), "-q"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out == f"{dec}\n" and captured.err == ""
    cli.setup_output(quiet=False)  # this process's later tests log at the normal level again


def test_encoding_without_a_caption_says_once_that_a_caption_helps(clip_path, tmp_path, capsys):
    base = ["encode", str(clip_path), "--model", "tiny", "--steps", "2", "--sample-steps", "2"]
    assert cli.main(base + ["-o", str(tmp_path / "a.vov")]) == 0
    err = capsys.readouterr().err
    assert err.count("no caption") == 1 and "helps the fit" in err
    assert cli.main(base + ["-o", str(tmp_path / "b.vov"), "--caption", "moving stripes"]) == 0
    assert "no caption" not in capsys.readouterr().err


# -- the smallest code ------------------------------------------------------------------------------


def _geometry_of(code: bitstream.Code):
    return dict(geometry=Geometry(code.frames, code.height, code.width), fps=Fraction(code.fps_num, code.fps_den),
                src=(code.src_width, code.src_height, code.src_frames))


def test_minimum_code_bytes_is_the_all_equal_code_and_a_lower_bound(tiny, encoded):
    code = encoded.code
    settings = codec.EncodeSettings(model="tiny", seed=code.noise_seed, sample_steps=code.steps)
    exact = codec.minimum_code_bytes(tiny, code.caption, settings, **_geometry_of(code))
    # every symbol equal (any value whose varint is one byte, any step): exactly the minimum
    for value in (0, 5, -3):
        flat = bitstream.Code(**{**{f: getattr(code, f) for f in code.__dataclass_fields__},
                                 "symbols": np.full(code.theta_length, value, np.int32), "step_size": 0.5})
        assert len(bitstream.write_code(flat)) == exact
    # any other symbol vector costs more; the real code too
    rng = np.random.default_rng(0)
    for spread in (1, 2, 8):
        sym = rng.integers(-spread, spread + 1, code.theta_length).astype(np.int32)
        other = bitstream.Code(**{**{f: getattr(code, f) for f in code.__dataclass_fields__}, "symbols": sym})
        assert len(bitstream.write_code(other)) > exact
    assert len(encoded.data) > exact
    # without the clip's facts: a lower bound, a few bytes below
    bound = codec.minimum_code_bytes(tiny, code.caption, settings)
    assert exact - 8 <= bound <= exact
    # a longer caption and a refinement track raise it by their exact sizes
    longer = codec.minimum_code_bytes(tiny, code.caption + " with a much longer caption than before", settings,
                                      **_geometry_of(code))
    assert longer > exact
    with_track = codec.minimum_code_bytes(tiny, code.caption, codec.EncodeSettings(
        model="tiny", seed=code.noise_seed, sample_steps=code.steps, refine_n=16), **_geometry_of(code))
    plan = codec.refine_plan(codec.EncodeSettings(refine_n=16), code.steps)
    assert with_track == exact + plan.section_bytes()


def test_no_real_code_is_smaller_than_the_minimum(tiny, clip_path):
    settings = codec.EncodeSettings(model="tiny", caption="stripes", rate_lambda=1e6, fit_steps=8, sample_steps=3)
    with codec.EncodeSession.start(clip_path, settings, backbone=tiny) as session:
        least = codec.minimum_code_bytes(tiny, settings.caption, settings, geometry=session.geometry,
                                         fps=session.fps, src=session.src)
        session.fit()
        assert len(session.code_bytes()) >= least
        assert len(session.code_bytes(step=1e3)) == least  # the coarsest step rate control tries: all symbols 0
        result = session.finish()
    assert len(result.data) >= least


def test_a_target_below_the_smallest_code_is_refused_before_fitting(clip_path, tmp_path, capsys):
    out = tmp_path / "t.vov"
    t0 = time.perf_counter()
    rc = cli.main(["encode", str(clip_path), "-o", str(out), "--model", "tiny", "--target-kb", "0.02",
                   "--caption", "stripes"])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the smallest code for this clip and caption is ") and " kB (" in line
    assert "--target-kb 0.02 is below it" in line and "Traceback" not in err
    assert "fitting" not in err and not out.exists() and not (tmp_path / "t.vov.state").exists()
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("option, value, said", [
    ("--target-kb", "nan", "--target-kb must be a size in kB, got nan"),
    ("--target-kb", "inf", "--target-kb must be a size in kB, got inf"),
    ("--lambda", "nan", "--lambda must be a number >= 0, got nan"),
    ("--lambda", "inf", "--lambda must be a number >= 0, got inf"),
    ("--max-seconds", "-1", "--max-seconds must be a positive number of seconds (0: no limit), got -1"),
    ("--batch", "0", "--batch must be at least 1 (fit samples per step), got 0"),
])
def test_numbers_no_fit_can_use_are_refused_in_one_line_before_fitting(clip_path, tmp_path, capsys, option, value,
                                                                       said):
    # NaN / infinity once gave a traceback (--target-kb) or a whole fit and then a puzzling error (--lambda);
    # a negative --max-seconds was taken silently as "no limit"
    out = tmp_path / "n.vov"
    rc = cli.main(["encode", str(clip_path), "-o", str(out), "--model", "tiny", "--steps", "2", option, value])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.strip().splitlines()[-1] == f"error: {said}"
    assert "Traceback" not in err and "fitting" not in err and not out.exists()


# -- the real backbone where it cannot run -----------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("offline", ["1", None])
def test_wan_without_cuda_fails_within_seconds_saying_what_is_needed(clip_path, tmp_path, offline):
    t0 = time.perf_counter()
    r = subprocess.run(_cmd("encode", clip_path, "-o", tmp_path / "w.vov", "--model", "wan2.1-t2v-1.3b"),
                       capture_output=True, text=True, env=_env(HF_HUB_OFFLINE=offline), timeout=120)
    seconds = time.perf_counter() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    assert seconds < 10, f"took {seconds:.1f} s"
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error:") and "CUDA GPU" in err and "LORA_CODEC_WAN_PATH" in err and "hub" in err
    assert "Retrying" not in r.stderr and "Traceback" not in r.stderr


WAN_SOURCE = """
import json, sys, time, torch
torch.cuda.is_available = lambda: True  # decide as on a CUDA machine
from lora_codec.backbones import wan_source
t0 = time.perf_counter()
try:
    out = {"source": wan_source()}
except Exception as exc:
    out = {"error": type(exc).__name__, "message": str(exc)}
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def _wan_source(tmp_path, **env) -> dict:
    r = subprocess.run([sys.executable, "-c", WAN_SOURCE], capture_output=True, text=True, timeout=120,
                       env=_env(HF_HOME=str(tmp_path / "hf"), **env), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_wan_with_cuda_uses_the_cache_or_fails_fast(tmp_path):
    from lora_codec.backbones import wan_reference_config

    # not downloaded, offline: refused at once
    out = _wan_source(tmp_path, HF_HUB_OFFLINE="1")
    assert out.get("error") == "BackboneError" and "HF_HUB_OFFLINE" in out["message"] and out["seconds"] < 5
    # not downloaded, online: one request decides (this machine has no network: refused, no retries)
    out = _wan_source(tmp_path, HF_HUB_OFFLINE=None)
    assert out["seconds"] < 15
    if "error" in out:
        assert "cannot be reached" in out["message"]
    # downloaded: the cache's snapshot folder, with no network use at all
    repo = tmp_path / "hf" / "hub" / ("models--" + wan_reference_config()["hub_id"].replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    out = _wan_source(tmp_path, HF_HUB_OFFLINE="1")  # an interrupted download: not usable offline
    assert out.get("error") == "BackboneError" and "completely" in out["message"], out
    for part in ("tokenizer", "text_encoder", "vae", "transformer"):
        (snap / part).mkdir()
    out = _wan_source(tmp_path, HF_HUB_OFFLINE="1")
    assert out.get("source") == str(snap), out
    # a local folder named by LORA_CODEC_WAN_PATH wins; a path that is not a folder is an error
    out = _wan_source(tmp_path, HF_HUB_OFFLINE="1", LORA_CODEC_WAN_PATH=str(snap))
    assert out.get("source") == str(snap)
    out = _wan_source(tmp_path, HF_HUB_OFFLINE="1", LORA_CODEC_WAN_PATH=str(tmp_path / "nowhere"))
    assert out.get("error") == "BackboneError" and "is not a folder" in out["message"]
