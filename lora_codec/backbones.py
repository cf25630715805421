"""Backbones: the frozen video diffusion models a code is an adaptation of.

Two backbones share every class (diffusers `WanTransformer3DModel`, `AutoencoderKLWan`,
`FlowMatchEulerDiscreteScheduler`, transformers `UMT5EncoderModel`, all wired into a diffusers
`WanPipeline` so that caption embedding is the pipeline's own):

* ``wan2.1-t2v-1.3b`` - the real model, loaded with ``from_pretrained`` from the hub id (or a local
  directory), bf16 on CUDA. Needs the weights (the umt5-xxl text encoder alone is about 11 GB in bf16).
* ``tiny`` - small configs, weights drawn from a fixed seed, a byte-level tokenizer built in code.
  It builds offline in about a second and has NO visual knowledge: it exists so every code path runs
  on a CPU. Anything it decodes is noise-like; every place that shows its output says so.

``auto`` picks the real model when CUDA is available and the tiny one otherwise.

This module also owns the geometry rules (frames 4k+1, sizes multiple of 16, native size) and the
video <-> latent conversion, because they are properties of the backbone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .bitstream import TARGET_PRESETS
from .errors import BackboneError

log = logging.getLogger(__name__)

WAN_NAME = "wan2.1-t2v-1.3b"
TINY_NAME = "tiny"
SMALL_NAME = "small"
BACKBONE_NAMES = (WAN_NAME, SMALL_NAME, TINY_NAME)

# The method's adapter targets (METHOD.md section 1): q, k, v, out of self- and cross-attention.
# The code file stores this list as preset 1 (bitstream.TARGET_PRESETS).
DEFAULT_TARGETS = TARGET_PRESETS[1]


def _reference_config_path() -> Path | None:
    """The shipped Wan configuration (a copy lives in the package; the shared reference is the source)."""
    here = Path(__file__).resolve().parent / "configs" / "wan2.1-t2v-1.3b.json"
    return here if here.exists() else None


def wan_reference_config() -> dict:
    path = _reference_config_path()
    if path is None:
        raise BackboneError("the Wan reference configuration is missing from the package (configs/wan2.1-t2v-1.3b.json)")
    return json.loads(path.read_text())


def _strip_private(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


FINGERPRINT_VERSION = 2
FINGERPRINT_COMPONENTS = ("transformer", "vae", "text_encoder")


def _fingerprint_sample(t: torch.Tensor) -> bytes:
    """A strided sample of at most 4096 entries of a tensor, rounded to bf16 (so that fp32 and bf16
    loads of the same weights agree), as bytes."""
    flat = t.detach().reshape(-1)
    stride = max(1, flat.numel() // 4096)
    sample = flat[::stride][:4096].to("cpu", torch.bfloat16).contiguous()
    return sample.view(torch.int16).numpy().tobytes()


def _weights(module) -> list[tuple[str, torch.Tensor]]:
    """A component's frozen weights (state dict), without adapter tensors and with peft's wrapping
    of adapted layers undone, so that a fingerprint is the same with or without an adapter attached."""
    out = []
    for key, t in sorted(module.state_dict().items()):
        if "unilora" in key:
            continue
        if "base_layer" in key:
            key = key.replace("base_model.model.", "").replace(".base_layer", "")
        out.append((key, t))
    return out


def weight_fingerprint(name: str, pipe, *, version: int = FINGERPRINT_VERSION) -> bytes:
    """8 bytes (SHA-256 prefix) identifying a backbone's weights: `name` and the transformer, VAE and
    text encoder of `pipe` (modules with `state_dict()`).

    * version 2 (written since issue 11): per component, the tensors in a canonical order that does
      not depend on their state-dict key names - sorted by (shape, SHA-256 of the bf16 sample) - and
      each hashed as its shape and sample. A library release that renames keys keeps it.
    * version 1 (codes written before): key names, shapes and samples in key order. Still computed so
      that those codes keep decoding while the key names are unchanged.

    Raises ValueError for an unknown version."""
    h = hashlib.sha256(name.encode())
    if version == 1:
        for comp in FINGERPRINT_COMPONENTS:
            for key, t in _weights(getattr(pipe, comp)):
                h.update(f"{comp}/{key}:{tuple(t.shape)}".encode())
                h.update(_fingerprint_sample(t))
        return h.digest()[:8]
    if version != 2:
        raise ValueError(f"unknown fingerprint version {version}")
    h.update(b"lora_codec fingerprint v2")
    for comp in FINGERPRINT_COMPONENTS:
        items = []
        for _key, t in _weights(getattr(pipe, comp)):
            sample = _fingerprint_sample(t)
            items.append((tuple(t.shape), hashlib.sha256(sample).digest()))
        items.sort()
        h.update(f"{comp}:{len(items)}".encode())
        for shape, digest in items:
            h.update(repr(shape).encode())
            h.update(digest)
    return h.digest()[:8]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A coded clip's shape: frames (4k+1), height and width (multiples of 16)."""

    frames: int
    height: int
    width: int


