"""Still pictures (issue 14): PNG / JPEG / WebP inputs become one-frame codes that decode to a picture, read as a
viewer shows them (EXIF orientation, transparency), and `compare` measures them against still-image codecs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lora_codec import stills
from lora_codec.codec import EncodeSettings, decode
from lora_codec.errors import LoraCodecError

from .conftest import synthetic_frames
from .test_cli import run_cli


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return synthetic_frames(frames=1, height=90, width=160, seed=7)[0]


@pytest.mark.parametrize("fmt, ext", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_picture_round_trips_as_a_picture(picture, tmp_path, fmt, ext):
    src = tmp_path / f"photo{ext}"
    Image.fromarray(picture).save(src, format=fmt, **({} if fmt == "PNG" else {"quality": 95}))
    code, out = tmp_path / "photo.vov", tmp_path / "back.png"
    r = run_cli("encode", src, "-o", code, "--model", "tiny", "--steps", "3", "--sample-steps", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    enc = json.loads(r.stdout)
    assert enc["frames"] == 1 and enc["segments"] == 1 and (enc["width"], enc["height"]) == (112, 64)
    assert (enc["src_width"], enc["src_height"]) == (160, 90)
    assert any("still picture" in n for n in enc["notes"])
    r = run_cli("decode", code, "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (112, 64) and img.mode == "RGB"


def test_reader_shows_the_picture_as_a_viewer_does(picture, tmp_path):
    # EXIF orientation 6 (rotate 90 degrees clockwise to view): a landscape file shown as portrait
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(picture).save(path, quality=95, exif=exif)
    clip = stills.read_image(path)
    assert clip.frames.shape == (1, 160, 90, 3) and clip.src_frames == 1
    assert any("EXIF orientation" in n for n in clip.notes)
    # transparency is composited on white
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :15, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    clip = stills.read_image(tmp_path / "alpha.png")
    assert tuple(clip.frames[0, 5, 5]) == (200, 0, 0) and tuple(clip.frames[0, 5, 25]) == (255, 255, 255)
    assert any("on white" in n for n in clip.notes)
    # 16-bit greyscale is scaled, not clipped
    Image.fromarray((np.arange(64 * 16).reshape(16, 64) * 64).astype(np.uint16)).save(tmp_path / "g16.png")
    clip = stills.read_image(tmp_path / "g16.png")
    assert clip.frames.max() > 200 and clip.frames.min() == 0
    # what is and what is not a still
    assert stills.is_still_image(path) and not stills.is_still_image(tmp_path / "missing.png")
    frames = [Image.fromarray(picture), Image.fromarray(255 - picture)]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], duration=100)
    assert not stills.is_still_image(tmp_path / "anim.webp")  # an animation is not a still
    with pytest.raises(LoraCodecError, match="start"):
        stills.read_input(path, start_seconds=1.0)


def test_still_baselines_at_equal_bytes(picture, tmp_path, tiny):
    from lora_codec.evaluation import compare, format_table
    from lora_codec.segments import encode

    avail = stills.available_still_codecs()
    assert avail["jpeg"] and avail["webp"]  # and AVIF where Pillow's build has it
    for codec in [c for c, ok in avail.items() if ok]:
        r = stills.encode_still_at_budget(picture, codec, 2000)
        assert r.fits and r.bytes <= 2000 and r.frames.shape == (1, 90, 160, 3)
    src = tmp_path / "p.png"
    Image.fromarray(picture).save(src)
    res = encode(src, EncodeSettings(model="tiny", fit_steps=3, sample_steps=2), backbone=tiny)
    out = compare(src, [res.data], curve=None, backbone=tiny, perceptual=False)
    assert out["still"] is True
    base = [r for r in out["rows"] if r["kind"] == "baseline"]
    assert {r["codec"] for r in base} == {c for c, ok in avail.items() if ok}
    assert all(r["bytes"] <= len(res.data) or not r["fits"] for r in base)
    assert all(r["psnr_rgb"] is not None and r["ms_ssim"] is not None for r in out["rows"])
    table = format_table(out)
    assert "picture files" in table
    # a picture has no rate per second and is not "1 frames, 1 fps" (both once shown)
    assert "kbit/s" not in table and "1 frames" not in table and "coded geometry 112x64, one picture;" in table
    with pytest.raises(LoraCodecError, match="one picture"):
        compare(tmp_path / "v.mkv" if _video(tmp_path / "v.mkv") else None, [_video_code(tmp_path, tiny)],
                codecs="jpeg", curve=None, backbone=tiny, perceptual=False)
    dec = decode(res.data, backbone=tiny)
    assert dec.frames.shape == (1, 64, 112, 3)


def _video(path) -> bool:
    from fractions import Fraction

    from lora_codec.video import write_video

    write_video(path, synthetic_frames(frames=5, height=40, width=56), Fraction(16))
    return True


def _video_code(tmp_path, tiny) -> bytes:
    from lora_codec.segments import encode

    return encode(tmp_path / "v.mkv", EncodeSettings(model="tiny", fit_steps=2, sample_steps=1, size=(48, 32)),
                  backbone=tiny).data


@pytest.mark.parametrize("size", [(1, 1), (112, 64)])
def test_a_picture_that_needs_no_crop_is_converted_without_a_torch_warning(tmp_path, size):
    # a 1x1 PNG (or one already at the coded size) reached torch as Pillow's read-only array, and torch's
    # "The given NumPy array is not writable" warning was shown to the user as a note
    import warnings

    from lora_codec.video import fit_to_geometry, video_to_tensor

    path = tmp_path / "p.png"
    Image.new("RGB", size, (200, 10, 10)).save(path)
    clip = stills.read_image(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = fit_to_geometry(clip.frames, 1, 64, 112)
        x = video_to_tensor(frames)
    assert frames.shape == (1, 64, 112, 3) and tuple(frames[0, 30, 50]) == (200, 10, 10)
    assert x.shape == (3, 1, 64, 112)


def test_the_cli_speaks_of_a_picture_not_of_frames_and_rates(picture, tmp_path):
    # a still was reported as "1 frames at 1 fps", "1 frames 112x64" and with a rate in kbit/s (per second of
    # a picture); a video keeps its frames and rate
    src, code = tmp_path / "photo.png", tmp_path / "photo.vov"
    Image.fromarray(picture).save(src)
    r = run_cli("encode", src, "-o", code, "--model", "tiny", "--steps", "3", "--sample-steps", "2", "--caption", "x",
                "--no-measure")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "note: coded geometry 112x64, one picture (source 160x90)" in r.stderr
    wrote = [ln for ln in r.stdout.splitlines() if ln.startswith("wrote ")]
    assert len(wrote) == 1 and "kbit/s" not in wrote[0] and "bits per pixel" in wrote[0], r.stdout
    r = run_cli("info", code)
    assert r.returncode == 0 and "picture:  112x64 (a one-frame code), from a 160x90 source" in r.stdout
    assert "kbit/s" not in r.stdout and "1 frames" not in r.stdout
    r = run_cli("decode", code, "-o", tmp_path / "back.png")
    assert r.returncode == 0 and "wrote " in r.stdout and ": a 112x64 picture in " in r.stdout, r.stdout


def test_the_app_texts_speak_of_a_picture(picture, tmp_path, tiny):
    # the app said "1 frames 112x64 at 1 fps (1.00 s) - 5.25 kbit/s" for a picture's code, "Decoded 1 frames",
    # and "1 frames 112x64, 1.00 s" under the byte table; a video keeps its frames, seconds and rate
    from lora_codec import units
    from lora_codec.app import text as T
    from lora_codec.app_support import byte_table
    from lora_codec.codec import describe
    from lora_codec.segments import encode

    assert units.shown_frames(1, 112, 64) == "a 112x64 picture" and units.shown_frames(17, 112, 64) == "17 frames 112x64"
    assert units.rate_words(1000, 1.0, 1) == "" and units.rate_words(1000, 1.0, 17) == "8 kbit/s"
    src = tmp_path / "photo.png"
    Image.fromarray(picture).save(src)
    info = describe(encode(src, EncodeSettings(model="tiny", fit_steps=2, sample_steps=2), backbone=tiny).data)
    md = T.code_markdown(info)
    assert "a 112x64 picture - " in md and "kbit/s" not in md and "1 frames" not in md and "bits per pixel" in md
    assert byte_table(info)[0][-1][-1] == "a 112x64 picture"
    dec = T.decoded_markdown({**info, "decode_steps": 2}, 0.5, None)
    assert dec.startswith("**Decoded** a 112x64 picture with 2 sampling steps")
    video = {**info, "frames": 17, "seconds": 17 / 16, "fps": 16.0}
    assert "17 frames 112x64 at 16 fps (1.06 s) - " in T.code_markdown(video) and "kbit/s" in T.code_markdown(video)
    assert byte_table(video)[0][-1][-1] == "17 frames 112x64, 1.06 s"
