"""Input fidelity end to end (issue 9): the CLI on the anamorphic, HDR and raw-stream cases, file names with
colons for every command, output checks before sampling, PNG and lossless outputs, hostile codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_codec import codec as codec_mod
from lora_codec.cli import main
from lora_codec.video import read_video, write_video

from .conftest import ROOT

DATA = Path(__file__).resolve().parent / "data" / "inputs"
FAST = ["--model", "tiny", "--steps", "4", "--sample-steps", "2", "--checkpoint-every", "0"]


def one_segment(fps: float) -> list[str]:
    """Code only tiny's native 17 frames (the clip-length limit), so that the input cases stay one segment."""
    return ["--max-seconds", f"{17 / fps:.6f}"]


def cli(*args, cwd=ROOT, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lora_codec", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.mark.parametrize("name, fps, note", [
    ("sar4_3.mp4", 25, "sample aspect ratio 4:3"),
    ("hdr10_pq.mp4", 25, "HDR10"),
    ("raw_8fps.h264", 8, "raw video stream"),
])
def test_encode_decode_cases(name, fps, note, tmp_path):
    code, out = tmp_path / "c.vov", tmp_path / "out.mp4"
    r = cli("encode", DATA / name, "-o", code, *FAST, *one_segment(fps), "--json")
    assert r.returncode == 0, r.stderr
    enc = json.loads(r.stdout)
    assert (enc["frames"], enc["height"], enc["width"]) == (17, 64, 112)
    assert enc["fps"] == fps and (enc["src_width"], enc["src_height"]) == (320, 180)
    r = cli("encode", DATA / name, "-o", tmp_path / "c2.vov", *FAST, *one_segment(fps))
    assert note in r.stderr  # the note the user sees
    r = cli("decode", code, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    clip = read_video(out)
    assert clip.fps == fps and clip.frames.shape == (17, 64, 112, 3)


@pytest.mark.parametrize("name", ["sar4_3.mp4", "hdr10_pq.mp4", "raw_8fps.h264"])
def test_coded_frames_geometry_and_colour(name, tiny):
    """What the fit sees: the square is 32x32 at the coded 112x64, white is white-ish (HDR tone-mapped as ffmpeg
    does: white 154-157 in the reference), red stays red and blue stays blue."""
    session = codec_mod.EncodeSession.start(DATA / name, codec_mod.EncodeSettings(model="tiny", fit_steps=1),
                                            backbone=tiny)
    try:
        frame = session.frames[0]
        ys, xs = np.nonzero(frame.min(-1) > 120)
        assert abs(int(np.ptp(xs)) + 1 - 32) <= 1 and abs(int(np.ptp(ys)) + 1 - 32) <= 1
        white, red, blue = frame[32, 56].astype(int), frame[4, 6].astype(int), frame[60, 100].astype(int)
        lo = 140 if name.startswith("hdr") else 240
        assert white.min() >= lo and red[0] >= lo and blue[2] >= lo
        assert red[1] < 40 and red[2] < 40 and blue[0] < 40 and blue[1] < 40
    finally:
        session.close()


def test_colons_in_every_path(tmp_path):
    """'take:2.mp4' was read by ffmpeg as protocol 'take'; '-o out:1.mp4' failed only after sampling."""
    shutil.copy(DATA / "base.mp4", tmp_path / "take:2.mp4")
    for src in ("take:2.mp4", "./take:2.mp4"):
        r = cli("encode", src, "-o", "c:1.vov", *FAST, *one_segment(25), "--text", "t:1.txt", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "c:1.vov").is_file() and (tmp_path / "t:1.txt").is_file()
    r = cli("info", "c:1.vov", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for out in ("out:1.mp4", "./out:2.mkv"):
        r = cli("decode", "c:1.vov", "-o", out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert read_video(tmp_path / out).src_frames == 17
    r = cli("compare", "take:2.mp4", "c:1.vov", "--codecs", "x264", "--curve", "none", "--no-perceptual",
            "--plot", "rd:1.png", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rd:1.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "out").exists() and not (tmp_path / "take").exists()


def test_batch_takes_every_file_encode_reads(tmp_path):
    from lora_codec.batch import collect_clips

    src = tmp_path / "in"
    src.mkdir()
    for name in ("camcorder.m2ts", "raw_8fps.h264", "raw_12fps.hevc", "dvd.mpg"):
        shutil.copy(DATA / name, src / name)
    shutil.copy(DATA / "base.mp4", src / "take:2.mp4")
    shutil.copy(DATA / "base.mp4", src / "no_extension")
    (src / "notes.txt").write_text("holiday clips\n")
    (src / "code.vov").write_bytes((DATA / "code_symbols_all_minus_2pow31.vov").read_bytes())
    ids = sorted(c.id for c in collect_clips([src]))
    assert ids == ["camcorder", "dvd", "no_extension", "raw_12fps", "raw_8fps", "take_2"]
    assert [c.id for c in collect_clips([DATA / "camcorder.m2ts"])] == ["camcorder"]
    lst = tmp_path / "clips.list"  # a list file is text, whatever its name
    lst.write_text(f"{src / 'take:2.mp4'}\tcaption\n{src / 'raw_8fps.h264'}\n")
    assert sorted(c.id for c in collect_clips([lst])) == ["raw_8fps", "take_2"]
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(DATA / "raw_8fps.h264", one / "raw:8fps.h264")
    r = cli("batch", one, "-o", tmp_path / "out:b", *FAST[:6], *one_segment(8), "--no-metrics", "-q")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "out:b" / "codes").glob("*.vov"))) == 1