@dataclasses.dataclass
class FitDefaults:
    """Per-backbone default fit hyper-parameters (METHOD.md section 2 for Wan; small and fast for tiny)."""

    stage1_steps: int
    stage2_steps: int
    lr1: float
    lr2: float
    batch: int
    rate_lambda: float
    ramp_steps: int
    rank: int
    theta_length: int
    sample_steps: int  # default number of sampling steps stored in the code
    shift: float
    guidance: float
    # 'random' (the paper: fresh noise each sample) or 'seed' (fit the decoder's own starting noise,
    # METHOD.md section 8); stored in each code, so the decoder needs nothing else
    noise_mode: str = "random"
    # The rest of the fit recipe (fit.FitConfig documents each; recipes.py names the presets and
    # docs/FIT.md has the measurements). The defaults here are the published recipe's.
    seed_fraction: float = 0.5  # noise mode 'mix': share of samples on the decoder's noise
    timesteps: str = "uniform"  # 'uniform' | 'logit-normal' | 'shifted' | 'grid'
    lr_schedule: str = "constant"  # 'constant' | 'cosine' (warm-up + cosine decay)
    warmup_frac: float = 0.0  # warm-up length as a fraction of all fit steps ('cosine')
    min_lr_frac: float = 0.1  # 'cosine': final learning rate as a fraction of the base rate
    init_scale: float | None = None  # theta's initial bound (None: +-0.02, METHOD.md section 1)
    init_raw_step: float | None = None  # stage 2's first raw step (None: from theta's spread, fit.initial_step)
    # The published recipe's stage-1 learning rate on this backbone (`recipes.paper`): 2e-3 is the
    # paper's, for Wan2.1 and theta length 131,072.
    paper_lr1: float = 2e-3


