"""Merged codes (issue 14, editing): both codes' adapters at once, the updates adding up (rank concatenation), with a
weight per code; mismatched codes refused with a clear message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch


from lora_codec.bitstream import read_code, write_code
from lora_codec.codec import EncodeSettings, attach_code_adapter, decode
from lora_codec.merge import MergedAdapter, MergeError, parse_merge_arg, parse_weights
from lora_codec.segments import encode

from .test_cli import run_cli

SETTINGS = dict(model="tiny", fit_steps=4, sample_steps=2, size=(48, 32))


@pytest.fixture(scope="module")
def two_codes(clip_path, tiny):
    a = encode(clip_path, EncodeSettings(seed=1, caption="a", **SETTINGS), backbone=tiny).data
    b = encode(clip_path, EncodeSettings(seed=2, caption="b", **SETTINGS), backbone=tiny).data
    return a, b


def test_code_merged_with_itself_at_half_weights_decodes_to_the_code_alone(two_codes, tiny):
    a, _ = two_codes
    alone = decode(a, backbone=tiny)
    merged = decode(a, backbone=tiny, merge=[a], weights=[0.5, 0.5])
    diff = np.abs(merged.frames.astype(int) - alone.frames.astype(int))
    assert merged.frames.shape == alone.frames.shape
    assert diff.max() <= 1 and diff.mean() < 0.01  # the same update, up to float rounding
    assert merged.report["decode_weights"] == [0.5, 0.5]


def test_the_updates_add(two_codes, tiny):
    """Each adapted layer adds w_a B_a A_a x + w_b B_b A_b x: the merged layer's output is the base output plus
    the weighted sum of the two codes' own updates."""
    a, b = (read_code(x) for x in two_codes)
    layer_name = "blocks.0.attn1.to_q"
    x = torch.randn(3, tiny.transformer.get_submodule(layer_name).in_features)

    def out(model):
        return model.get_submodule("base_model.model." + layer_name)(x)

    base = tiny.transformer.get_submodule(layer_name)(x)
    deltas = []
    for c in (a, b):
        ad = attach_code_adapter(tiny, c)
        try:
            deltas.append(out(ad.model) - base)
        finally:
            tiny.pipe.transformer = ad.detach()
    m = MergedAdapter(tiny.transformer, [a, b], [0.7, -0.3])
    try:
        m.set_segment(0)
        got = out(m.model) - base
    finally:
        tiny.pipe.transformer = m.detach()
    torch.testing.assert_close(got, 0.7 * deltas[0] - 0.3 * deltas[1], rtol=1e-4, atol=1e-6)
    # and the transformer is the plain one again
    assert not any("unilora" in k for k in tiny.transformer.state_dict())


def test_mismatched_merges_are_refused(two_codes, tiny, tmp_path):
    a, _ = two_codes
    code = read_code(a)
    others = {
        "backbone": dataclasses.replace(code, model="small"),
        "weights": dataclasses.replace(code, fingerprint=bytes(8)),
        "geometry": dataclasses.replace(code, width=64),
        "adapter structure": dataclasses.replace(code, proj_seed=9),
    }
    for what, other in others.items():
        with pytest.raises(MergeError, match="cannot merge"):
            decode(a, backbone=tiny, merge=[write_code(other)])
    # rank: another adapter structure (symbols must match theta_length for a valid file)
    bad = dataclasses.replace(code, rank=2)
    with pytest.raises(MergeError, match="rank"):
        decode(a, backbone=tiny, merge=[write_code(bad)])
    # the command line: exit 2, one line
    (tmp_path / "a.vov").write_bytes(a)
    (tmp_path / "c.vov").write_bytes(write_code(others["geometry"]))
    r = run_cli("decode", tmp_path / "a.vov", "-o", tmp_path / "x.mp4", "--merge", tmp_path / "c.vov")
    assert r.returncode == 2 and "cannot merge" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("decode", tmp_path / "a.vov", "-o", tmp_path / "x.mp4", "--weights", "0.5,0.5")
    assert r.returncode == 2 and "--merge" in r.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_cli_merge_with_weights(two_codes, tmp_path):
    a, b = two_codes
    (tmp_path / "a.vov").write_bytes(a)
    (tmp_path / "b:1.vov").write_bytes(b)  # a ':' in the name stays part of it
    r = run_cli("decode", tmp_path / "a.vov", "-o", tmp_path / "m.mkv", "--merge", f"{tmp_path / 'b:1.vov'}:0.25",
                "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    rep = json.loads(r.stdout)
    assert rep["decode_weights"] == [1.0, 0.25] and rep["decode_merged"] == ["a.vov", "b:1.vov"]


def test_weight_parsing():
    assert parse_weights("0.5,0.5", 2) == [0.5, 0.5]
    assert parse_weights(None, 3) == [1.0, 1.0, 1.0]
    assert parse_merge_arg("b.vov:0.5") == ("b.vov", 0.5)
    assert parse_merge_arg("b:1.vov") == ("b:1.vov", None)
    assert parse_merge_arg("dir/b.vov:-1") == ("dir/b.vov", -1.0)
    for bad in ("0.5", "a,b", "1,nan", "1,100"):
        with pytest.raises(MergeError):
            parse_weights(bad, 2)



def test_merge_errors_say_what_is_wrong(two_codes, tiny, tmp_path):
    # 'B.vov:abc' said only "no such file: B.vov:abc"; a geometry clash named one segment's length for a long
    # clip and "1 frames" for a picture
    a, b = two_codes
    (tmp_path / "a.vov").write_bytes(a)
    (tmp_path / "b.vov").write_bytes(b)
    for tail in ("abc", ""):
        r = run_cli("decode", tmp_path / "a.vov", "-o", tmp_path / "x.mp4", "--merge", f"{tmp_path / 'b.vov'}:{tail}")
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"error: --merge {tmp_path / 'b.vov'}:{tail}: the weight after ':' must be a number, e.g. "
            f"{tmp_path / 'b.vov'}:0.5"], r.stderr
    r = run_cli("decode", tmp_path / "a.vov", "-o", tmp_path / "x.mp4", "--merge", tmp_path / "nope.vov:0.5")
    assert r.returncode == 2 and r.stderr.strip() == f"error: no such file: {tmp_path / 'nope.vov'}"
    code = read_code(a)
    picture = dataclasses.replace(code, frames=1)
    with pytest.raises(MergeError, match=r"codes a 48x32 picture, the code 17 frames of 48x32 \(the geometry"):
        decode(a, backbone=tiny, merge=[write_code(picture)])
    assert not (tmp_path / "x.mp4").exists()
