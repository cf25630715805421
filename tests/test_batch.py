"""`batch`: clip discovery, sharding, restart, and two real `accelerate launch` runs on the CPU (gloo):
clips sharded over 2 processes, and one clip fitted data-parallel by 2 processes.

`accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is configured (accelerate
>= 0.28); on a machine without CUDA, `--multi_gpu --num_processes 2` runs torchrun and lora_codec puts
both processes on the CPU with gloo. That is what these tests launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from lora_codec import bitstream
from lora_codec.batch import BatchError, BatchOptions, Dist, Layout, collect_clips, run_batch, shard
from lora_codec.codec import EncodeSettings

from .conftest import ROOT, synthetic_frames

ACCELERATE = Path(sys.executable).with_name("accelerate")
SMALL = dict(model="tiny", fit_steps=10, sample_steps=2)
SMALL_ARGS = ["--model", "tiny", "--steps", "10", "--sample-steps", "2"]


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory) -> Path:
    from lora_codec.video import write_video

    d = tmp_path_factory.mktemp("batch_clips")
    for i in range(3):
        write_video(d / f"clip{i}.mp4", synthetic_frames(9, 48, 64, seed=i), Fraction(16))
    return d


def one_process() -> Dist:
    return Dist(rank=0, world=1, device=None, state=None)


def test_collect_clips(tmp_path, clips_dir):
    (tmp_path / "a" / "x").mkdir(parents=True)
    video = (clips_dir / "clip0.mp4").read_bytes()  # clips are recognised by content, not by extension
    for p in ("a/one.mp4", "a/x/one.MOV", "b.mkv"):
        (tmp_path / p).write_bytes(video)
    (tmp_path / "a" / "notes.txt").write_text("not a clip")
    (tmp_path / "a" / "empty.mp4").write_bytes(b"")  # not a video, whatever its name says
    items = collect_clips([tmp_path / "a"])
    assert [c.id for c in items] == ["one", "x__one"]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# clips\n\nb.mkv\tcaption of b\n{tmp_path / 'a' / 'one.mp4'}\n{clips_dir / 'clip0.mp4'}\n")
    items = collect_clips([lst, tmp_path / "a"])
    ids = [c.id for c in items]
    assert len(ids) == len(set(ids)) == 4  # a/one.mp4 listed twice counts once
    assert {c.id: c.caption for c in items}["b"] == "caption of b"
    assert items == collect_clips([tmp_path / "a", lst])  # the order of the arguments does not matter
    # two files with the same stem get distinct ids
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "clip0.mp4").write_bytes(video)
    ids = [c.id for c in collect_clips([clips_dir, tmp_path / "c" / "clip0.mp4"])]
    assert len(ids) == len(set(ids)) == 4 and sum(i.startswith("clip0-") for i in ids) == 2
    with pytest.raises(BatchError, match="no such file"):
        collect_clips([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no video files"):
        collect_clips([tmp_path / "empty"])
    lst.write_text("missing.mp4\n")
    with pytest.raises(BatchError, match="line 1"):
        collect_clips([lst])


def test_shard_covers_every_item_once():
    items = list(range(11))
    for world in (1, 2, 3, 4, 16):
        parts = [shard(items, r, world) for r in range(world)]
        assert sorted(x for p in parts for x in p) == items


def test_restart_skips_done_and_refuses_other_settings(clips_dir, tmp_path, tiny):
    out = tmp_path / "out"
    opts = BatchOptions(quiet=True)
    s = run_batch([clips_dir], out, EncodeSettings(**SMALL), opts, dist=one_process(), backbone=tiny)
    assert s["done"] == 3 and s["errors"] == 0 and s["models"] == ["tiny"] and "no visual knowledge" in s["backbone_note"]
    results = json.loads((out / "results.json").read_text())
    assert [c["id"] for c in results["clips"]] == ["clip0", "clip1", "clip2"]
    for c in results["clips"]:
        assert c["bytes"] == (out / c["code"]).stat().st_size
        assert c["psnr_rgb"] is not None and c["fit_steps"] == 10 and c["fit_seconds"] > 0
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("id,status,clip,bytes") and len(csv_lines) == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "codes").iterdir()}
    # a restart re-encodes only what is missing
    (out / "codes" / "clip1.vov").unlink()
    s = run_batch([clips_dir], out, EncodeSettings(**SMALL), opts, dist=one_process(), backbone=tiny)
    assert s["done"] == 3
    assert {p.name: p.stat().st_mtime_ns for p in (out / "codes").iterdir() if p.name != "clip1.vov"} == \
        {k: v for k, v in stamps.items() if k != "clip1.vov"}
    events = [json.loads(x) for x in (out / "logs" / "rank-0-of-1.jsonl").read_text().splitlines()]
    assert [e["id"] for e in events if e["event"] == "done"] == ["clip0", "clip1", "clip2", "clip1"]
    with pytest.raises(BatchError, match="other settings .*fit_steps"):
        run_batch([clips_dir], out, EncodeSettings(**{**SMALL, "fit_steps": 11}), opts, dist=one_process(), backbone=tiny)


def test_failed_clip_is_recorded_and_retried(clips_dir, tmp_path, tiny):
    from .test_cli import run_cli

    src = tmp_path / "in"
    src.mkdir()
    good = (clips_dir / "clip0.mp4").read_bytes()
    mdat = good.index(b"mdat") + 4
    (src / "broken.mp4").write_bytes(good[:mdat] + bytes(len(good) - mdat))  # an mp4 whose frames are zeroed
    (src / "notes.mp4").write_bytes(b"not a video")  # text: not a clip, whatever its name says
    (src / "good.mp4").write_bytes(good)
    out = tmp_path / "out"
    s = run_batch([src], out, EncodeSettings(**SMALL), BatchOptions(quiet=True, metrics=False), dist=one_process(),
                  backbone=tiny)
    assert (s["clips"], s["done"], s["errors"]) == (2, 1, 1)  # one bad clip does not stop the others
    r = json.loads((out / "results" / "broken.json").read_text())
    assert r["status"] == "error" and "no video frame" in r["error"]
    assert not (out / "codes" / "broken.vov").exists()
    # the CLI: the good clip is skipped, the broken one retried, and the run exits 2 with one line
    r = run_cli("batch", src, "-o", out, *SMALL_ARGS, "--no-metrics", "-q")
    assert r.returncode == 2 and "1 of 2 clips failed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    events = [json.loads(x) for x in (out / "logs" / "rank-0-of-1.jsonl").read_text().splitlines()]
    assert [(e["event"], e["id"]) for e in events] == [("start", "broken"), ("error", "broken"), ("start", "good"),
                                                       ("done", "good"), ("start", "broken"), ("error", "broken")]


def test_resume_a_fit_from_its_saved_state(clips_dir, tmp_path, tiny):
    """--save-every: a batch stopped inside a clip's fit resumes it, to the very same code."""
    from lora_codec.codec import EncodeSession

    ref = tmp_path / "ref"
    run_batch([clips_dir / "clip0.mp4"], ref, EncodeSettings(**SMALL), BatchOptions(quiet=True, metrics=False),
              dist=one_process(), backbone=tiny)
    out = tmp_path / "out"
    state = Layout(out).state("clip0")
    state.parent.mkdir(parents=True)
    with EncodeSession.start(clips_dir / "clip0.mp4", EncodeSettings(**SMALL), backbone=tiny) as session:
        session.fit(max_steps=4)
        session.save_state(state)
    s = run_batch([clips_dir / "clip0.mp4"], out, EncodeSettings(**SMALL),
                  BatchOptions(quiet=True, metrics=False, save_every=3), dist=one_process(), backbone=tiny)
    assert s["done"] == 1 and not state.exists()
    assert json.loads((out / "results" / "clip0.json").read_text())["resumed_from_step"] == 4
    assert (out / "codes" / "clip0.vov").read_bytes() == (ref / "codes" / "clip0.vov").read_bytes()


