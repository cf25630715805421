"""Stage 2 never starts empty (item 3), sizes other than the native one (item 4), a fingerprint
independent of state-dict key names (item 6), small mismatches of the real-model path (item 7).
The full-size Wan path itself: tests/test_wan_full.py."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from lora_codec import app_support as S
from lora_codec import bitstream
from lora_codec.backbones import Backbone, BackboneError, Geometry, weight_fingerprint
from lora_codec.codec import EncodeSettings, decode, encode
from lora_codec.fit import initial_step

from .conftest import EXAMPLE


# ---- item 3: a fit never collapses to an empty adapter ---------------------------------------------


def test_initial_step_follows_theta_spread():
    theta = torch.empty(131072).uniform_(-0.02, 0.02, generator=torch.Generator().manual_seed(0))
    s = initial_step(theta)
    assert s == pytest.approx((0.75 ** 0.5) * float(theta.std()), rel=1e-6)
    q = torch.round(theta / s)
    assert (q != 0).float().mean() > 0.6  # most entries survive rounding
    assert float(torch.nn.functional.softplus(torch.tensor(-2.0))) / s > 8  # the old start: ~10x too coarse
    assert initial_step(torch.zeros(8)) == pytest.approx(0.1269, abs=1e-3)  # no spread: the reference constant


@pytest.fixture(scope="module")
def short_fit(tiny):
    """The app's default budget on the tiny backbone, default settings otherwise (the 'balanced' rate)."""
    d = S.app_defaults(tiny)
    settings = EncodeSettings(model="tiny", caption="a grey rabbit", fit_steps=d.fit_steps, batch=d.batch,
                              rate_lambda=d.rate_lambda, sample_steps=4)
    return encode(EXAMPLE, settings, backbone=tiny)


def test_short_fit_gives_a_non_empty_code_that_changes_the_decode(short_fit, tiny):
    new = short_fit
    assert np.count_nonzero(new.code.symbols) > new.code.symbols.size // 10
    assert new.report["payload_bytes"] > 100
    adapted = decode(new.data, backbone=tiny, steps=4).frames.astype(np.float64)
    zero = dataclasses.replace(new.code, symbols=np.zeros_like(new.code.symbols))
    plain = decode(bitstream.write_code(zero), backbone=tiny, steps=4).frames.astype(np.float64)
    assert np.abs(adapted - plain).mean() > 1.0


@pytest.mark.parametrize("init_raw_step, empty", [(-2.0, True), (None, False)])
def test_the_reference_start_collapses_and_the_spread_rule_does_not(tiny, init_raw_step, empty):
    """With Wan's learning rates (2e-3, then 1.5e-3) a short stage 1 leaves theta near its +-0.02 start:
    the reference code's fixed first step softplus(-2) = 0.127 rounds every entry to 0 (the empty
    adapter of issue 11) and stage 2 cannot leave it; the spread rule keeps most entries."""
    from lora_codec import codec

    settings = EncodeSettings(model="tiny", caption="x", stage1_steps=4, stage2_steps=4, batch=1,
                              lr1=2e-3, lr2=1.5e-3)
    orig = codec.fit_config_for

    def with_start(bb, s):
        return dataclasses.replace(orig(bb, s), init_raw_step=init_raw_step)

    codec.fit_config_for = with_start
    try:
        res = encode(EXAMPLE, settings, backbone=tiny)
    finally:
        codec.fit_config_for = orig
    nonzero = np.count_nonzero(res.code.symbols)
    if empty:
        assert nonzero == 0
    else:
        assert nonzero > res.code.symbols.size // 2


def test_state_saved_at_the_stage_switch_resumes(tiny, tmp_path):
    """A fit state saved exactly at the switch (stage 1's optimiser, next step in stage 2) resumes,
    and stage 2 then starts from theta's spread as an uninterrupted fit does."""
    from lora_codec.codec import EncodeSession

    s = EncodeSettings(model="tiny", caption="x", stage1_steps=2, stage2_steps=2, batch=1)
    with EncodeSession.start(EXAMPLE, s, backbone=tiny) as a:
        a.fit(max_steps=2)
        a.save_state(tmp_path / "st")
        a.fit()
        sym_a = a.fitter.symbols()
    with EncodeSession.start(EXAMPLE, s, backbone=tiny) as b:
        b.load_state(tmp_path / "st")
        assert not b.fitter.step_initialised
        b.fit()
        assert b.fitter.step_initialised
        np.testing.assert_array_equal(b.fitter.symbols(), sym_a)


# ---- item 4: sizes ------------------------------------------------------------------------------------