@dataclasses.dataclass
class Backbone:
    """A loaded backbone: the pipeline's components plus the facts a code needs."""

    name: str
    pipe: Any  # diffusers.WanPipeline (tokenizer, text_encoder, vae, transformer, scheduler)
    native: Geometry
    max_sequence_length: int
    device: torch.device
    dtype: torch.dtype  # transformer compute dtype
    defaults: FitDefaults
    gradient_checkpointing: bool = False
    # Geometry rule (a property of the backbone, see `check_geometry`): with `free_size` any size of
    # multiples of 16 whose pixel count is at most `max_pixels` (default: the native size's) is coded;
    # without it only the native size and its portrait transpose.
    free_size: bool = False
    max_pixels: int | None = None
    # Keep the text encoder on the CPU and move it to the compute device only to embed a caption
    # (own GPU with little memory). False: it stays wherever the loader put it (ZeroGPU: on CUDA).
    offload_text_encoder: bool = True
    _fingerprint: bytes | None = None
    _fingerprints: tuple | None = None
    _caption_cache: dict = dataclasses.field(default_factory=dict)

    # -- components -----------------------------------------------------------------------------
    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def scale_temporal(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def scale_spatial(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    @property
    def is_tiny(self) -> bool:
        return self.name == TINY_NAME

    # -- identity -------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> bytes:
        """8 bytes identifying the weights of all three components (transformer, VAE, text encoder):
        version 2 (`FINGERPRINT_VERSION`), independent of state-dict key names. Written into new codes."""
        if self._fingerprint is None:
            self._fingerprint = weight_fingerprint(self.name, self.pipe, version=FINGERPRINT_VERSION)
        return self._fingerprint

    @property
    def fingerprints(self) -> tuple[bytes, ...]:
        """Every fingerprint version a code made with these weights may carry (newest first): a decoder
        accepts a code whose 8 bytes equal any of them (docs/FORMAT.md, "Fingerprint")."""
        if self._fingerprints is None:
            self._fingerprints = (self.fingerprint,) + tuple(
                weight_fingerprint(self.name, self.pipe, version=v) for v in range(FINGERPRINT_VERSION - 1, 0, -1))
        return self._fingerprints

    # -- geometry -------------------------------------------------------------------------------
    def coded_geometry(self, src_frames: int, src_height: int, src_width: int,
                       size: tuple[int, int] | None = None) -> Geometry:
        """The geometry a source of `src_frames` frames of `src_width` x `src_height` pixels is coded at.

        Frames: the largest 4k+1 not above the source nor the native length. Size (`size` is
        (width, height) in pixels): `None` -> the native size, transposed for portrait sources;
        otherwise exactly `size`, checked against this backbone's rule (`check_geometry`). Either
        way the picture keeps its aspect (resize + centre crop in `video.fit_to_geometry`).
        Raises BackboneError."""
        if src_frames < 1:
            raise BackboneError("the clip has no frames")
        n = min(src_frames, self.native.frames)
        frames = ((n - 1) // self.scale_temporal) * self.scale_temporal + 1
        if size is not None:
            geom = Geometry(frames, int(size[1]), int(size[0]))
            self.check_geometry(geom)
            return geom
        if src_height > src_width:
            return Geometry(frames, self.native.width, self.native.height)
        return Geometry(frames, self.native.height, self.native.width)

    @property
    def pixel_cap(self) -> int:
        """Most pixels per frame this backbone codes (`max_pixels`, default the native size's)."""
        return int(self.max_pixels or self.native.height * self.native.width)

    def size_rule(self) -> str:
        """The size rule in words (for errors and help texts)."""
        mult = self.scale_spatial * 2
        if self.free_size:
            return (f"width and height multiples of {mult}, at most {self.pixel_cap:,} pixels per frame "
                    f"(e.g. {self.native.width}x{self.native.height}), landscape or portrait")
        return (f"{self.native.width}x{self.native.height} or {self.native.height}x{self.native.width}")

    def latent_shape(self, geom: Geometry) -> tuple[int, int, int, int]:
        z = int(self.vae.config.z_dim)
        return (
            z,
            (geom.frames - 1) // self.scale_temporal + 1,
            geom.height // self.scale_spatial,
            geom.width // self.scale_spatial,
        )

    def check_geometry(self, geom: Geometry) -> None:
        """Refuse a geometry this backbone does not code (before any allocation): frames 4k+1 up to the
        native length; sizes multiples of 16 (VAE 8x, then patch 2x); with `free_size` any such size
        within `pixel_cap` pixels per frame (landscape or portrait), else the native size or its
        portrait transpose. Raises BackboneError."""
        mult = self.scale_spatial * 2  # VAE 8x then patch 2x
        if geom.frames < 1 or (geom.frames - 1) % self.scale_temporal:
            raise BackboneError(f"frames must be 4k+1, got {geom.frames}")
        if geom.frames > self.native.frames:
            raise BackboneError(f"{geom.frames} frames is more than the {self.name} backbone codes ({self.native.frames})")
        if geom.height % mult or geom.width % mult or geom.height < mult or geom.width < mult:
            raise BackboneError(f"width and height must be positive multiples of {mult}, got {geom.width}x{geom.height}")
        if self.free_size:
            if geom.height * geom.width > self.pixel_cap:
                raise BackboneError(
                    f"{geom.width}x{geom.height} is {geom.height * geom.width:,} pixels per frame; the {self.name} "
                    f"backbone codes at most {self.pixel_cap:,} ({self.size_rule()})")
            return
        sizes = {(self.native.height, self.native.width), (self.native.width, self.native.height)}
        if (geom.height, geom.width) not in sizes:
            raise BackboneError(
                f"{geom.width}x{geom.height} is not a size the {self.name} backbone codes ({self.size_rule()})")

    # -- latents ----------------------------------------------------------------------------------
    def _latent_stats(self, device, dtype):
        cfg = self.vae.config
        z = int(cfg.z_dim)
        mean = torch.tensor(cfg.latents_mean, dtype=dtype, device=device).view(1, z, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=dtype, device=device).view(1, z, 1, 1, 1)
        return mean, std

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """[3, T, H, W] in [-1, 1] -> normalised latent [C, T', H', W'] (float32, on CPU).

        Uses the posterior mode (deterministic), normalised as `(z - latents_mean) / latents_std`."""
        vae = self.vae
        vdtype = next(vae.parameters()).dtype
        x = video.unsqueeze(0).to(self.device, vdtype)
        posterior = vae.encode(x).latent_dist
        z = posterior.mode()
        mean, std = self._latent_stats(z.device, z.dtype)
        return ((z - mean) / std)[0].float().cpu()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latent [C, T', H', W'] -> video [3, T, H, W] in [-1, 1] (float32, CPU)."""
        vae = self.vae
        vdtype = next(vae.parameters()).dtype
        z = latents.unsqueeze(0).to(self.device, vdtype)
        mean, std = self._latent_stats(z.device, z.dtype)
        video = vae.decode(z * std + mean, return_dict=False)[0]
        return video[0].float().clamp(-1, 1).cpu()

    # -- caption ---------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_caption(self, caption: str, cache_file: str | os.PathLike | None = None) -> torch.Tensor:
        """Caption -> text embedding [1, L, text_dim] (L = `max_sequence_length`, the transformer's
        dtype) on the compute device, by the pipeline's own prompt processing.

        Cached per caption in memory, and in `cache_file` (safetensors, tied to the caption and this
        backbone's fingerprint) when given: a job's later GPU calls load it instead of running the
        text encoder. With `offload_text_encoder` the text encoder (the real one is about 11 GB in
        bf16) is moved to the compute device only for this call."""
        if caption in self._caption_cache:
            return self._caption_cache[caption]
        tag = hashlib.sha256(self.fingerprint + caption.encode("utf-8")).hexdigest()[:32]
        if cache_file is not None and Path(cache_file).is_file():
            from safetensors import safe_open

            try:
                with safe_open(str(cache_file), framework="pt") as f:
                    if (f.metadata() or {}).get("caption_tag") == tag:
                        emb = f.get_tensor("embedding").to(self.device, self.dtype)
                        self._remember_caption(caption, emb)
                        return emb
            except Exception as exc:  # a damaged cache file: embed again (and rewrite it)
                log.warning("ignoring the caption cache %s (%s)", cache_file, exc)
        te = self.pipe.text_encoder
        home = next(te.parameters()).device
        moved = False
        if self.offload_text_encoder and self.device.type == "cuda" and home.type != "cuda":
            te.to(self.device)
            moved = True
        try:
            emb = self.pipe._get_t5_prompt_embeds(
                prompt=caption,
                max_sequence_length=self.max_sequence_length,
                device=self.device,
                dtype=self.dtype,
            )
        finally:
            if moved:
                te.to(home)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        if cache_file is not None:
            from safetensors.torch import save_file

            tmp = Path(str(cache_file) + ".tmp")
            save_file({"embedding": emb.detach().cpu().contiguous()}, str(tmp), metadata={"caption_tag": tag})
            os.replace(tmp, cache_file)
        self._remember_caption(caption, emb)
        return emb

    def _remember_caption(self, caption: str, emb: torch.Tensor) -> None:
        if len(self._caption_cache) > 8:
            self._caption_cache.clear()
        self._caption_cache[caption] = emb

    @property
    def is_small(self) -> bool:
        return self.name == SMALL_NAME

    def describe(self) -> str:
        if self.is_tiny:
            return (
                "tiny backbone (random seeded weights, no visual knowledge; for testing the code paths "
                "on a CPU - its reconstructions are not meaningful)"
            )
        if self.is_small:
            return SMALL_DESCRIPTION
        return f"{WAN_NAME} on {self.device.type}"


# ---------------------------------------------------------------------------------------------
# tiny


TINY_SEED = 20260301


def _byte_tokenizer(max_length: int):
    """A byte-level tokenizer built in code (no download): ids 0 pad, 1 eos, 2 unk, 3..258 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


TINY_CONFIG = {
    "transformer": dict(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=24,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        freq_dim=32,
        ffn_dim=192,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    ),
    "vae": dict(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        # Per-channel statistics of this seeded VAE's latents, measured on examples/bigbuckbunny_2s.mp4
        # (see benchmarks/calibrate_tiny.py), so that normalised latents have about unit variance.
        latents_mean=[0.127, 0.279, -0.092, 0.178],
        latents_std=[0.104, 0.102, 0.099, 0.107],
    ),
    "text_encoder": dict(
        vocab_size=259,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    ),
    "native": dict(frames=17, height=64, width=112),
    "max_sequence_length": 128,
}


def _assemble_local(name: str, cfg: dict, transformer, vae, text_encoder, *, device: torch.device,
                    dtype: torch.dtype, defaults: FitDefaults, shift: float, **fields) -> Backbone:
    """A CPU-sized backbone (tiny, small) from its three modules: frozen, moved to `device` (transformer in
    `dtype`), wired into diffusers' `WanPipeline` with the byte tokenizer and the flow-match scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    for m in (transformer, vae, text_encoder):
        m.eval().requires_grad_(False)
    if device.type != "cpu" or dtype != torch.float32:  # avoid a no-op cast (diffusers warns on it)
        transformer.to(device, dtype)
        vae.to(device)
        text_encoder.to(device)
    pipe = WanPipeline(tokenizer=_byte_tokenizer(cfg["max_sequence_length"]), text_encoder=text_encoder, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift),
                       transformer=transformer)
    return Backbone(name=name, pipe=pipe, native=Geometry(**cfg["native"]),
                    max_sequence_length=cfg["max_sequence_length"], device=device, dtype=dtype, defaults=defaults,
                    **fields)


def build_tiny(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Backbone:
    """The offline test backbone: Wan-architecture classes, small configs, weights from a fixed seed."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    device = torch.device(device)
    cfg = TINY_CONFIG
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        transformer = WanTransformer3DModel(**cfg["transformer"])
        torch.manual_seed(TINY_SEED + 1)
        vae = AutoencoderKLWan(**cfg["vae"])
        torch.manual_seed(TINY_SEED + 2)
        text_encoder = UMT5EncoderModel(UMT5Config(**cfg["text_encoder"]))
    finally:
        torch.random.set_rng_state(rng_state)
    return _assemble_local(
        TINY_NAME, cfg, transformer, vae, text_encoder, device=device, dtype=dtype, shift=3.0,
        free_size=True,  # any multiple-of-16 size up to the native 112x64's pixel count
        defaults=FitDefaults(
            stage1_steps=150,
            stage2_steps=100,
            lr1=2e-2,
            lr2=1e-2,
            batch=2,
            rate_lambda=1e-2,
            ramp_steps=40,
            rank=1,
            theta_length=2048,
            sample_steps=20,
            shift=3.0,
            guidance=1.0,
        ),
    )


# ---------------------------------------------------------------------------------------------
# small

SMALL_DESCRIPTION = (
    "small backbone (a 7 MB model with Wan's architecture, trained here on two CPU cores on a few seconds of "
    "Big Buck Bunny and four photographs; it codes 9 frames of 128x80 and gives back a very soft picture - "
    "recognisable for scenes like its training material, blurred colour for others; far below Wan2.1-1.3B)"
)
SMALL_WEIGHTS = Path(__file__).resolve().parent / "weights" / "small"

# Wan's classes at a size that trains on 2 CPU cores (scripts/train_small.py) and fits a clip in
# about a minute there. Native geometry 9 frames of 128x80 (latents 16 x 3 x 10 x 16, 120 tokens): its VAE
# was trained on clips of up to 9 frames, and measured worse past them (frames 9-16 of a 17-frame clip).
SMALL_CONFIG = {
    "transformer": dict(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=32,
        in_channels=16,
        out_channels=16,
        text_dim=64,
        freq_dim=64,
        ffn_dim=512,
        num_layers=6,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    ),
    "vae": dict(
        base_dim=16,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    ),
    "text_encoder": dict(
        vocab_size=259,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=64,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    ),
    "native": dict(frames=9, height=80, width=128),
    "max_sequence_length": 64,
    "shift": 3.0,
}


# The fit recipe measured best on held-out clips (docs/FIT.md, benchmarks/bench_fit_efficiency.py): the
# decoder's own noise ('seed'; 'random', the paper's, lost 3-4 dB at equal samples), timesteps drawn with
# the density of the decoder's sigma grid ('shifted': uniform warped by its shift 3), and a warm-up + cosine
# learning-rate decay (same PSNR as a constant rate with about a fifth fewer bytes). 600 steps x batch 2 =
# 1,200 fit samples, about half a minute on 2 CPU cores.
SMALL_DEFAULTS = FitDefaults(
    stage1_steps=400,
    stage2_steps=200,
    lr1=2e-2,
    lr2=1e-2,
    batch=2,
    rate_lambda=1e-2,
    ramp_steps=40,
    rank=1,
    theta_length=4096,
    sample_steps=20,
    shift=SMALL_CONFIG["shift"],
    guidance=1.0,
    noise_mode="seed",
    timesteps="shifted",
    lr_schedule="cosine",
    warmup_frac=0.05,
    min_lr_frac=0.1,
)


def build_small(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                weights: str | os.PathLike | None = None) -> Backbone:
    """The `small` backbone: Wan's classes at SMALL_CONFIG with the trained weights shipped in the
    package (`lora_codec/weights/small/`, made by scripts/train_small.py; MODEL_CARD.md there).

    `weights` (or LORA_CODEC_SMALL_PATH) points at another folder of the same files. Raises
    BackboneError when a file is missing or does not match the configuration."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from safetensors.torch import load_file
    from transformers import UMT5Config, UMT5EncoderModel

    folder = Path(weights or os.environ.get("LORA_CODEC_SMALL_PATH") or SMALL_WEIGHTS)
    device = torch.device(device)
    cfg = SMALL_CONFIG
    try:
        record = json.loads((folder / "small.json").read_text())
        vae_cfg = dict(cfg["vae"], latents_mean=record["latents_mean"], latents_std=record["latents_std"])
        transformer = WanTransformer3DModel(**cfg["transformer"])
        vae = AutoencoderKLWan(**vae_cfg)
        text_encoder = UMT5EncoderModel(UMT5Config(**cfg["text_encoder"]))
        for module, file in ((transformer, "transformer"), (vae, "vae"), (text_encoder, "text_encoder")):
            state = {k: v.float() for k, v in load_file(folder / f"{file}.safetensors").items()}
            module.load_state_dict(state, strict=True)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"cannot load the small backbone's weights from {folder} ({first}); "
                            "reinstall lora_codec or rebuild them with scripts/train_small.py") from None
    return _assemble_local(SMALL_NAME, cfg, transformer, vae, text_encoder, device=device, dtype=dtype,
                           shift=cfg["shift"], defaults=dataclasses.replace(SMALL_DEFAULTS))


# ---------------------------------------------------------------------------------------------
# Wan2.1-T2V-1.3B

# The default recipe carried from `small` by argument (docs/FIT.md, "Wan"): same flow-matching convention
# and loss, so the decoder's own noise, timesteps with the density of the decoder's sigma grid (shift 3) and a
# warm-up + cosine decay; 1/10 of the published recipe's 10,000 fit samples (small reached the published
# recipe's final quality in far fewer), split 2:1 between the stages as on small; the published learning
# rates (not measurable without the weights). `--recipe paper` is the published recipe.
WAN_DEFAULTS = FitDefaults(
    stage1_steps=167,
    stage2_steps=83,
    lr1=2e-3,
    lr2=1.5e-3,
    batch=4,
    rate_lambda=5e-3,
    ramp_steps=17,
    rank=1,
    theta_length=131072,
    sample_steps=50,
    shift=3.0,
    guidance=1.0,
    noise_mode="seed",
    timesteps="shifted",
    lr_schedule="cosine",
    warmup_frac=0.05,
    min_lr_frac=0.1,
)


def wan_transformer_on_meta():
    """The real Wan2.1-T2V-1.3B transformer built from the shipped config on the `meta` device:
    full architecture, no weights, no memory. Used by the structural test."""
    from diffusers import WanTransformer3DModel

    cfg = _strip_private(wan_reference_config()["transformer"])
    cfg["patch_size"] = tuple(cfg["patch_size"])
    with torch.device("meta"):
        return WanTransformer3DModel(**cfg)


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (the `spaces` package's own test: SPACES_ZERO_GPU=1/t/true)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h)
CPU_MMAP_THRESHOLD = 1 << 20


def limit_cpu_heap(threshold: int = CPU_MMAP_THRESHOLD) -> bool:
    """Serve allocations of `threshold` bytes or more with mmap, so that freed tensors go back to the
    operating system at once: the same as starting the process with MALLOC_MMAP_THRESHOLD_=threshold
    (glibc's `mallopt(M_MMAP_THRESHOLD)`, which also stops glibc raising the threshold as large
    blocks are freed; that raising is what lets the heap keep gigabytes a CPU fit no longer uses).
    Takes effect for later allocations; a no-op (False) where the C library is not glibc or the
    environment already sets MALLOC_MMAP_THRESHOLD_."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


def _module_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no")


def wan_needs(why: str) -> str:
    """What the real backbone needs, in words, after `why` it cannot run here."""
    hub_id = wan_reference_config()["hub_id"]
    return (f"{why}. The {WAN_NAME} backbone needs a CUDA GPU and its weights - from the hub ({hub_id}, "
            f"downloaded on first use) or a local copy named by LORA_CODEC_WAN_PATH (a folder in the hub's layout, "
            f"which also lets it run, very slowly, on a CPU). Without them use --model small (CPU) or --model tiny "
            f"(tests)")


WAN_PARTS = ("model_index.json", "tokenizer", "text_encoder", "vae", "transformer")  # a complete download


def wan_source(source: str | None = None, device: str | torch.device | None = None, *,
               probe_timeout: float = 10.0) -> str:
    """Where `load_wan` reads the weights from, decided in seconds (never a minute of hub retries).

    * `source`, else LORA_CODEC_WAN_PATH, when it is a folder: that folder (on any device; a CPU gets
      `load_wan`'s warning). LORA_CODEC_WAN_PATH that is not a folder is an error.
    * otherwise the hub id, which needs CUDA (or ZeroGPU): without it, refuse. With it, the hub cache's
      snapshot folder when the weights were downloaded; else, offline (HF_HUB_OFFLINE), refuse; online,
      one metadata request (`probe_timeout` seconds, no retries) must reach the hub before the download.

    Raises BackboneError saying what is needed."""
    env = os.environ.get("LORA_CODEC_WAN_PATH", "").strip()
    if env and not source and not Path(env).expanduser().is_dir():
        raise BackboneError(wan_needs(f"LORA_CODEC_WAN_PATH={env} is not a folder"))
    chosen = source or (str(Path(env).expanduser()) if env else None)
    if chosen and Path(chosen).expanduser().is_dir():
        return str(Path(chosen).expanduser())
    if chosen and (os.path.isabs(chosen) or chosen.startswith((".", "~"))):
        raise BackboneError(wan_needs(f"the weights folder {chosen} does not exist"))
    hub_id = chosen or wan_reference_config()["hub_id"]
    cuda = (torch.device(device).type == "cuda") if device is not None else (
        on_zerogpu() or torch.cuda.is_available())
    if not cuda:
        raise BackboneError(wan_needs("no CUDA GPU here and no local weights (LORA_CODEC_WAN_PATH)"))
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(hub_id, local_files_only=True))
        if all((cached / part).exists() for part in WAN_PARTS):
            return str(cached)  # the cached snapshot: loaded with no network use at all
    except Exception:  # not in the cache
        pass
    if _hub_offline():
        raise BackboneError(wan_needs(f"the weights ({hub_id}) are not (completely) in the hub cache and "
                                      "HF_HUB_OFFLINE is set"))
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(hub_id, timeout=probe_timeout)  # one request, no retries
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BackboneError(wan_needs(f"the weights ({hub_id}) are not downloaded and the hub cannot be reached "
                                      f"({first})")) from None
    return hub_id


def load_wan(source: str | None = None, device: str | torch.device | None = None) -> Backbone:
    """Load the real backbone with diffusers / transformers `from_pretrained` (hub id, or a local
    directory in the hub layout: `LORA_CODEC_WAN_PATH`).

    Placement: transformer bf16 on the compute device (float32 on a CPU) with gradient checkpointing
    available; VAE float32; text encoder bf16 -
    * on a ZeroGPU Space the whole pipeline is moved to CUDA here, at import, as ZeroGPU expects (it
      stages the weights once; GPU calls then move nothing);
    * on one's own GPU the text encoder stays on it when it takes at most a quarter of the GPU's
      memory, else it is kept on the CPU and moved only to embed a caption
      (LORA_CODEC_OFFLOAD_TEXT_ENCODER=1/0 forces either);
    * on a CPU a warning says what it costs, and `limit_cpu_heap` stops glibc from holding freed memory.

    Raises BackboneError, saying what is missing, when the weights cannot be loaded: decided in seconds
    by `wan_source` (a hub id without CUDA, offline, or not downloaded and the hub unreachable)."""
    ref = wan_reference_config()
    source = wan_source(source, device)  # fails in seconds when the weights or CUDA are missing
    zerogpu = on_zerogpu()
    device = torch.device(device or ("cuda" if (zerogpu or torch.cuda.is_available()) else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        heap = limit_cpu_heap()
        log.warning(
            "running %s on the CPU: every fit step and sampling step runs the 1.3B-parameter transformer in "
            "float32 - expect minutes per step at 832x480 and over 10 GB of memory (measured runs: "
            "docs/RESULTS.md); code a smaller size (--size) or use a CUDA GPU%s", WAN_NAME,
            "" if heap else "; start the process with MALLOC_MMAP_THRESHOLD_=1048576 to keep glibc from "
            "holding freed memory")
    try:
        from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
        from transformers import AutoTokenizer, UMT5EncoderModel

        kw: dict[str, Any] = {"local_files_only": _hub_offline()} if not Path(source).is_dir() else {}
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
        text_encoder = UMT5EncoderModel.from_pretrained(source, subfolder="text_encoder", dtype=torch.bfloat16, **kw)
        vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", dtype=torch.float32, **kw)
        transformer = WanTransformer3DModel.from_pretrained(source, subfolder="transformer", dtype=dtype, **kw)
    except (OSError, ValueError, ImportError) as exc:  # hub errors subclass OSError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(
            f"cannot load {WAN_NAME} weights from '{source}' ({first[:200]}); download them with "
            f"`huggingface-cli download {ref['hub_id']}` on a machine with network access, point "
            f"LORA_CODEC_WAN_PATH at a local copy, or use `--model tiny`, which works offline"
        ) from None
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=WAN_DEFAULTS.shift)
    for m in (transformer, vae, text_encoder):
        m.eval().requires_grad_(False)
    transformer.to(device)
    vae.to(device)
    offload = True
    if device.type == "cuda":
        forced = os.environ.get("LORA_CODEC_OFFLOAD_TEXT_ENCODER", "").strip().lower()
        if zerogpu:
            offload = False
        elif forced in ("0", "1", "false", "true", "no", "yes"):
            offload = forced in ("1", "true", "yes")
        else:
            total = torch.cuda.get_device_properties(device).total_memory
            offload = _module_bytes(text_encoder) > total // 4
        if not offload:
            text_encoder.to(device)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer)
    native = ref["video"]["native_size"]  # [width, height]
    return Backbone(
        name=WAN_NAME,
        pipe=pipe,
        native=Geometry(frames=81, height=int(native[1]), width=int(native[0])),
        max_sequence_length=int(ref["text_encoder"]["max_sequence_length"]),
        device=device,
        dtype=dtype,
        defaults=dataclasses.replace(WAN_DEFAULTS),
        gradient_checkpointing=True,
        # any multiple-of-16 size up to 832x480's pixel count (trained at 480p: smaller costs quality)
        free_size=True,
        max_pixels=int(native[0]) * int(native[1]),
        offload_text_encoder=offload,
    )


# ---------------------------------------------------------------------------------------------

_CACHE: dict[tuple, Backbone] = {}


def resolve_name(name: str | None) -> str:
    """'auto' -> the real model where CUDA is available, else 'small' (with a one-line notice)."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return WAN_NAME
        log.warning("no CUDA device: using the offline 'small' backbone (trained here on a few clips; far below Wan)")
        return SMALL_NAME
    if name not in BACKBONE_NAMES:
        raise BackboneError(f"unknown model '{name}'; choose one of: auto, {', '.join(BACKBONE_NAMES)}")
    return name


def load_backbone(name: str | None = "auto", *, device: str | torch.device | None = None, source: str | None = None) -> Backbone:
    """Load (and cache) a backbone by name: 'auto', 'small', 'tiny' or 'wan2.1-t2v-1.3b'."""
    resolved = resolve_name(name)
    key = (resolved, str(device), source)
    if key not in _CACHE:
        if resolved == SMALL_NAME:
            _CACHE[key] = build_small(torch.device(device or "cpu"), weights=source)
        elif resolved == TINY_NAME:
            dev = torch.device(device or "cpu")
            dtype = torch.bfloat16 if (dev.type == "cuda" and os.environ.get("LORA_CODEC_TINY_BF16")) else torch.float32
            _CACHE[key] = build_tiny(dev, dtype)
        else:
            _CACHE[key] = load_wan(source, device)
    return _CACHE[key]