def test_cli_user_errors(tmp_path):
    from .test_cli import run_cli

    r = run_cli("batch", tmp_path / "nothing", "-o", tmp_path / "out", "--model", "tiny")
    assert r.returncode == 2 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- two processes under accelerate ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(*args, timeout=120):
    if not ACCELERATE.exists():
        pytest.skip("the accelerate command is not installed next to this Python")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "lora_codec", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _events(out: Path, rank: int, world: int = 2) -> list[dict]:
    return [json.loads(x) for x in (out / "logs" / f"rank-{rank}-of-{world}.jsonl").read_text().splitlines()]


def test_accelerate_two_processes_shard_the_clips(clips_dir, tmp_path):
    out = tmp_path / "out"
    r = accelerate_launch("batch", clips_dir, "-o", out, *SMALL_ARGS, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # printed by rank 0 only
    assert summary["clips"] == summary["done"] == 3
    done = {rank: [e["id"] for e in _events(out, rank) if e["event"] == "done"] for rank in (0, 1)}
    assert done == {0: ["clip0", "clip2"], 1: ["clip1"]}  # every clip exactly once, i % 2 == rank
    results = json.loads((out / "results.json").read_text())
    assert results["processes"] == 2 and not results["data_parallel"]
    assert {c["id"]: c["rank"] for c in results["clips"]} == {"clip0": 0, "clip1": 1, "clip2": 0}
    for c in results["clips"]:
        code = bitstream.read_code((out / "codes" / f"{c['id']}.vov").read_bytes())
        assert code.model == "tiny" and (code.frames, code.height, code.width) == (9, 64, 112)


def test_accelerate_data_parallel_fit_of_one_clip(clips_dir, tmp_path, tiny):
    from lora_codec.codec import decode

    from lora_codec.codec import EncodeSession

    out = tmp_path / "out"
    # an interrupted data-parallel fit left one state per rank at step 4: the run resumes from them
    with EncodeSession.start(clips_dir / "clip0.mp4", EncodeSettings(**SMALL), backbone=tiny) as session:
        session.fit(max_steps=4)
        for rank in (0, 1):
            path = Layout(out).state("clip0", rank, 2)
            path.parent.mkdir(parents=True, exist_ok=True)
            session.save_state(path)
    r = accelerate_launch("batch", clips_dir / "clip0.mp4", "-o", out, *SMALL_ARGS, "--data-parallel", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results" / "clip0.json").read_text())
    assert res["status"] == "done" and res["fit_processes"] == 2 and res["ranks_agree"] is True
    assert res["resumed_from_step"] == 4 and res["fit_steps"] == 10 and not list((out / "states").iterdir())
    assert res["effective_batch"] == 2 * tiny.defaults.batch
    for rank in (0, 1):  # both ranks fitted the clip
        assert [e["id"] for e in _events(out, rank) if e["event"] == "done"] == ["clip0"]
    data = (out / "codes" / "clip0.vov").read_bytes()
    assert res["bytes"] == len(data)
    dec = decode(data, backbone=tiny)  # a valid code
    assert dec.frames.shape == (9, 64, 112, 3)


def test_cli_summary_gives_sizes_in_kb(clips_dir, tmp_path, capsys):
    from lora_codec.cli import main

    assert main(["batch", str(clips_dir), "-o", str(tmp_path / "out"), "--model", "tiny", "--steps", "2",
                 "--sample-steps", "2", "--no-metrics"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "clips done" in x)
    assert line.startswith("3/3 clips done, mean ") and " kB)" in line, line
