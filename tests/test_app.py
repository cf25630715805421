"""The web app (app.py) on 127.0.0.1 with the tiny backbone, driven through gradio_client.

The app runs in this process (`app.serve()`), so the tiny backbone is shared with the other tests.
Fits are split into 2-second slices here, so a 24-step fit runs as several "GPU calls" that carry
the resumable fit state through the session, as on ZeroGPU."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest

from .conftest import EXAMPLE, ROOT

gradio_client = pytest.importorskip("gradio_client")
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
pytest.importorskip("gradio")

BALANCED = "balanced"
TARGET = "target"
FIT_STEPS = 24
SAMPLE_STEPS = 4


def _encode_args(**kw):
    """/encode's parameters in order (its stable API)."""
    args = dict(video=None, caption="a grey rabbit leaves its burrow", start_seconds=0.0, rate_mode=BALANCED,
                target_kb=1.0, fit_steps=FIT_STEPS, refine_log2=0, seed=0, sample_steps=SAMPLE_STEPS, frames=17,
                batch=2, refine_steps=0, size="112x64")
    args.update(kw)
    return args


@pytest.fixture(scope="session")
def app_module(tmp_path_factory):
    import app
    from lora_codec import app_support

    app_support.APP_TMP = tmp_path_factory.mktemp("app_jobs")  # job folders of this run

    # small GPU-call slices: several calls per fit, as a long fit runs on ZeroGPU
    app.LIMITS = app_support.LIMITS = dataclasses.replace(app_support.LIMITS, slice_s=2.0)
    assert app.COSTS.ready.wait(180), "the start-up calibration did not finish"
    yield app
    try:
        app.demo.close()
    except Exception:
        pass


@pytest.fixture(scope="session")
def app_url(app_module):
    return app_module.serve()


@pytest.fixture(scope="session")
def client(app_url):
    return gradio_client.Client(app_url, verbose=False)


@pytest.fixture(scope="session")
def app_encoded(client):
    """One compress through the API (tiny budget), shared by the tests below."""
    from gradio_client import handle_file

    out = client.predict(**_encode_args(video=handle_file(str(EXAMPLE))), api_name="/encode")
    return out


def _assert_decodes_like_the_library(video_path, code: bytes, tiny) -> None:
    """The app's decoded mp4 holds the library's decode of `code`: only H.264 at CRF 12 lies between,
    so it is as close to it as our own H.264 of the library's frames (noise-like frames lose ~10 dB)."""
    import tempfile
    from fractions import Fraction

    from lora_codec.codec import decode
    from lora_codec.metrics import psnr
    from lora_codec.video import read_video, write_video

    local = decode(code, backbone=tiny).frames
    got = read_video(video_path).frames
    assert got.shape == local.shape
    with tempfile.TemporaryDirectory() as d:
        ref = Path(d) / "local.mp4"
        write_video(ref, local, Fraction(16), crf=12)
        assert psnr(local, got) > psnr(local, read_video(ref).frames) - 0.5


def _outputs(out) -> dict:
    keys = ("status", "notes", "code_file", "code_text", "bytes_table", "original", "recon", "baseline",
            "baseline_file", "metrics", "summary")
    assert len(out) == len(keys)
    return dict(zip(keys, out))