def _err(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


def test_output_checked_before_sampling(capsys, encoded, tmp_path, monkeypatch):
    code = tmp_path / "c.vov"
    code.write_bytes(encoded.data)

    def no_sampling(*a, **k):
        raise AssertionError("sampling started before the output was checked")

    monkeypatch.setattr(codec_mod, "decode", no_sampling)
    rc, err = _err(capsys, "decode", code, "-o", tmp_path / "out.avi")
    assert rc == 2 and "cannot write '.avi'" in err
    rc, err = _err(capsys, "decode", code, "-o", tmp_path / "still.png")  # a 17-frame code
    assert rc == 2 and "PNG holds one picture" in err
    (tmp_path / "dir.mp4").mkdir()
    rc, err = _err(capsys, "decode", code, "-o", tmp_path / "dir.mp4")
    assert rc == 2 and "is a folder" in err


def test_one_frame_code_decodes_to_png(tmp_path):
    still = tmp_path / "still.png"
    write_video(still, read_video(DATA / "base.mp4", max_frames=1).frames, Fraction(1))
    code = tmp_path / "still.vov"
    r = cli("encode", still, "-o", code, *FAST, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 1
    r = cli("decode", code, "-o", tmp_path / "out.png")
    assert r.returncode == 0, r.stderr
    img = Image.open(tmp_path / "out.png")
    assert img.format == "PNG" and img.size == (112, 64)


def test_lossless_output_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 33, 47, 3), dtype=np.uint8)
    write_video(tmp_path / "x.mkv", frames, Fraction(16))
    assert np.array_equal(read_video(tmp_path / "x.mkv").frames, frames)
    write_video(tmp_path / "x.png", frames[:1], Fraction(16))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), frames[0])


def test_hostile_code_refused_with_exit_2(capsys, tmp_path):
    """63 bytes, valid CRC, 2048 symbols of -2^31: decoded before to an all-NaN, all-black video with exit 0."""
    hostile = DATA / "code_symbols_all_minus_2pow31.vov"
    for argv in (("info", hostile), ("decode", hostile, "-o", tmp_path / "x.mp4")):
        rc, err = _err(capsys, *argv)
        assert rc == 2 and "bound" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()
