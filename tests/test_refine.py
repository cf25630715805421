"""The refinement track (best-of-N SDE, METHOD.md section 5) on the tiny backbone (CPU)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from lora_codec import bitstream, refine
from lora_codec.cli import main
from lora_codec.codec import (EncodeSession, EncodeSettings, _code_velocity, add_refinement, attach_code_adapter,
                              decode, describe, encode)
from lora_codec.errors import CodeFormatError, LoraCodecError
from lora_codec.sampling import initial_noise, sample_ode, sigma_schedule

FIT = dict(fit_steps=16, sample_steps=4)
REFINE = dict(refine_n=16, refine_steps=8)


def mse(a, b):
    return float(torch.mean((a.float() - b.float()) ** 2))


@pytest.fixture(scope="module")
def refined(clip_path, tiny):
    settings = EncodeSettings(model="tiny", caption="a test pattern", seed=4, **FIT, **REFINE)
    return encode(clip_path, settings, backbone=tiny)


# -- candidate noise --------------------------------------------------------------------------------

RANDOM123_KAT = [  # Random123 kat_vectors, philox4x32 10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_philox_known_answers(backend):
    for counter, key, want in RANDOM123_KAT:
        assert refine.philox4x32(counter, key, backend=backend) == want


def test_candidate_noise_is_a_pure_function_of_seed_step_k():
    n = 4099  # not a multiple of 4
    z = refine.candidate_noise(11, 3, 7, n)
    assert z.shape == (n,) and z.dtype == torch.float32
    assert torch.equal(z, refine.candidate_noise(11, 3, 7, n))
    assert torch.equal(z[:100], refine.candidate_noise(11, 3, 7, 100))  # a prefix, whatever n is
    for other in ((12, 3, 7), (11, 4, 7), (11, 3, 8)):
        assert not torch.allclose(z, refine.candidate_noise(*other, n))
    # a batch of (step, k) pairs gives exactly the single draws (the decoder draws its noises in batches)
    rows = refine.candidate_noise(11, [3, 0, 9], [7, 7, 65535], n)
    assert rows.shape == (3, n) and torch.equal(rows[0], z)
    assert torch.equal(rows[2], refine.candidate_noise(11, 9, 65535, n))
    # the accelerator path computes the same integers; only float rounding may differ
    assert torch.allclose(z, refine.candidate_noise(11, 3, 7, n, backend="torch"), atol=1e-6, rtol=0)
    big = refine.candidate_noise(2**63 + 5, 9999, 65535, 200_000)
    assert abs(float(big.mean())) < 0.01 and abs(float(big.std()) - 1) < 0.01
    assert abs(float((big**4).mean()) - 3) < 0.1  # Gaussian kurtosis


@pytest.mark.parametrize("kw", [{}, {"backend": "torch"}, {"block_normals": 256}, {"block_normals": 256, "backend": "torch"},
                                {"fast": False}])
def test_candidate_dots_equal_explicit_dot_products(kw):
    n, count = 2241, 40
    d = torch.randn(n, generator=torch.Generator().manual_seed(0))
    want = np.array([float(refine.candidate_noise(5, 2, k, n).double() @ d.double()) for k in range(count)])
    got = refine.candidate_dots(5, 2, d, count, **kw)
    assert np.allclose(got, want, atol=1e-3 * np.abs(want).max())
    assert np.argmax(got) == np.argmax(want)


# -- the SDE step -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma,sigma_next", [(0.9, 0.8), (0.5, 0.3), (1.0, 0.95)])
def test_step_matches_method_formulas(sigma, sigma_next):
    gen = torch.Generator().manual_seed(1)
    x, v, x_ref, z = (torch.randn(1000, generator=gen, dtype=torch.float64) for _ in range(4))
    c = refine.step_coefficients(sigma, sigma_next)
    dt = sigma_next - sigma
    g = min(math.sqrt(2 * sigma / (1 - sigma)), 5) if sigma < 1 else 5.0
    assert c.g == pytest.approx(g) and c.h == pytest.approx(math.sqrt(-dt) * g)
    s = -(x + (1 - sigma) * v) / sigma
    s_t = -(x - (1 - sigma) * x_ref) / sigma**2
    v_t = (x - x_ref) / sigma if sigma == 1 else (-sigma * s_t - x) / (1 - sigma)
    mu_p = x + dt * (v - g**2 * s / 2)
    mu_q = x + dt * (v_t - g**2 * s_t / 2)
    assert torch.allclose(refine.sde_mean(x, v, c), mu_p, atol=1e-9)
    assert torch.allclose(refine.target_mean(x, x_ref, c), mu_q, atol=1e-9)
    # log q(x') - log p(x') = -|D|^2 / 2h^2 - <D, z>/h for x' = mu_p + h z
    xp = mu_p + c.h * z
    logq_minus_logp = (-((xp - mu_q) ** 2).sum() + ((xp - mu_p) ** 2).sum()) / (2 * c.h**2)
    D = mu_p - mu_q
    assert float(logq_minus_logp) == pytest.approx(float(-(D @ D) / (2 * c.h**2) - (D @ z) / c.h), rel=1e-9)


# -- the section bytes ------------------------------------------------------------------------------


def test_track_bytes_round_trip_and_cost():
    rng = np.random.default_rng(0)
    for log2_n in (1, 3, 8, 13, 16):
        for first, count in ((0, 49), (5, 20), (0, 0)):
            idx = tuple(int(i) for i in rng.integers(0, 1 << log2_n, count))
            t = refine.Track(steps=50, shift=3.0, log2_n=log2_n, first=first, indices=idx, select="greedy")
            blob = refine.pack_track(t, 3.0)
            assert refine.unpack_track(blob, 3.0) == t
            assert len(blob) == 6 + math.ceil(count * log2_n / 8)  # version, flags, steps, log2 N, first, count
            assert refine.section_bytes(50, log2_n, first, count) == len(blob) + 2  # + tag + length
    t = refine.Track(steps=300, shift=5.0, log2_n=10, first=0, indices=(1023,) * 299)
    blob = refine.pack_track(t, 3.0)  # a shift other than the code's is stored
    assert refine.unpack_track(blob, 3.0) == t
    assert len(blob) == 2 + 2 + 4 + 1 + 1 + 2 + math.ceil(299 * 10 / 8)


def test_corrupt_track_is_rejected():
    t = refine.Track(steps=8, shift=3.0, log2_n=4, first=0, indices=(1, 2, 3, 4, 5, 6, 7))
    good = refine.pack_track(t, 3.0)
    bad = {
        "version": bytes([9]) + good[1:],
        "flags": good[:1] + bytes([0x80]) + good[2:],
        "log2n": good[:3] + bytes([0]) + good[4:],
        "too many indexed steps": good[:5] + bytes([8]) + good[6:],
        "truncated": good[:-1],
        "trailing": good + b"\0",
        "padding": good[:-1] + bytes([good[-1] | 1]),
    }
    for name, blob in bad.items():
        with pytest.raises(CodeFormatError):
            refine.unpack_track(blob, 3.0)


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    (dict(refine_n=3), "power of two"),
    (dict(refine_n=1), "power of two"),
    (dict(refine_n=1 << 17), "power of two"),
    (dict(refine_n=16, refine_steps=1), "refine-steps"),
    (dict(refine_n=16, refine_select="best"), "refine-select"),
    (dict(refine_n=16, refine_steps=8, refine_indexed="5:2"), "refine-indexed"),
    (dict(refine_n=16, refine_steps=8, refine_indexed="0:8"), "never carries"),
    (dict(refine_n=16, refine_indexed="x"), "START:STOP"),
    (dict(refine_steps=8), "need --refine-n"),
])
def test_bad_refine_settings_fail_before_reading_the_clip(tmp_path, tiny, kw, match):
    with pytest.raises(refine.RefinementError, match=match):
        EncodeSession.start(tmp_path / "missing.mp4", EncodeSettings(model="tiny", **kw), backbone=tiny)


def test_indexed_ranges():
    assert refine.resolve_indexed(10) == (0, 9)
    assert refine.resolve_indexed(10, ":-1") == (0, 9)
    assert refine.resolve_indexed(10, "2:") == (2, 7)
    assert refine.resolve_indexed(10, "0:5") == (0, 5)
    assert refine.resolve_indexed(10, (3, 6)) == (3, 3)


# -- encode, replay, progressive decoding -------------------------------------------------------------


def test_replay_equals_the_encoders_latents(refined, tiny):
    out = decode(refined.data, backbone=tiny)
    assert out.report["decode_refine"] == "all" and out.report["decode_refined_steps"] == 7
    assert out.report["decode_steps"] == 8
    assert torch.equal(out.latents, refined.refined_latents)
    assert refined.report["refine_latent_mse"] == pytest.approx(mse(out.latents, refined.latents))


def test_replay_costs_what_plain_sampling_costs(refined, tiny):
    """Replay makes exactly the plain decoder's model calls (one per step) and draws one candidate
    noise per indexed step; the benchmark (benchmarks/bench_refine.py) measures the time ratio."""
    code = refined.code
    track = refine.read_track(code)
    sigmas = sigma_schedule(track.steps, track.shift)
    adapter = attach_code_adapter(tiny, code)
    drawn = []
    real = refine.candidate_noise

    def counting(seed, step, k, n, device="cpu", **kw):
        drawn.append(np.size(step))
        return real(seed, step, k, n, device, **kw)

    try:
        velocity = _code_velocity(tiny, code, adapter, code.caption)
        calls = []
        inner = velocity.__call__

        class Counted:
            device = velocity.device

            def __call__(self, x, sigma):
                calls.append(sigma)
                return inner(x, sigma)

        noise = initial_noise(code.noise_seed, tuple(refined.latents.shape))
        refine.candidate_noise = counting
        try:
            out = refine.replay(Counted(), noise, track, sigmas, seed=code.noise_seed)
        finally:
            refine.candidate_noise = real
    finally:
        tiny.pipe.transformer = adapter.detach()
    assert len(calls) == track.steps and sum(drawn) == track.count
    assert torch.equal(out, refined.refined_latents.to(out.device))


def test_bits_accounting_matches_the_file(refined):
    info = describe(refined.data)
    assert (info["refine_n"], info["refine_steps"], info["refine_bits"]) == (16, 8, 7 * 4)
    assert info["refine_indexed"] == [0, 7] and info["refine_select"] == "gumbel"
    sizes = bitstream.size_report(refined.data)
    assert sizes["section_bytes_by_tag"] == {bitstream.SECTION_REFINEMENT: info["refine_bytes"]}
    assert info["refine_bytes"] == refine.section_bytes(8, 4, 0, 7) == 2 + 6 + math.ceil(7 * 4 / 8)
    bare = dataclasses.replace(refined.code, sections={})
    assert len(bitstream.write_code(bare)) + info["refine_bytes"] == len(refined.data) == info["total_bytes"]
    plain = describe(bitstream.write_code(bare))
    assert (plain["refine_n"], plain["refine_steps"], plain["refine_bits"], plain["refine_bytes"]) == (None, None, 0, 0)


def test_truncated_track_decodes(refined, tiny):
    full = decode(refined.data, backbone=tiny)
    part = decode(refined.data, backbone=tiny, refine=3)
    zero = decode(refined.data, backbone=tiny, refine="0")
    ode = decode(refined.data, backbone=tiny, refine="none", steps=8)
    assert part.report["decode_refined_steps"] == 3 and part.frames.shape == full.frames.shape
    assert not torch.equal(part.latents, full.latents) and not torch.equal(part.latents, ode.latents)
    assert torch.equal(zero.latents, ode.latents)  # K = 0 is the plain ODE on the track's schedule
    # a track cut to its first 3 indices is a valid track that decodes like --refine 3
    track = refine.read_track(refined.code)
    cut = dataclasses.replace(refined.code, sections={1: refine.pack_track(track.truncated(3), refined.code.shift)})
    assert torch.equal(decode(bitstream.write_code(cut), backbone=tiny).latents, part.latents)
    assert decode(refined.data, backbone=tiny, refine="none").report["decode_steps"] == 4  # the code's default


def test_refine_request_errors(refined, encoded, tiny):
    for kw, match in ((dict(refine=8), "has 7 indexed steps"), (dict(steps=5), "--refine none"),
                      (dict(refine="some"), "'all', 'none'"), (dict(refine=-1), ">= 0")):
        with pytest.raises(refine.RefinementError, match=match):
            decode(refined.data, backbone=tiny, **kw)
    with pytest.raises(refine.RefinementError, match="no refinement track"):
        decode(encoded.data, backbone=tiny, refine=2)
    assert decode(encoded.data, backbone=tiny).report["decode_refine"] == "none"


def test_error_to_the_original_falls_as_n_grows(refined, tiny):
    """Latent MSE to the original, averaged over noise seeds: N = 1 (plain SDE) > 16 > 256, and
    N = 256 is below the plain ODE decode of the same schedule (Gumbel-max selection, the default)."""
    code, ref = refined.code, refined.latents
    sigmas = sigma_schedule(8, code.shift)
    adapter = attach_code_adapter(tiny, code)
    try:
        velocity = _code_velocity(tiny, code, adapter, code.caption)
        errors = {"ode": [], 1: [], 16: [], 256: []}
        for seed in range(3):
            noise = initial_noise(seed, tuple(ref.shape))
            errors["ode"].append(mse(sample_ode(velocity, noise, sigmas), ref))
            for n in (1, 16, 256):
                rec = refine.record(velocity, noise, ref, sigmas, seed=seed, n=n, first=0, count=7, gumbel_seed=seed)
                errors[n].append(mse(rec.latents, ref))
    finally:
        tiny.pipe.transformer = adapter.detach()
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean[1] > mean[16] > mean[256], mean
    assert mean[256] < mean["ode"], mean


def test_add_a_track_to_an_existing_code(encoded, clip_path, tiny):
    out = add_refinement(encoded.data, clip_path, n=4, steps=6, select="greedy", backbone=tiny)
    info = describe(out.data)
    assert (info["refine_n"], info["refine_steps"], info["refine_bits"], info["refine_select"]) == (4, 6, 10, "greedy")
    assert torch.equal(decode(out.data, backbone=tiny).latents, out.latents)
    # the latents the encoder fitted are what the clip reads back as
    again = add_refinement(encoded.data, latents=encoded.latents, n=4, steps=6, select="greedy", backbone=tiny)
    assert again.data == out.data
    with pytest.raises(refine.RefinementError, match="power of two"):
        add_refinement(encoded.data, clip_path, n=6, backbone=tiny)


def test_target_size_includes_the_track(clip_path, tiny):
    res = encode(clip_path, EncodeSettings(model="tiny", seed=2, target_kb=0.8, finetune_steps=2, refine_n=256,
                                           refine_steps=10, **FIT), backbone=tiny)
    info = describe(res.data)
    assert 720 <= len(res.data) <= 800 and info["refine_bits"] == 9 * 8
    assert info["refine_bytes"] == 2 + 6 + 9


def test_fit_continues_after_a_track(clip_path, tiny):
    """Recording a track takes the fitting adapter off and puts it back with the fit's state: fitting on
    afterwards gives the same theta as without the track."""
    symbols = []
    for kw in ({}, dict(refine_n=2, refine_steps=3)):
        settings = EncodeSettings(model="tiny", seed=6, stage1_steps=3, stage2_steps=3, sample_steps=3, **kw)
        with EncodeSession.start(clip_path, settings, backbone=tiny) as s:
            s.fit()
            s.finish()
            s.extend(3)
            s.fit()
            symbols.append(s.finish().code.symbols)
    assert np.array_equal(symbols[0], symbols[1])


# -- command line ----------------------------------------------------------------------------------


def test_cli_refine(clip_path, tmp_path, capsys):
    import json

    code = tmp_path / "r.vov"
    assert main(["encode", str(clip_path), "-o", str(code), "--model", "tiny", "--steps", "8", "--sample-steps", "3",
                 "--refine-n", "8", "--refine-steps", "6", "--refine-indexed", "1:5", "--json"]) == 0
    enc = json.loads(capsys.readouterr().out)
    assert (enc["refine_n"], enc["refine_steps"], enc["refine_bits"], enc["refine_indexed"]) == (8, 6, 12, [1, 5])
    assert main(["info", str(code), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["refine_bits"] == 12 and info["total_bytes"] == code.stat().st_size
    assert main(["decode", str(code), "-o", str(tmp_path / "r.mp4"), "--refine", "2", "--json"]) == 0
    dec = json.loads(capsys.readouterr().out)
    assert dec["decode_refined_steps"] == 2 and dec["decode_steps"] == 6
    for argv in (["encode", str(clip_path), "-o", str(tmp_path / "x.vov"), "--model", "tiny", "--refine-n", "3"],
                 ["decode", str(code), "-o", str(tmp_path / "x.mp4"), "--refine", "9"],
                 ["decode", str(code), "-o", str(tmp_path / "x.mp4"), "--refine", "most"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("mode, said", [("seed", "(noise mode 'seed')"),
                                        ("mix", "for part of its samples (noise mode 'mix')"), ("random", None)])
def test_the_note_on_a_track_over_seed_noise_names_the_mode_asked_for(clip_path, tiny, mode, said):
    # a 'mix' fit was once described as "noise mode 'seed'", a mode the user had not asked for
    settings = EncodeSettings(model="tiny", fit_steps=2, sample_steps=3, refine_n=4, noise_mode=mode)
    with EncodeSession.start(clip_path, settings, backbone=tiny) as session:
        notes = [n for n in session.notes if "refinement track" in n]
    if said is None:
        assert notes == []
    else:
        assert len(notes) == 1 and said in notes[0] and "--noise-mode random" in notes[0]