def test_api_names_are_stable(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/encode", "/keep_improving", "/stop", "/estimate", "/decode", "/describe_code"} <= set(api)
    params = [p["parameter_name"] for p in api["/encode"]["parameters"]]
    # job_id: optional (the browser's job id); segments (issue 14): optional, last
    assert params == list(_encode_args()) + ["job_id", "segments"]
    assert api["/encode"]["parameters"][-1]["parameter_has_default"]  # old clients still work
    assert [p["parameter_name"] for p in api["/keep_improving"]["parameters"]] == ["extra_steps", "job_id"]
    assert api["/keep_improving"]["parameters"][1]["parameter_has_default"]  # old clients still work
    assert [p["parameter_name"] for p in api["/decode"]["parameters"]] == [
        "code_file", "code_text", "steps", "refine_mode", "refine_k", "caption", "segments", "merge_file",
        "merge_weights"]  # the last three (issue 14: a long clip's range, merging) are optional
    assert all(p["parameter_has_default"] for p in api["/decode"]["parameters"][6:])


def test_compress_then_decode_through_the_client(client, app_encoded, tiny):
    from gradio_client import handle_file

    from lora_codec import bitstream
    from lora_codec.codec import describe
    from lora_codec.video import read_video

    o = _outputs(app_encoded)
    assert o["status"].startswith("**Done.**"), o["status"]
    code = Path(o["code_file"]).read_bytes()
    info = describe(code)
    assert info["model"] == "tiny" and (info["frames"], info["height"], info["width"]) == (17, 64, 112)
    assert info["sample_steps"] == SAMPLE_STEPS
    # the text form is the same code
    assert bitstream.load_code_bytes(o["code_text"]) == code
    # the table adds up to the file size
    rows = o["bytes_table"]["data"]
    assert rows[-1][0].startswith("total") and rows[-1][1] == len(code)
    assert sum(r[1] for r in rows[:-1]) == len(code)
    assert {r[0] for r in rows[:-1]} >= {"header", "caption", "prior", "payload", "refinement track"}
    s = o["summary"]
    assert s["parts_sum"] == s["total_bytes"] == len(code)
    assert s["fit_steps"] == FIT_STEPS and not s["stopped_early"]
    # the encoder's own measure of the code it wrote (decoded as a receiver would) is what the page shows
    assert s["decoded_psnr"] is not None and "dB PSNR" in o["status"]
    assert s["decoded_psnr"] == pytest.approx(s["metrics"]["lora_codec"]["psnr_rgb"], abs=0.01)
    assert abs(rows[-1][3] - len(code) * 8 / 1000 / info["seconds"]) < 1e-3  # kbit/s
    assert abs(rows[-1][4] - len(code) * 8 / (17 * 64 * 112)) < 1e-5  # bits per pixel
    # both sides of the comparison were measured at the same geometry; x265 got the same budget
    metrics = {r[0]: r for r in o["metrics"]["data"]}
    assert set(metrics) == {"lora_codec", "x265 (PyAV)"}
    assert metrics["lora_codec"][1] == len(code)
    assert all(isinstance(r[2], float) and isinstance(r[3], float) for r in metrics.values())
    assert s["metrics"]["x265"]["fits"] == (metrics["x265 (PyAV)"][1] <= len(code))
    for key in ("original", "recon", "baseline"):
        clip = read_video(o[key])
        assert clip.frames.shape == (17, 64, 112, 3)
    assert "no visual knowledge" in o["notes"]

    # decode the downloaded file: the same frames as a local decode of the code
    d_video, d_file, d_status, d_report = client.predict(handle_file(o["code_file"]), "", 0, "all", 1, "",
                                                         api_name="/decode")
    assert d_status.startswith("**Decoded**") and d_report["total_bytes"] == len(code)
    frames = read_video(d_video).frames
    assert frames.shape == (17, 64, 112, 3)
    _assert_decodes_like_the_library(d_video, code, tiny)

    # the pasted text form, fewer steps and another caption (editing)
    _v, _f, status2, rep2 = client.predict(None, o["code_text"], 2, "all", 1, "a red car", api_name="/decode")
    assert rep2["decode_steps"] == 2 and rep2["decode_caption"] == "a red car"


def test_describe_code_endpoint(client, app_encoded):
    from gradio_client import handle_file

    o = _outputs(app_encoded)
    md, info, _k = client.predict(handle_file(o["code_file"]), "", api_name="/describe_code")
    assert info["total_bytes"] == Path(o["code_file"]).stat().st_size
    assert "model `tiny`" in md and "no refinement track" in md
    md, info, _k = client.predict(None, "vov1:AAAA", api_name="/describe_code")
    assert md.startswith("**Not a valid code:**") and "error" in info


def test_keep_improving_continues_the_saved_fit(client, app_encoded):
    out = _outputs(client.predict(10, api_name="/keep_improving"))
    assert out["status"].startswith("**Done.**")
    assert out["summary"]["fit_steps"] == FIT_STEPS + 10
    code = Path(out["code_file"]).read_bytes()
    assert out["summary"]["parts_sum"] == len(code)


def test_size_target_and_refinement_track(client, app_module):
    from gradio_client import handle_file

    if not app_module.HAS_REFINE:
        pytest.skip("this build has no refinement track")
    o = _outputs(client.predict(**_encode_args(video=handle_file(str(EXAMPLE)), rate_mode=TARGET, target_kb=1.5,
                                               refine_log2=3), api_name="/encode"))
    n = Path(o["code_file"]).stat().st_size
    assert 1350 <= n <= 1500  # rate control lands in [0.9 T, T]
    parts = o["summary"]["parts"]
    assert parts["refinement track"] > 0 and sum(parts.values()) == n
    # replaying the track needs its own schedule: a clear message, not a traceback
    with pytest.raises(Exception) as e:
        client.predict(handle_file(o["code_file"]), "", 7, "all", 1, "", api_name="/decode")
    assert "recorded on 4 sampling steps" in str(e.value) and "Traceback" not in str(e.value)
    _v, _f, status, rep = client.predict(handle_file(o["code_file"]), "", 0, "first K steps", 1, "",
                                         api_name="/decode")
    assert rep.get("decode_refined_steps", 1) == 1


@pytest.mark.parametrize("text, expect", [
    ("vov1:!!!", "corrupt text code"),
    ("hello", "not a lora_codec text code"),
    ("", "no code"),
])
def test_decode_errors_are_one_line_messages(client, text, expect):
    with pytest.raises(Exception) as e:
        client.predict(None, text, 0, "all", 1, "", api_name="/decode")
    msg = str(e.value)
    assert expect in msg and "Traceback" not in msg


def test_encode_rejects_a_non_video_cleanly(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(Exception) as e:
        client.predict(**_encode_args(video=handle_file(str(bad))), api_name="/encode")
    assert "not a readable video file" in str(e.value) and "Traceback" not in str(e.value)


INPUTS = ROOT / "tests" / "data" / "inputs"


@pytest.mark.parametrize("name", ["notes.txt", "notes"])
def test_encode_and_estimate_reject_a_text_file_cleanly(client, tmp_path, name):
    """The clip input takes any file (no type filter on the page); the server probes the content."""
    from gradio_client import handle_file

    bad = tmp_path / name
    bad.write_text("this is not a video")
    for call in (lambda: client.predict(**_encode_args(video=handle_file(str(bad))), api_name="/encode"),
                 lambda: client.predict(handle_file(str(bad)), 0.0, BALANCED, 1.0, 100, 0, 4, 17, 2, 0,
                                        api_name="/estimate")):
        with pytest.raises(Exception) as e:
            call()
        assert "not a readable video file" in str(e.value) and "Traceback" not in str(e.value)


def test_encode_api_keeps_video_first_and_probes_any_file(client, tmp_path):
    """/encode's parameters keep their names and order (`video` first, a file); the estimate reads
    raw .h264/.hevc streams, m2ts and a file without extension by content."""
    import shutil

    from gradio_client import handle_file

    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [p["parameter_name"] for p in api["/encode"]["parameters"]]
    assert names[:13] == ["video", "caption", "start_seconds", "rate_mode", "target_kb", "fit_steps",
                          "refine_log2", "seed", "sample_steps", "frames", "batch", "refine_steps", "size"]
    noext = tmp_path / "clip_without_extension"
    shutil.copy(INPUTS / "raw_12fps.hevc", noext)
    for path, source in [(INPUTS / "raw_8fps.h264", "source 320x180, 8 fps"),
                         (noext, "source 320x180, 12 fps"),
                         (INPUTS / "camcorder.m2ts", "source 320x180, 25 fps, 2.00 s")]:
        md = client.predict(handle_file(str(path)), 0.0, BALANCED, 1.0, 100, 0, 4, 17, 2, 0, api_name="/estimate")
        assert source in md, (path.name, md)


def test_clip_preview_plays_in_a_browser(app_module, tmp_path):
    """The Preview player gets the upload itself when browsers play it, else an H.264 mp4 of its
    first frames; nothing for a file that is not a video."""
    from lora_codec.video import probe_video, read_video

    assert app_module.clip_preview(str(EXAMPLE)) == str(EXAMPLE)
    for name, fps in [("raw_8fps.h264", 8), ("camcorder.m2ts", 25)]:
        out = Path(app_module.clip_preview(str(INPUTS / name)))
        assert out.suffix == ".mp4" and out != INPUTS / name
        info = probe_video(out)
        assert (info.width, info.height, float(info.fps)) == (320, 180, fps)
        src = read_video(INPUTS / name, max_frames=app_module.PREVIEW_FRAMES).frames
        assert read_video(out).frames.shape == src.shape
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a video")
    assert app_module.clip_preview(str(bad)) is None
    assert app_module.clip_preview(None) is None


def test_estimate_before_starting(client):
    from gradio_client import handle_file

    md = client.predict(handle_file(str(EXAMPLE)), 0.0, BALANCED, 1.0, 100, 0, 4, 17, 2, 0, api_name="/estimate")
    assert "Estimated time on this CPU" in md and "measured on this machine" in md
    assert "17 frames at 112x64" in md


def test_gpu_functions_return_no_tensors(app_module, app_encoded):
    import torch

    def walk(x):
        assert not isinstance(x, torch.Tensor)
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    from lora_codec.app import gpu as G

    code = Path(_outputs(app_encoded)["code_file"]).read_bytes()
    with app_module.model_lock():
        out = G.gpu_decode(code, 2, None, "all")
    walk(out)
    assert isinstance(out["frames"], np.ndarray) and out["frames"].dtype == np.uint8

    # a job as the app builds it: two fit calls carry the state, then the finish call
    from lora_codec import app_support as S

    wd = S.new_workdir("test")
    try:
        job = S.prepare_clip(EXAMPLE, wd, app_module.BACKBONE, start_seconds=0, max_frames=17)
        job.update(dir=str(wd), state=str(wd / "fit_state.safetensors"), target_steps=6,
                   settings=dict(model="tiny", caption="x", seed=0, fit_steps=6, sample_steps=2, batch=1))
        with app_module.model_lock():
            first = list(G.gpu_fit(job, 0.0))  # a zero-length slice: set-up and save only
            walk(first)
            assert [p["kind"] for p in first] == ["setup", "saved"] and first[-1]["step"] == 0
            job["target_steps"] = 3
            second = list(G.gpu_fit(job, 60.0))
            walk(second)
            assert second[-1] == {"kind": "saved", "step": 3, "total": 3, "done": True, "stopped": False}
            assert S.state_step(job["state"]) == 3
            fin = G.gpu_finish(job)
        walk(fin)
        assert isinstance(fin["code"], bytes) and fin["frames"].shape == (17, 64, 112, 3)
    finally:
        S.remove_workdir(wd)


# ---- app_support, no server ---------------------------------------------------------------------


def test_wan_estimate_matches_method_section_7():
    """The published-architecture arithmetic reproduces METHOD.md's table (~3 s per fit sample and
    ~40 s for a 50-step decode at 832x480x81 on a whole H100/H200-class GPU)."""
    from lora_codec import app_support as S

    tokens = 21 * 30 * 52
    assert tokens == 32760
    assert abs(S.wan_forward_flops(tokens) / 2.8e14 - 1) < 0.03
    m = S.wan_cost_model(tokens, 81 * 480 * 832)
    if S.ON_ZEROGPU:
        pytest.skip("scaled for a ZeroGPU slice")
    assert 2.8 < m.fit_sample_s < 3.4
    assert 35 < 50 * m.sample_step_s < 45
    small = 9 * 17 * 30  # 480x272, 33 frames
    assert abs(m.fit_step(small, 1) / 0.16 - 1) < 0.25


def test_call_duration_stays_within_limits():
    from lora_codec import app_support as S

    assert S.call_duration(0) >= 20
    assert S.call_duration(10_000) == S.LIMITS.max_gpu_call_s
    assert S.call_duration(60) > 60


def test_byte_table_accounts_for_every_byte(app_encoded):
    from lora_codec import app_support as S
    from lora_codec.codec import describe

    code = Path(_outputs(app_encoded)["code_file"]).read_bytes()
    rows, total = S.byte_table(describe(code))
    assert total == len(code) == rows[-1][1]
    report = describe(code)
    report.pop("refine_bytes", None)  # an older report: sections count as the track
    assert S.byte_table(report)[1] == len(code)


def test_job_folders_are_cleaned_up(tmp_path, monkeypatch):
    import time

    from lora_codec import app_support as S

    monkeypatch.setattr(S, "APP_TMP", tmp_path / "jobs")
    d = S.new_workdir()
    assert d.is_dir() and d.parent == tmp_path / "jobs"
    old = S.new_workdir()
    past = time.time() - 10 * 3600
    os.utime(old, (past, past))
    assert S.sweep(max_age_s=3600) == 1 and not old.exists() and d.exists()
    S.remove_workdir(tmp_path)  # outside the job root: left alone
    assert tmp_path.exists()
    S.remove_workdir(d)
    assert not d.exists()


def test_space_front_matter_and_requirements():
    readme = (ROOT / "README.md").read_text()
    m = re.match(r"---\n(.*?)\n---\n", readme, re.S)
    assert m, "README.md must start with the Space's YAML front matter"
    meta = m.group(1)
    for key, val in (("sdk", "gradio"), ("app_file", "app.py")):
        assert re.search(rf"^{key}:\s*{val}\s*$", meta, re.M), key
    assert re.search(r"^sdk_version:\s*\d+\.\d+\.\d+", meta, re.M)
    assert re.search(r"^python_version:", meta, re.M)
    short = re.search(r"^short_description:\s*(.+)$", meta, re.M)
    assert short and len(short.group(1).strip().strip('"')) <= 60
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in meta.split("models:")[1]
    assert "docs/screenshots/compress.png" in readme and "docs/screenshots/decode.png" in readme
    reqs = (ROOT / "requirements.txt").read_text()
    for pkg in ("gradio", "spaces", "torch", "diffusers"):
        assert re.search(rf"^{pkg}\b", reqs, re.M), pkg


def test_decodes_a_code_made_elsewhere(client, encoded, tiny, tmp_path):
    """A code written by the library (not by the app) decodes in the app, file or pasted text."""
    from gradio_client import handle_file

    from lora_codec import bitstream

    path = tmp_path / "elsewhere.vov"
    path.write_bytes(encoded.data)
    video, _f, status, rep = client.predict(code_file=handle_file(str(path)), code_text="", steps=0,
                                            refine_mode="all", refine_k=0, caption="", api_name="/decode")
    assert rep["total_bytes"] == len(encoded.data) and rep["caption"] == "a test pattern"
    _assert_decodes_like_the_library(video, encoded.data, tiny)
    _v, _f, _s, rep2 = client.predict(code_file=None, code_text=bitstream.to_text(encoded.data), steps=0,
                                      refine_mode="none", refine_k=0, caption="", api_name="/decode")
    assert rep2["total_bytes"] == len(encoded.data)


def test_clip_limits_and_trimming_notices(tmp_path, tiny, monkeypatch):
    from fractions import Fraction

    from lora_codec import app_support as S
    from lora_codec.errors import LimitError
    from lora_codec.video import write_video

    from .conftest import synthetic_frames

    # trimmed to the native length, with a notice that says which part is coded
    rec = S.prepare_clip(EXAMPLE, tmp_path, tiny, start_seconds=0.5, max_frames=9)
    assert rec["geometry"] == [9, 64, 112]
    notes = " ".join(rec["notes"])
    assert "pick another start time" in notes and "from 0.5 s" in notes
    assert S.load_clip(rec).frames.shape == (9, 64, 112, 3)
    # duration cap
    long = tmp_path / "long.mp4"
    write_video(long, synthetic_frames(frames=70, height=16, width=16), Fraction(1))
    monkeypatch.setattr(S, "LIMITS", dataclasses.replace(S.LIMITS, max_clip_seconds=60))
    with pytest.raises(LimitError, match="over the limit of 60 s"):
        S.prepare_clip(long, tmp_path, tiny, start_seconds=0, max_frames=17)
    # upload size cap
    monkeypatch.setattr(S, "LIMITS", dataclasses.replace(S.LIMITS, max_upload_mb=0))
    with pytest.raises(LimitError, match="this app accepts up to 0 MB"):
        S.check_upload(EXAMPLE)


def test_readme_gradio_client_example_runs(app_url, monkeypatch):
    """The README's gradio_client example (encode, then decode) runs against the app as written
    (with this server's address and a smaller fit budget)."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"## The web app.*?```python\n(.*?)```", readme, re.S)
    assert m, "README.md: the web app section has no gradio_client example"
    code = m.group(1)
    assert 'api_name="/encode"' in code and 'api_name="/decode"' in code
    code = re.sub(r'Client\("[^"]*"\)', f'Client("{app_url}", verbose=False)', code).replace("fit_steps=60",
                                                                                          "fit_steps=20")
    monkeypatch.chdir(ROOT)
    scope: dict = {"print": lambda *a, **k: None}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["summary"]["parts_sum"] == scope["summary"]["total_bytes"]
    assert scope["message"].startswith("**Decoded**")


def test_stop_early_then_keep_improving(client):
    """Stop early writes a valid code from the fit so far; Keep improving by n then fits to step k + n
    from the saved state (not to the end of the old schedule)."""
    import time

    from gradio_client import handle_file

    from lora_codec.codec import describe

    job = client.submit(**_encode_args(video=handle_file(str(EXAMPLE)), fit_steps=1000), api_name="/encode")
    deadline = time.time() + 120
    while not any(isinstance(o, (list, tuple)) and o and "**Fitting** step" in str(o[0]) for o in job.outputs()):
        if time.time() > deadline:
            pytest.fail("the fit never reported progress")
        time.sleep(0.2)
    assert "Stopping" in client.predict(api_name="/stop")
    o = _outputs(job.result(timeout=180))
    first = o["summary"]
    assert o["status"].startswith("**Stopped early**"), o["status"]
    assert 0 < first["fit_steps"] < 1000 and first["stopped_early"]
    assert describe(Path(o["code_file"]).read_bytes())["total_bytes"] == first["total_bytes"]
    more = _outputs(client.predict(5, api_name="/keep_improving"))["summary"]
    assert more["fit_steps"] == first["fit_steps"] + 5 and not more["stopped_early"]


# ---- robustness: a page reload keeps the fit; a burst of requests queues --------------------------


def test_fit_survives_a_page_reload(app_url, app_module):
    """The browser keeps a job id (gr.BrowserState); a new session (what a page reload gets) that
    sends the same id continues the same fit from its saved step (k + n) and sees the last result."""
    import uuid

    from gradio_client import Client, handle_file

    jid = uuid.uuid4().hex
    first = Client(app_url, verbose=False)
    o = _outputs(first.predict(**_encode_args(video=handle_file(str(EXAMPLE)), fit_steps=10), job_id=jid,
                               api_name="/encode"))
    k = o["summary"]["fit_steps"]
    assert o["status"].startswith("**Done.**") and k == 10

    reloaded = Client(app_url, verbose=False)  # a new session: its gr.State is empty
    with pytest.raises(Exception, match="compress a clip first"):
        reloaded.predict(3, api_name="/keep_improving")
    # what the page shows after the reload (the load handler): the last result, the same id
    got_id, job, status, *_rest = app_module.restore_job(jid)
    assert got_id == jid and job["steps_done"] == k and status.startswith("*Restored")
    more = _outputs(reloaded.predict(3, job_id=jid, api_name="/keep_improving"))
    assert more["summary"]["fit_steps"] == k + 3 and more["status"].startswith("**Done.**")

    # an unknown or expired id: said plainly, nothing is offered that cannot work; no new id is made
    # before the browser compresses (no phantom fit on a first visit)
    other = uuid.uuid4().hex
    with pytest.raises(Exception) as e:
        reloaded.predict(3, job_id=other, api_name="/keep_improving")
    assert "no longer on this server" in str(e.value) and "Traceback" not in str(e.value)
    new_id, job, status, *_rest = app_module.restore_job(other)
    assert job is None and new_id is None and "no longer on this server" in status and "nothing" in status
    assert app_module.restore_job(None)[:2] == [None, None]
    # ids come from the client: only 32 hex digits, never a path
    for bad in ("../" + "0" * 29, "F" * 32, "0" * 31):
        with pytest.raises(Exception, match="not a valid job id"):
            reloaded.predict(3, job_id=bad, api_name="/keep_improving")
    assert app_module.restore_job("../../etc")[1] is None


def test_a_burst_of_decodes_queues_and_the_server_stays_healthy(app_url, app_module, tiny):
    """20 concurrent decode requests (tiny backbone, a 1-frame code, 1 step) are all queued and served
    (none rejected as 'queue full'), and a fresh request succeeds afterwards."""
    import concurrent.futures
    import time
    from fractions import Fraction

    from gradio_client import Client

    from lora_codec import bitstream
    from lora_codec.codec import EncodeSettings, encode
    from lora_codec.video import Clip

    from .conftest import synthetic_frames

    n = 20
    assert app_module.demo._queue.max_size is None or app_module.demo._queue.max_size >= n
    frames = synthetic_frames(frames=1, height=64, width=112)
    clip = Clip(frames=frames, fps=Fraction(16), src_width=112, src_height=64, src_frames=1)
    text = bitstream.to_text(encode(clip, EncodeSettings(model="tiny", caption="burst", fit_steps=2, sample_steps=1),
                                    backbone=tiny).data)
    client = Client(app_url, verbose=False)
    deadline = time.monotonic() + 300

    def one(_i):
        job = client.submit(None, text, 1, "all", 1, "", api_name="/decode")
        return job.result(timeout=max(1.0, deadline - time.monotonic()))

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    assert len(results) == n
    for _video, _file, status, rep in results:
        assert status.startswith("**Decoded**") and rep["frames"] == 1
    _v, _f, status, _rep = Client(app_url, verbose=False).predict(None, text, 1, "all", 1, "", api_name="/decode")
    assert status.startswith("**Decoded**")
