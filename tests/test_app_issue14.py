"""The app's machinery for issue 14, without a browser: a long clip coded as segments in GPU-call slices (with the
GPU cost per segment in the estimate), a picture shown as pictures with a picture codec as the baseline, and the
Decode tab's segment range and merge."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from lora_codec.bitstream import read_code
from lora_codec.video import write_video

from .conftest import synthetic_frames


@pytest.fixture(scope="module")
def appm(tmp_path_factory):
    from lora_codec import app_support as S
    from lora_codec.app import runtime as R

    S.APP_TMP = tmp_path_factory.mktemp("app14_jobs")
    old = S.LIMITS
    S.LIMITS = dataclasses.replace(S.LIMITS, slice_s=2.0)  # several slices per fit, as on ZeroGPU
    assert R.COSTS.ready.wait(180), "the start-up calibration did not finish"
    from lora_codec.app import decoding, jobs, text

    yield {"jobs": jobs, "decoding": decoding, "text": text, "S": S}
    S.LIMITS = old


def _run(gen) -> dict:
    fields: dict = {}
    statuses = []
    for f in gen:
        fields.update(f)
        if "status" in f:
            statuses.append(f["status"])
    fields["_statuses"] = statuses
    return fields


ARGS = dict(caption="stripes", start_seconds=0.0, rate_mode="balanced", target_kb=1.0, fit_steps=3, refine_log2=0,
            seed=1, sample_steps=2, frames=17, batch=1, refine_steps=0, size="112x64")


def test_long_clip_in_slices_and_decode_tab(appm, tmp_path):
    clip = tmp_path / "long.mp4"
    write_video(clip, synthetic_frames(frames=40, height=72, width=128, seed=4), Fraction(16))
    md = appm["text"].estimate_markdown(str(clip), 0.0, "balanced", 1.0, 3, 0, 2, 17, 1, 0, "112x64", 2)
    assert "for 2 segments" in md and "each" in md  # the GPU cost per segment
    md1 = appm["text"].estimate_markdown(str(clip), 0.0, "balanced", 1.0, 3, 0, 2, 17, 1, 0, "112x64", 1)
    assert "3 segments" in md1  # all of this 40-frame clip would be 3 segments
    f = _run(appm["jobs"].compress(str(clip), segments=2, **ARGS))
    assert f["status"].startswith("**Done.**"), f["status"]
    # progress per segment (the follower above sees only the latest status at each update: the run keeps all)
    history = appm["jobs"].RUNNER.get(appm["jobs"].run_key(None, "anonymous")).history
    assert any("segment 2 of 2" in s for s in history)
    code = read_code(open(f["code_file"], "rb").read())
    assert code.n_segments == 2 and code.output_frames == 33
    seg = f["summary"]["segments"]
    assert seg["segments"] == 2 and len(seg["fit_seconds_per_segment"]) == 2 and "psnr_boundary" in seg["seams"]
    assert f["original_image"] is None and f["recon"].endswith(".mp4") and appm["jobs"].pictures(f["job"]) is None
    # keep improving is for one-segment fits
    with pytest.raises(Exception, match="one-segment"):
        _run(appm["jobs"].keep_improving(2, f["job"]))
    # Decode tab: a range, and the code merged with itself at 0.5 / 0.5
    wd = tmp_path / "dec"
    wd.mkdir()
    path, msg, rep = appm["decoding"].decode_code(f["code_file"], None, 0, "all", 1, "", wd, "2", None, None)
    assert rep["decode_segments"] == [2, 2] and "Segments 2-2 of 2" in msg
    path, msg, rep = appm["decoding"].decode_code(f["code_file"], None, 0, "all", 1, "", wd, "", f["code_file"],
                                                  "0.5, 0.5")
    assert rep["decode_weights"] == [0.5, 0.5] and "Merged" in msg and rep["decode_frames"] == 33
    with pytest.raises(Exception, match="3"):
        appm["decoding"].decode_code(f["code_file"], None, 0, "all", 1, "", wd, "3", None, None)


def test_picture_shown_as_pictures(appm, tmp_path):
    pic = tmp_path / "photo.webp"
    Image.fromarray(synthetic_frames(frames=1, height=90, width=160, seed=8)[0]).save(pic, quality=95)
    md = appm["text"].estimate_markdown(str(pic), 0.0, "balanced", 1.0, 3, 0, 2, 17, 1, 0, "112x64", 1)
    assert "1 frames" in md or "a still picture" in md
    f = _run(appm["jobs"].compress(str(pic), **ARGS))
    assert f["status"].startswith("**Done.**"), f["status"]
    assert f["recon"] is None and f["baseline"] is None  # shown as pictures instead
    assert appm["jobs"].pictures(f["job"])["recon_image"] == f["recon_image"]
    for k in ("original_image", "recon_image", "baseline_image"):
        with Image.open(f[k]) as im:
            assert im.size == (112, 64)
    assert f["metrics"][1][0].split()[0] in ("AVIF", "WEBP", "JPEG")
    assert read_code(open(f["code_file"], "rb").read()).frames == 1
    assert np.asarray(Image.open(f["recon_image"])).shape == (64, 112, 3)
