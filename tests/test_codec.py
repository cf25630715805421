"""End-to-end codec on the tiny backbone (CPU): encode, code file, decode, resume, rate control."""

import numpy as np
import pytest
import torch

from lora_codec import bitstream
from lora_codec.adapter import Adapter, AdapterConfig, dequantise, quantise
from lora_codec.codec import EncodeSession, EncodeSettings, decode, describe, encode
from lora_codec.errors import BackboneError, LoraCodecError

from .conftest import FAST


def test_encode_writes_a_self_describing_code(encoded):
    info = describe(encoded.data)
    assert info["model"] == "tiny"
    assert info["total_bytes"] == len(encoded.data)
    parts = ("header_bytes", "caption_bytes", "prior_bytes", "payload_bytes", "sections_bytes")
    assert sum(info[k] for k in parts) == info["total_bytes"]
    assert (info["frames"], info["height"], info["width"]) == (17, 64, 112)
    assert info["fps"] == 16
    assert info["theta_length"] == 2048 and info["rank"] == 1
    assert info["caption"] == "a test pattern"
    assert encoded.report["steps"] == FAST["fit_steps"]


def test_theta_round_trip_through_bytes(encoded):
    code = bitstream.read_code(encoded.data)
    assert np.array_equal(code.symbols, encoded.code.symbols)
    assert code.step_size == encoded.code.step_size
    theta = dequantise(code.symbols, code.step_size)
    again = quantise(theta, code.step_size)
    assert np.array_equal(again, code.symbols)


def test_payload_close_to_ideal(encoded):
    info = describe(encoded.data)
    assert info["payload_bytes"] * 8 <= info["ideal_payload_bits"] * 1.005 + 64


def test_decode_is_deterministic_and_has_coded_geometry(encoded, tiny):
    a = decode(encoded.data, backbone=tiny)
    b = decode(bitstream.to_text(encoded.data), backbone=tiny)
    assert a.frames.shape == (17, 64, 112, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert a.fps == 16


def test_decode_overrides_steps_and_caption(encoded, tiny):
    base = decode(encoded.data, backbone=tiny)
    fewer = decode(encoded.data, backbone=tiny, steps=2)
    edited = decode(encoded.data, backbone=tiny, caption="something else")
    assert fewer.report["decode_steps"] == 2
    assert not torch.equal(base.latents, fewer.latents)
    assert not torch.equal(base.latents, edited.latents)


def test_decoder_adapter_matches_encoder(encoded, tiny):
    """The decoder's adapter output equals the encoder's quantised adapter (same theta_hat)."""
    code = bitstream.read_code(encoded.data)
    x = torch.randn(1, 4, 5, 8, 14)
    emb = tiny.embed_caption(code.caption)
    outs = []
    for _ in range(2):
        ad = Adapter(tiny.transformer, AdapterConfig(rank=code.rank, theta_length=code.theta_length))
        ad.set_theta(dequantise(code.symbols, code.step_size))
        with torch.no_grad():
            outs.append(ad(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=emb).sample)
        tiny.pipe.transformer = ad.detach()
    assert torch.equal(outs[0], outs[1])


def test_loss_falls_while_fitting(clip_path, tiny):
    losses = []
    settings = EncodeSettings(model="tiny", seed=1, stage1_steps=60, stage2_steps=0)
    with EncodeSession.start(clip_path, settings, backbone=tiny) as s:
        s.fit(callback=lambda p: losses.append(p.mse))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.8 * first, (first, last)


def test_resume_equals_uninterrupted(clip_path, tiny, tmp_path):
    settings = dict(model="tiny", seed=5, stage1_steps=10, stage2_steps=10, sample_steps=4)
    full = encode(clip_path, EncodeSettings(**settings), backbone=tiny)
    for cut in (6, 14):  # stop in stage 1, and in stage 2
        state = tmp_path / f"fit{cut}.state"
        assert encode(clip_path, EncodeSettings(**settings), backbone=tiny, max_steps=cut, save_state=state) is None
        resumed = encode(clip_path, EncodeSettings(**settings), backbone=tiny, resume=state)
        assert resumed.data == full.data, cut


def test_resume_refuses_other_clip(clip_path, tiny, tmp_path):
    from lora_codec.video import Clip
    from fractions import Fraction
    from .conftest import synthetic_frames

    state = tmp_path / "a.state"
    encode(clip_path, EncodeSettings(model="tiny", stage1_steps=3, stage2_steps=3), backbone=tiny, max_steps=2,
           save_state=state)
    other = Clip(frames=synthetic_frames(seed=9), fps=Fraction(16), src_width=128, src_height=72, src_frames=17, notes=[])
    with pytest.raises(LoraCodecError, match="another clip"):
        encode(other, EncodeSettings(model="tiny", stage1_steps=3, stage2_steps=3), backbone=tiny, resume=state)


@pytest.mark.parametrize("target_kb", [0.6, 1.2])
def test_target_kb_lands_in_range(clip_path, tiny, target_kb):
    res = encode(clip_path, EncodeSettings(model="tiny", seed=2, target_kb=target_kb, finetune_steps=4, **FAST),
                 backbone=tiny)
    n = len(res.data)
    assert 0.9 * target_kb * 1000 <= n <= target_kb * 1000, n


def test_target_kb_too_small_is_a_clear_error(clip_path, tiny):
    with pytest.raises(LoraCodecError, match="smallest code"):
        encode(clip_path, EncodeSettings(model="tiny", target_kb=0.01, **FAST), backbone=tiny)


def test_other_weights_refused(encoded, tiny):
    code = bitstream.read_code(encoded.data)
    code.fingerprint = bytes(8)
    with pytest.raises(BackboneError, match="other 'tiny' weights"):
        decode(bitstream.write_code(code), backbone=tiny)


def test_wan_without_weights_fails_fast():
    from lora_codec.backbones import load_wan

    with pytest.raises(BackboneError, match="--model tiny"):
        load_wan("/nonexistent/wan-weights")
