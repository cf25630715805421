"""The web app as a newcomer meets it, without a browser (issue 10): what is said before any work
(the clip's limits, the caption, a size target that cannot be met), messages in the user's words,
the live size figure, jobs that outlive the page (stop while waiting, a save when the page goes away,
what a reload finds after the server lost the running fit), Keep improving's kept settings, the
Decode tab's refinement status and the share link's limit. The browser side is tests/test_browser.py."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path

import pytest

from .conftest import EXAMPLE, synthetic_frames
from .test_app import _encode_args, _outputs, app_module, app_url, client  # noqa: F401  (the same server)

pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


# ---- messages in the user's words ----------------------------------------------------------------


def test_messages_lose_paths_errno_flags_and_parameter_names(app_module):  # noqa: F811
    from lora_codec.app.text import plain

    msg = plain("/tmp/gradio/d9a2c3/holiday.mp4: not a readable video file ([Errno 2] No such file)")
    assert msg == "holiday.mp4: not a readable video file (No such file)"
    assert "--" not in plain("--target-kb 0.1 is below the smallest code") and "size target 0.1 kB" in plain(
        "--target-kb 0.1 is below the smallest code")
    assert "max_frames" not in plain("trimmed to 17 frames (max_frames=17)")
    assert plain("1.08 kbit/s and 2/3 of it") == "1.08 kbit/s and 2/3 of it"  # not a path
    assert "--" not in plain("decode with --refine none, or encode with --noise-mode random to use the track")


def test_a_failed_compress_says_the_file_name_not_the_server_path(client, tmp_path):  # noqa: F811
    from gradio_client import handle_file

    bad = tmp_path / "holiday_notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(Exception) as e:
        client.predict(**_encode_args(video=handle_file(str(bad))), api_name="/encode")
    msg = str(e.value)
    assert "holiday_notes.mp4" in msg and "not a readable video file" in msg
    assert "/tmp" not in msg and "gradio" not in msg and "Errno" not in msg


# ---- before any work: the size target, the clip, the caption --------------------------------------


def test_a_size_target_below_the_smallest_code_is_refused_before_work(client, app_module):  # noqa: F811
    from gradio_client import handle_file

    from lora_codec import app_support as S
    from lora_codec.app import forms as F

    caption = "a big grey cartoon rabbit crawls out of his burrow under a tree and stretches " * 2
    before = set(S.APP_TMP.iterdir()) if S.APP_TMP.is_dir() else set()
    t0 = time.perf_counter()
    with pytest.raises(Exception) as e:
        client.predict(**_encode_args(video=handle_file(str(EXAMPLE)), rate_mode="target", target_kb=0.05,
                                      caption=caption), api_name="/encode")
    assert time.perf_counter() - t0 < 20  # no fit ran
    msg = str(e.value)
    assert "cannot be met" in msg and "smallest possible code" in msg and "--" not in msg
    g, _src, info = F.planned_clip(str(EXAMPLE), 0.0, 17, "112x64")
    settings = F.encode_settings(caption=caption, rate_mode="target", target_kb=0.05, fit_steps=24, refine_log2=0,
                                 seed=0, sample_steps=4, batch=2, refine_steps=0)
    least = F.smallest_code_bytes(settings, g, *F.clip_rate_and_source(info, g))
    assert f"{least} bytes" in msg
    after = set(S.APP_TMP.iterdir()) if S.APP_TMP.is_dir() else set()
    assert not [d for d in after - before if d.name.startswith("job")]  # no job was made
    # the estimate says so too, before Compress is pressed
    md = client.predict(handle_file(str(EXAMPLE)), 0.0, "target", 0.05, 24, 0, 4, 17, 2, 0, "112x64", 1, caption,
                        api_name="/estimate")
    assert md.startswith("**Cannot compress with these settings:**")


def test_the_smallest_code_is_what_the_library_makes_at_the_coarsest_step(app_module, tiny):  # noqa: F811
    """The floor the page refuses below is the size of a real code with an empty adapter."""
    from lora_codec.app import forms as F
    from lora_codec.codec import EncodeSession, EncodeSettings
    from lora_codec.video import read_video

    settings = F.encode_settings(caption="a rabbit", rate_mode="balanced", target_kb=1, fit_steps=2, refine_log2=0,
                                 seed=0, sample_steps=4, batch=1, refine_steps=0)
    clip = read_video(EXAMPLE, max_frames=17)
    session = EncodeSession.start(clip, EncodeSettings(**settings), backbone=tiny)
    try:
        g, _src, info = F.planned_clip(str(EXAMPLE), 0.0, 17, None)
        assert (g.frames, g.height, g.width) == (session.geometry.frames, session.geometry.height, session.geometry.width)
        assert len(session.code_bytes(step=1e3)) == F.smallest_code_bytes(settings, g, *F.clip_rate_and_source(info, g))
    finally:
        session.close()


def test_upload_checks_say_what_will_be_coded(app_module, tmp_path, monkeypatch):  # noqa: F811
    from lora_codec import app_support as S
    from lora_codec.app import uploads
    from lora_codec.video import write_video

    long = tmp_path / "long_walk.mp4"
    write_video(long, synthetic_frames(frames=70, height=64, width=112), Fraction(1))
    md = uploads.clip_check(str(long), 0.0, 17, "112x64")
    assert "long_walk.mp4" in md and "70 s" in md and "The first 17.00 s will be coded" in md
    assert "choose the start time" in md
    # more segments: said at once (it kept saying "The first 17.00 s ... 17 frames" while 3 segments code 49)
    md = uploads.clip_check(str(long), 0.0, 17, "112x64", 3)
    assert "3 segments of 17 frames: up to 49 frames (49.00 s) from 0 s will be coded" in md
    assert "The first 17.00 s" not in md
    md = uploads.clip_check(str(long), 80.0, 17, "112x64")
    assert "past its end" in md
    # a tiny source: said to be upscaled
    dot = tmp_path / "dot.mkv"
    write_video(dot, synthetic_frames(frames=5, height=1, width=1), Fraction(8))
    md = uploads.clip_check(str(dot), 0.0, 17, "112x64")
    assert "tiny source" in md and "1x1" in md and "upscaled" in md
    # over a limit: refused at upload, in words, with the file's name
    monkeypatch.setattr(S, "LIMITS", dataclasses.replace(S.LIMITS, max_clip_seconds=60))
    md = uploads.clip_check(str(long), 0.0, 17, "112x64")
    assert md.startswith("**long_walk.mp4 cannot be coded here:**") and "60 s" in md and "/tmp" not in md


def test_the_caption_counter_never_cuts_silently(app_module):  # noqa: F811
    from lora_codec import app_support as S
    from lora_codec.app import forms as F
    from lora_codec.app import text as T

    assert "bytes stored in the code" in T.caption_counter("a rabbit") and "reads all of it" in T.caption_counter(
        "a rabbit")
    words = " ".join(f"word{i}" for i in range(80))  # more tokens than the model reads
    md = T.caption_counter(words)
    n, limit, reach = F.caption_reach(words)
    assert n > limit and "reads only the first" in md and reach in md
    assert reach.split()[-1] in words.split()  # the cut falls between words
    assert "too long" in T.caption_counter("x" * (S.LIMITS.max_caption_bytes + 1))
    with pytest.raises(Exception, match="at most 4096"):
        F.check_caption("x" * (S.LIMITS.max_caption_bytes + 1))


def test_one_size_control_and_presets_say_what_they_do(app_module):  # noqa: F811
    from lora_codec.app import forms as F

    assert F.rate_mode_of("target", "balanced", 0.005) == "target"
    assert F.rate_mode_of("preset", "small", F.PRESETS["small"][1]) == "small"
    assert F.rate_mode_of("preset", "balanced", 0.0123) == "0.0123"  # a rate weight from Advanced
    assert F.rate_kwargs("0.0123", None) == {"rate_lambda": 0.0123}
    # "balanced" is this backbone's own default rate weight
    assert F.PRESETS["balanced"][1] == pytest.approx(app_module.BACKBONE.defaults.rate_lambda
                                                     if not app_module.TINY else 5e-3)
    with pytest.raises(Exception, match="rate weight must be between"):
        F.rate_kwargs("5", None)


# ---- during a fit --------------------------------------------------------------------------------


def _job(app_module, wd, steps, **settings):  # noqa: F811
    from lora_codec import app_support as S

    job = S.prepare_clip(EXAMPLE, wd, app_module.BACKBONE, start_seconds=0, max_frames=17)
    job.update(dir=str(wd), state=str(wd / "fit_state.safetensors"), target_steps=steps, steps_done=0,
               fit_done=False, name="clip", version=0,
               settings=dict(model="tiny", caption="a rabbit", seed=0, fit_steps=steps, sample_steps=2, batch=1,
                             **settings))
    return job


def test_the_live_size_is_what_stop_early_writes(app_module):  # noqa: F811
    """'kB if stopped now' is current at every progress update: it is the size of the code a stop at
    that step writes."""
    from lora_codec import app_support as S
    from lora_codec.app import gpu as G

    wd = S.new_workdir("test")
    try:
        job = _job(app_module, wd, 40, rate_lambda=5e-3)
        steps = []
        with app_module.model_lock():
            for p in G.gpu_fit(job, 60.0):
                if p["kind"] == "step":
                    steps.append(p)
                    if p["step"] == 25:  # Stop early here
                        (wd / "STOP").write_text("stop")
            assert [p["step"] for p in steps] == list(range(1, 26)) and all(p["code_bytes"] for p in steps)
            assert len({p["code_bytes"] for p in steps}) > 1  # it moves with the fit
            (wd / "STOP").unlink()
            fin = G.gpu_finish(job)
        assert len(fin["code"]) == steps[-1]["code_bytes"]  # what the page said at the stop is what was written
    finally:
        S.remove_workdir(wd)


def test_stop_cancels_a_waiting_job_and_a_lost_page_saves_the_fit(app_module, tmp_path):  # noqa: F811
    from lora_codec.app.runner import CANCELLED, DONE, SAVE_FILE, Runner

    gate = threading.Event()
    runner = Runner(1, queued_text=lambda ahead: {"status": f"waiting {ahead}"},
                    cancelled_text=lambda: {"status": "cancelled"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    def first():
        yield {"status": "running"}
        gate.wait(20)
        yield {"status": "finished"}

    def second():  # must never run
        raise AssertionError("a cancelled job ran")

    a = runner.submit("job:a", str(tmp_path / "a"), first)
    b = runner.submit("job:b", str(tmp_path / "b"), second)
    deadline = time.time() + 10
    while b.fields.get("status") != "waiting 1" and time.time() < deadline:
        time.sleep(0.05)
    assert b.fields["status"] == "waiting 1"
    assert runner.stop("job:b") == "cancelled"
    assert b.phase == CANCELLED and list(runner.follow(b)) == [{"status": "cancelled"}]
    # a follower that goes away (the page closed) asks the running job to save its state
    follower = runner.follow(a)
    assert next(follower)["status"] == "running"
    follower.close()
    assert (tmp_path / "a" / SAVE_FILE).exists()
    gate.set()
    deadline = time.time() + 10
    while a.active and time.time() < deadline:
        time.sleep(0.05)
    assert a.phase == DONE and not (tmp_path / "a" / SAVE_FILE).exists()


def test_the_fit_state_is_saved_when_asked_mid_slice(app_module):  # noqa: F811
    """A SAVE request (the page went away) saves the fit state at the next step, not at the slice end."""
    from lora_codec import app_support as S
    from lora_codec.app import gpu as G

    wd = S.new_workdir("test")
    try:
        job = _job(app_module, wd, 100000)
        with app_module.model_lock():
            it = G.gpu_fit(job, 600.0)
            kinds = []
            for p in it:
                kinds.append(p["kind"])
                if p["kind"] == "step" and p["step"] == 3:
                    (wd / "SAVE").write_text("save")
                if p["kind"] == "checkpoint":
                    assert p["step"] == 3 and S.state_step(job["state"]) == 3 and not (wd / "SAVE").exists()
                    (wd / "STOP").write_text("stop")
            assert "checkpoint" in kinds and kinds[-1] == "saved"
    finally:
        S.remove_workdir(wd)


# ---- after a reload: what the server kept ------------------------------------------------------


def test_an_interrupted_fit_says_what_was_kept_and_completes_its_budget(client, app_module):  # noqa: F811
    """The server lost a running fit (a restart): the page says what was kept (clip, settings, the
    step the state was saved at) and Keep improving completes the ORIGINAL budget."""
    from gradio_client import handle_file

    from lora_codec import app_support as S
    from lora_codec.app import jobs

    jid = uuid.uuid4().hex
    o = _outputs(client.predict(**_encode_args(video=handle_file(str(EXAMPLE)), fit_steps=10), job_id=jid,
                                api_name="/encode"))
    assert o["summary"]["fit_steps"] == 10
    # as a restart leaves it: the record says a 30-step fit is under way, the state is at step 10
    rec = json.loads((S.job_dir(jid) / S.JOB_FILE).read_text())
    rec.update(target_steps=30, fit_done=False, stopped=False)
    (S.job_dir(jid) / S.JOB_FILE).write_text(json.dumps(rec))
    jobs.RUNNER.runs.pop(jobs.run_key(jid, ""), None)
    fields = next(jobs.attach(jid))
    assert "was interrupted" in fields["status"] and "saved at step 10 of 30" in fields["status"]
    assert "continues it to its budget of 30 steps" in fields["status"] and fields["controls"] == jobs.READY
    assert fields["code_text"] == o["code_text"]  # the last result is still shown, marked as from before
    more = _outputs(client.predict(2, job_id=jid, api_name="/keep_improving"))
    assert more["summary"]["fit_steps"] == 30  # the original budget, not 10 + 2


def test_a_first_visit_and_a_lost_job_are_told_apart(app_module):  # noqa: F811
    from lora_codec.app import jobs

    assert list(jobs.attach(None)) == [{"controls": jobs.EMPTY}]
    lost = list(jobs.attach(uuid.uuid4().hex))
    assert len(lost) == 1 and "no longer on this server" in lost[0]["status"] and lost[0]["controls"] == jobs.EMPTY




def _compress_updates(app_module, **kw):
    """A compress driven as the page drives it: [its updates as {output name: value}], the error."""
    ui = {k: k for k in app_module.OUTPUT_KEYS}  # each output named by its key
    args = dict(video=None, caption="a rabbit", start_seconds=0, rate_mode="balanced", target_kb=None, fit_steps=10,
                refine_log2=0, seed=0, sample_steps=4, frames=9, batch=1, refine_steps=0) | kw
    updates, gen = [], app_module.make_compress(ui)(**args)
    with pytest.raises(app_module.gr.Error) as e:
        for upd in gen:
            updates.append(upd)
    return updates, str(e.value)


def test_a_failed_compress_leaves_no_result_of_the_previous_run(app_module, tmp_path, monkeypatch):  # noqa: F811
    """A compress that fails (at the upload checks, or after its job began) says so in the same update
    that empties the previous run's results: no later update of the page, and no update it dropped
    or took out of order before, can leave an error next to the old code and byte table."""
    from lora_codec.app import jobs

    old = {"dir": str(tmp_path), "job_id": None, "last": {"bytes_table": [["header", 12]]}}
    bad = tmp_path / "holiday_notes.mp4"
    bad.write_text("not a video")
    updates, err = _compress_updates(app_module, video=str(bad), job=old)
    assert "holiday_notes.mp4" in err
    last = updates[-1]
    assert "Could not compress" in last["status"] and "holiday_notes.mp4" in last["status"]
    empty = jobs.cleared()
    assert {k: last.get(k, "(not in it)") for k in empty} == empty  # the error's own update: every result empty

    # failing after the job showed its clip: the new clip and its notes stay, the old results go
    def failing(*a, **k):
        yield {"status": "**Checking...**"} | jobs.cleared()
        yield {"status": "**Reading the clip...**", "job": None}
        yield {"original": "new_clip.mp4", "notes": "- new notes"}
        raise jobs.LimitError("the GPU call failed")

    monkeypatch.setattr(jobs, "compress", failing)
    updates, err = _compress_updates(app_module, job=old)
    last = updates[-1]
    assert "the GPU call failed" in last["status"] and "original" not in last and "notes" not in last
    assert {k: last.get(k, "(not in it)") for k in ("bytes_table", "code_text", "recon")} == {
        k: empty[k] for k in ("bytes_table", "code_text", "recon")}


# ---- Keep improving's settings, the Decode tab, the share link -----------------------------------------


def test_keep_improving_flags_the_inputs_it_would_ignore(app_module):  # noqa: F811
    from lora_codec.app import text as T

    job = {"settings": {"caption": "a rabbit", "seed": 0, "sample_steps": 20, "batch": 2, "rate_lambda": 5e-3,
                        "size": [112, 64]},
           "geometry": [17, 64, 112], "start_seconds": 0.0, "file_name": "bunny.mp4", "dir": "/nonexistent"}
    form = dict(caption="a rabbit", start_seconds=0, frames=17, size="112x64", rate_mode="balanced", target_kb=1,
                seed=0, sample_steps=20, batch=2, refine_log2=0)
    md = T.kept_settings(job, form, "bunny.mp4")
    assert "Keep improving keeps this fit's settings" in md and "Changed on the form" not in md
    md = T.kept_settings(job, form | {"caption": "a dog", "frames": 13}, "other.mp4")
    assert "Changed on the form since:** clip, caption, frames" in md

    # a still picture's fit is one frame whatever the Frames slider says: its untouched slider (17) was once
    # flagged as "Changed on the form since: frames"
    picture = job | {"geometry": [1, 64, 112], "file_name": "photo.png"}
    md = T.kept_settings(picture, form, "photo.png")
    assert "photo.png, a picture at 112x64" in md and "Changed on the form" not in md and "1 frames" not in md
    md = T.kept_settings(picture, form | {"caption": "a dog"}, "photo.png")
    assert "Changed on the form since:** caption -" in md


def test_the_decode_status_says_which_refinement_was_used(client, app_module):  # noqa: F811
    from gradio_client import handle_file

    if not app_module.HAS_REFINE:
        pytest.skip("this build has no refinement track")
    o = _outputs(client.predict(**_encode_args(video=handle_file(str(EXAMPLE)), fit_steps=10, refine_log2=2),
                                api_name="/encode"))
    for mode, k, words in [("all", 1, "replayed in full"), ("none", 1, "not replayed"),
                           ("first K steps", 1, "replayed on its first 1 steps")]:
        _v, _f, status, _rep = client.predict(handle_file(o["code_file"]), "", 0, mode, k, "", api_name="/decode")
        assert words in status and "sampling steps" in status, (mode, status)


def test_a_code_too_long_for_a_link_offers_the_file(app_module):  # noqa: F811
    from lora_codec.app import text as T

    assert "opens the Decode tab" in T.share_note("vov1:" + "A" * 100)
    long_note = T.share_note("vov1:" + "A" * (T.SHARE_MAX_CHARS + 1))
    assert "too long for a link" in long_note and "code file" in long_note
    send, link, note = app_module.result_actions("vov1:" + "A" * (T.SHARE_MAX_CHARS + 1))
    assert send["interactive"] is True and link["visible"] is False and "too long" in note
    assert app_module.result_actions("")[0]["interactive"] is False