def _wan_like(tiny) -> Backbone:
    """A Backbone with Wan's geometry rule (native 832x480x81, 8x / 4x VAE, free sizes within
    832x480 pixels) over the tiny pipeline: geometry only, no weights needed."""
    return dataclasses.replace(tiny, name="wan2.1-t2v-1.3b", native=Geometry(81, 480, 832), free_size=True,
                               max_pixels=832 * 480, _fingerprint=None, _fingerprints=None, _caption_cache={})


def test_wan_codes_multiples_of_16_within_the_pixel_cap(tiny):
    wan = _wan_like(tiny)
    assert wan.coded_geometry(100, 1080, 1920) == Geometry(81, 480, 832)  # default: native
    assert wan.coded_geometry(100, 1920, 1080) == Geometry(81, 832, 480)  # portrait
    assert wan.coded_geometry(33, 1080, 1920, size=(480, 272)) == Geometry(33, 272, 480)
    assert wan.coded_geometry(33, 1920, 1080, size=(352, 624)) == Geometry(33, 624, 352)  # portrait size
    assert wan.coded_geometry(1, 64, 64, size=(64, 64)) == Geometry(1, 64, 64)
    for bad in [(480, 270), (850, 480), (1024, 576)]:  # not x16, not x16, over the cap
        with pytest.raises(BackboneError):
            wan.coded_geometry(33, 1080, 1920, size=bad)
    wan.check_geometry(Geometry(81, 480, 832))
    # a backbone without free sizes keeps the native-only rule
    fixed = dataclasses.replace(wan, free_size=False)
    with pytest.raises(BackboneError, match="not a size"):
        fixed.check_geometry(Geometry(33, 272, 480))


