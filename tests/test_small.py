"""The `small` trained backbone: convention checks against diffusers, and measured quality.

The quality tests run the codec on the two evaluation clips in `examples/` that training never saw
(`bigbuckbunny_eval.mp4`: the film from 4.0 s, a held-out time range; `coffee_pan.mp4`: a pan over
a photograph not used in training) and assert measured values with margins (docs/RESULTS.md has the
numbers and the commands that produced them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_codec.backbones import SMALL_NAME, load_backbone
from lora_codec.codec import EncodeSettings, decode, encode
from lora_codec.metrics import psnr
from lora_codec.sampling import Velocity, initial_noise, sample_ode, sigma_schedule
from lora_codec.video import tensor_to_video

from .conftest import ROOT

EVAL_FILM = ROOT / "examples" / "bigbuckbunny_eval.mp4"
EVAL_PAN = ROOT / "examples" / "coffee_pan.mp4"
FILM_CAPTION = "a cartoon animation: a big grey rabbit in a green meadow with trees"


@pytest.fixture(scope="module")
def small():
    return load_backbone(SMALL_NAME)


def test_auto_is_small_without_cuda():
    from lora_codec.backbones import resolve_name

    if torch.cuda.is_available():
        pytest.skip("auto means Wan where CUDA exists")
    assert resolve_name("auto") == SMALL_NAME


def test_weights_are_small_files():
    from lora_codec.backbones import SMALL_WEIGHTS

    files = sorted(SMALL_WEIGHTS.glob("*.safetensors"))
    assert [f.name for f in files] == ["text_encoder.safetensors", "transformer.safetensors", "vae.safetensors"]
    assert all(f.stat().st_size < 5_000_000 for f in files)


def test_sampler_matches_diffusers_wan_pipeline(small):
    """Our ODE sampler with the plain (unadapted) model == diffusers' WanPipeline from the same noise and
    schedule: the convention (x_t = (1-t) x0 + t eps, v = eps - x0, timestep 1000 t, shift) has not drifted."""
    geom = small.native
    steps = 8
    noise = initial_noise(7, small.latent_shape(geom))
    caption = "a rabbit in a meadow"
    emb = small.embed_caption(caption)
    ours = sample_ode(Velocity(small.transformer, emb, device=small.device), noise, sigma_schedule(steps, small.defaults.shift))
    pipe = small.pipe
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt=caption, height=geom.height, width=geom.width, num_frames=geom.frames,
                  num_inference_steps=steps, guidance_scale=1.0, latents=noise[None].clone(),
                  max_sequence_length=small.max_sequence_length, output_type="latent").frames[0]
    assert theirs.shape == ours.shape
    assert torch.allclose(ours, theirs.float(), atol=2e-4, rtol=1e-4), float((ours - theirs).abs().max())
    # and the VAE side: the pipeline's de-normalisation is ours
    frames_ours = tensor_to_video(small.decode_latents(ours))
    video = pipe.vae.decode(theirs[None] * torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
                            + torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)).sample[0]
    assert np.abs(tensor_to_video(video).astype(int) - frames_ours.astype(int)).max() <= 1


# -- quality on clips training never saw ------------------------------------------------------------
# Margins below are set from values measured on the held-out film at 9 frames of 128x80 (2-core CPU; the fit
# is seeded, so a machine gives the same numbers each run), with the default recipe of docs/FIT.md: default fit
# 19.06 dB (1,775 bytes), the plain model from the same seed 14.4 dB, the VAE's ceiling 20.7 dB, a quarter of
# the fit steps 18.28 dB, a rate weight ten times lower 18.98 dB with a 1.09x larger code. (Before that recipe:
# 19.6, 17.6 and 19.9 dB with a 1.3x larger code - the new recipe gets more out of a short fit, and its decaying
# learning rate leaves the rate weight less room.) docs/RESULTS.md has the full table.
MARGIN_OVER_PLAIN_DB = 3.0
GAP_TO_VAE_DB = 2.0
MARGIN_STEPS_DB = 0.4
RATE_SIZE_FACTOR = 1.05
RATE_PSNR_TOLERANCE_DB = 0.5  # the cell noise of a fit (docs/FIT.md): a lower rate weight is not worse beyond it
MARGIN_REFINE_DB = 0.5


def _quality(frames_ref, data, backbone, **kw) -> float:
    return psnr(frames_ref, decode(data, backbone=backbone, **kw).frames)


@pytest.fixture(scope="module")
def film_default(small):
    """The held-out film coded at the default settings (what `lora_codec encode` does on a CPU)."""
    return encode(EVAL_FILM, EncodeSettings(model=SMALL_NAME, caption=FILM_CAPTION), backbone=small)


@pytest.fixture(scope="module")
def film_psnr(small, film_default):
    return _quality(film_default.frames, film_default.data, small)


def test_default_fit_reconstructs_the_unseen_clip(small, film_default, film_psnr):
    import dataclasses

    from lora_codec import bitstream

    res = film_default
    assert res.code.symbols.any(), "an empty adapter"
    vae_psnr = psnr(res.frames, tensor_to_video(small.decode_latents(res.latents)))
    zero = bitstream.write_code(dataclasses.replace(res.code, symbols=np.zeros_like(res.code.symbols), sections={}))
    plain_psnr = _quality(res.frames, zero, small)
    # clearly above the plain model's sample from the same seed and caption ...
    assert film_psnr > plain_psnr + MARGIN_OVER_PLAIN_DB, (film_psnr, plain_psnr)
    # ... and within a stated gap of what the VAE alone can give back
    assert film_psnr > vae_psnr - GAP_TO_VAE_DB, (film_psnr, vae_psnr)


def test_more_fit_steps_are_better(small, film_default, film_psnr):
    steps = film_default.report["steps"] // 4
    short = encode(EVAL_FILM, EncodeSettings(model=SMALL_NAME, caption=FILM_CAPTION, fit_steps=steps), backbone=small)
    short_psnr = _quality(short.frames, short.data, small)
    assert film_psnr > short_psnr + MARGIN_STEPS_DB, (film_psnr, short_psnr)


def test_refinement_track_beats_the_plain_ode(small):
    """On a code fitted on random noise (the paper's fit, which the track was designed for): measured
    17.8 dB with the track (N = 256) vs 16.6 dB for the plain ODE on the same schedule. (On a code fitted
    on the decoder's own noise, small's default, the plain ODE is better: 19.1 vs 15.8 dB; see RESULTS.md.)"""
    from lora_codec.codec import add_refinement

    res = encode(EVAL_FILM, EncodeSettings(model=SMALL_NAME, caption=FILM_CAPTION, noise_mode="random"), backbone=small)
    rec = add_refinement(res.data, latents=res.latents, n=256, backbone=small)
    track = _quality(res.frames, rec.data, small, refine="all")
    plain = _quality(res.frames, rec.data, small, refine="none")
    assert track > plain + MARGIN_REFINE_DB, (track, plain)


def test_lower_rate_weight_gives_a_larger_code(small, film_default, film_psnr):
    """The rate weight trades bytes: ten times lower gives a larger code, decoding no worse than the fit's
    cell noise (with the default recipe the extra bytes buy little here; `--target-kb` sets a size exactly)."""
    lam = small.defaults.rate_lambda / 10
    fine = encode(EVAL_FILM, EncodeSettings(model=SMALL_NAME, caption=FILM_CAPTION, rate_lambda=lam), backbone=small)
    assert len(fine.data) > len(film_default.data) * RATE_SIZE_FACTOR, (len(fine.data), len(film_default.data))
    assert _quality(fine.frames, fine.data, small) > film_psnr - RATE_PSNR_TOLERANCE_DB