def test_app_presets_and_default_size(tiny):
    wan = _wan_like(tiny)
    assert S.size_presets(wan) == [(480, 272), (624, 352), (832, 480)]
    assert S.oriented((480, 272), 1920, 1080) == (272, 480) and S.oriented((480, 272), 1080, 1920) == (480, 272)
    # the default preset: the largest whose default fit needs at most DEFAULT_FIT_CALLS fit calls
    tokens = S.wan_tokens(33, 480, 832)
    costs = S.wan_cost_model(tokens, 33 * 480 * 832)
    d = S.AppDefaults(frames=33, fit_steps=300, batch=1, rate_lambda=5e-3, sample_steps=50)

    class Shape:  # latent shape / patch size of the real Wan (video_tokens reads them)
        transformer = types.SimpleNamespace(config=types.SimpleNamespace(patch_size=(1, 2, 2)))

        @staticmethod
        def latent_shape(g):
            return (16, (g.frames - 1) // 4 + 1, g.height // 8, g.width // 8)

    (w, h), plan = S.default_size(costs, Shape, S.size_presets(wan), frames=d.frames, fit_steps=d.fit_steps,
                                  batch=d.batch, sample_steps=d.sample_steps, max_call_s=120)
    assert plan.calls - 1 <= S.DEFAULT_FIT_CALLS
    bigger = [s for s in S.size_presets(wan) if s[0] * s[1] > w * h]
    for bw, bh in bigger:
        p = S.plan_encode(costs, Shape, Geometry(33, bh, bw), fit_steps=300, batch=1, sample_steps=50, max_call_s=120)
        assert p.calls - 1 > S.DEFAULT_FIT_CALLS


def test_encode_at_another_size_with_the_cli(tmp_path):
    """`--size` on the tiny backbone (free sizes up to its native pixel count)."""
    out = tmp_path / "c.vov"
    cmd = [sys.executable, "-m", "lora_codec", "encode", str(EXAMPLE), "-o", str(out), "--model", "tiny",
           "--size", "64x64", "--steps", "2", "--sample-steps", "2", "-q"]
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    code = bitstream.read_code(out.read_bytes())
    assert (code.width, code.height) == (64, 64)
    bad = subprocess.run(cmd[:-7] + ["--size", "128x128", "--steps", "1", "-q"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "pixels per frame" in bad.stderr and "Traceback" not in bad.stderr
    worse = subprocess.run(cmd[:-7] + ["--size", "64by64", "-q"], capture_output=True, text=True, env=env)
    assert worse.returncode == 2 and "--size must look like" in worse.stderr


# ---- item 6: fingerprints outlive key renames -----------------------------------------------------------


class Renamed(torch.nn.Module):
    """The same tensors under other state-dict key names (as a library release might rename them)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def state_dict(self, *a, **k):
        return {f"renamed_{i}.{key.replace('.', '_')}": v for i, (key, v) in
                enumerate(reversed(list(self.inner.state_dict().items())))}


def test_fingerprint_ignores_key_names(tiny):
    pipe = tiny.pipe
    renamed = types.SimpleNamespace(transformer=Renamed(pipe.transformer), vae=Renamed(pipe.vae),
                                    text_encoder=Renamed(pipe.text_encoder))
    assert weight_fingerprint("tiny", renamed) == weight_fingerprint("tiny", pipe) == tiny.fingerprint
    # version 1 (codes written before) hashed the names: renaming changed it
    assert weight_fingerprint("tiny", renamed, version=1) != weight_fingerprint("tiny", pipe, version=1)
    # other weights still change it
    other = types.SimpleNamespace(transformer=pipe.transformer, vae=pipe.vae, text_encoder=torch.nn.Linear(2, 2))
    assert weight_fingerprint("tiny", other) != tiny.fingerprint


def test_codes_of_the_previous_fingerprint_version_still_decode(tiny, encoded):
    code = bitstream.read_code(encoded.data)
    assert code.fingerprint == tiny.fingerprint  # new codes carry version 2
    v1 = weight_fingerprint("tiny", tiny.pipe, version=1)
    assert v1 != code.fingerprint and v1 in tiny.fingerprints
    old = bitstream.write_code(dataclasses.replace(code, fingerprint=v1))
    a = decode(encoded.data, backbone=tiny, steps=2).frames
    b = decode(old, backbone=tiny, steps=2).frames
    np.testing.assert_array_equal(a, b)
    with pytest.raises(BackboneError, match="other 'tiny' weights"):
        decode(bitstream.write_code(dataclasses.replace(code, fingerprint=bytes(8))), backbone=tiny, steps=2)


# ---- item 7 --------------------------------------------------------------------------------------------


def test_limit_cpu_heap_returns_freed_memory():
    """With `limit_cpu_heap` (mallopt M_MMAP_THRESHOLD, as MALLOC_MMAP_THRESHOLD_ does) blocks freed
    under a live one go back to the system; with glibc's default dynamic threshold they stay in the
    heap. Run in fresh processes (glibc's state is per process)."""
    script = r"""
import sys, ctypes, torch
from lora_codec.backbones import limit_cpu_heap
if sys.argv[1] == "1":
    assert limit_cpu_heap()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
x = torch.ones(8 << 20, dtype=torch.uint8); del x           # frees a 8 MB block: glibc raises its threshold
base = rss()
blocks = [torch.ones(2 << 20, dtype=torch.uint8) for _ in range(200)]  # 400 MB in 2 MB blocks
keep = torch.ones(1 << 20, dtype=torch.uint8)                            # a live block on top
del blocks
print(round(rss() - base))
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(EXAMPLE.parents[1])}
    held = [int(subprocess.run([sys.executable, "-c", script, flag], capture_output=True, text=True, env=env,
                               check=True).stdout.split()[-1]) for flag in ("0", "1")]
    assert held[0] > 300 and held[1] < 50, held


def test_from_pretrained_uses_dtype_not_torch_dtype():
    import inspect

    from lora_codec import backbones

    src = inspect.getsource(backbones.load_wan)
    assert "torch_dtype" not in src and "dtype=torch.bfloat16" in src


def test_readme_space_costs_come_from_the_cost_model():
    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- space-costs")
    block = readme[readme.index("\n", start) + 1:readme.index("<!-- /space-costs -->")].strip()
    assert block == S.space_cost_markdown()
    # the default preset completes in a few calls
    plans = dict(S.space_plans())
    assert plans[(480, 272)].calls - 1 <= S.DEFAULT_FIT_CALLS


def test_caption_embedding_is_cached_in_the_job_folder(tiny, tmp_path, monkeypatch):
    """Item 2: the first GPU call of a job embeds the caption and keeps it in the job folder; later
    calls (fresh worker processes: nothing in memory) load it instead of running the text encoder."""
    cache = tmp_path / "caption.safetensors"
    caption = "a caption only this test uses"
    tiny._caption_cache.pop(caption, None)
    first = tiny.embed_caption(caption, cache_file=cache)
    assert cache.is_file()
    tiny._caption_cache.pop(caption, None)  # as in a new worker process

    def no_text_encoder(*a, **k):
        raise AssertionError("the text encoder ran again")

    monkeypatch.setattr(tiny.pipe, "_get_t5_prompt_embeds", no_text_encoder)
    again = tiny.embed_caption(caption, cache_file=cache)
    assert torch.equal(first.cpu(), again.cpu())
    # another caption (or other weights) is not served from that file
    tiny._caption_cache.pop("another caption", None)
    with pytest.raises(AssertionError, match="ran again"):
        tiny.embed_caption("another caption", cache_file=cache)
