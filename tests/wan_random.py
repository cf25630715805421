"""A random-weight Wan2.1-T2V-1.3B directory in the hub layout, for testing the real loading path.

    python -m tests.wan_random DIR

writes `model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/` and `scheduler/` so
that `LORA_CODEC_WAN_PATH=DIR` loads it through the very code that loads the published weights
(`backbones.load_wan`: diffusers / transformers `from_pretrained`). What it holds:

* transformer: the FULL published config (`lora_codec/configs/wan2.1-t2v-1.3b.json`: 30 blocks,
  dim 1536, 1.42B parameters), weights drawn from a fixed seed like torch's default initialisation
  (uniform within 1/sqrt(fan_in)), written in bf16 as sharded safetensors with an index - generated
  shard by shard, so writing it never holds the model in memory;
* VAE: the full Wan2.1 VAE (diffusers' `AutoencoderKLWan` defaults), default random initialisation;
* text encoder: umt5 with the real width (d_model 4096, 64 heads of 64, d_ff 10240) but ONE layer
  instead of 24 and a 259-entry vocabulary (the project's byte-level tokenizer) instead of 256,384:
  the full umt5-xxl is about 11 GB in bf16, too much for the machines that run the tests. Caption
  embeddings keep their real shape (512 x 4096);
* tokenizer: the byte-level tokenizer of the tiny backbone (`backbones._byte_tokenizer`), saved with
  `save_pretrained`, which `AutoTokenizer` loads.

Nothing here has visual knowledge: it tests shapes, dtypes, loading, memory and time, not quality.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

SEED = 20261111
TEXT_ENCODER = dict(vocab_size=259, d_model=4096, d_kv=64, d_ff=10240, num_layers=1, num_heads=64,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
                    feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                    tie_word_embeddings=False)
SHARD_BYTES = 512 << 20


def _init_like_torch(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A tensor as torch's default initialisation would draw it (bf16)."""
    if name.endswith("scale_shift_table"):
        return (torch.randn(shape, generator=gen) / math.sqrt(shape[-1])).to(torch.bfloat16)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).to(torch.bfloat16)
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    return torch.ones(shape, dtype=torch.bfloat16)  # norm weights


def write_transformer(out: Path) -> int:
    """The full-config transformer: config.json plus bf16 safetensors shards and their index.
    Returns the number of parameters."""
    from safetensors.torch import save_file

    from lora_codec.backbones import wan_transformer_on_meta

    out.mkdir(parents=True, exist_ok=True)
    model = wan_transformer_on_meta()
    model.save_config(out)
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    del model
    groups, cur, size = [], [], 0
    for key, shape in shapes:
        n = math.prod(shape) * 2
        if cur and size + n > SHARD_BYTES:
            groups.append(cur)
            cur, size = [], 0
        cur.append((key, shape))
        size += n
    groups.append(cur)
    gen = torch.Generator().manual_seed(SEED)
    weight_map, total, params = {}, 0, 0
    for i, group in enumerate(groups):
        fname = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {key: _init_like_torch(key, shape, gen) for key, shape in group}
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        for key, t in tensors.items():
            weight_map[key] = fname
            total += t.numel() * 2
            params += t.numel()
        del tensors
    (out / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return params


def write_random_wan(root: str | Path) -> Path:
    """Write the whole directory (see the module docstring); returns it."""
    import diffusers
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    from lora_codec.backbones import _byte_tokenizer, wan_reference_config

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ref = wan_reference_config()
    rng = torch.random.get_rng_state()
    try:
        write_transformer(root / "transformer")
        torch.manual_seed(SEED + 1)
        vae = AutoencoderKLWan()
        vae.save_pretrained(root / "vae")
        del vae
        torch.manual_seed(SEED + 2)
        te = UMT5EncoderModel(UMT5Config(**TEXT_ENCODER)).to(torch.bfloat16)
        te.save_pretrained(root / "text_encoder")
        del te
    finally:
        torch.random.set_rng_state(rng)
    _byte_tokenizer(int(ref["text_encoder"]["max_sequence_length"])).save_pretrained(root / "tokenizer")
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }, indent=1))
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.wan_random DIR")
    print(write_random_wan(sys.argv[1]))


# ---------------------------------------------------------------------------------------------
# The CLI round trip on that directory (shared by tests/test_wan_full.py and benchmarks/bench_wan_cpu.py)

ROUNDTRIP = dict(frames=1, size=(64, 64), fit_steps=2, batch=1, sample_steps=1)


def _timed(cmd: list[str], env: dict, cwd: Path) -> dict:
    """Run `cmd`; wall seconds, peak resident memory (GNU time's maximum RSS when /usr/bin/time
    exists, else the children's ru_maxrss, an upper bound), exit status, stdout, stderr."""
    import os
    import resource
    import shutil
    import subprocess
    import time

    gnu_time = shutil.which("time") if Path("/usr/bin/time").exists() else None
    rss_file = cwd / ".rss"
    full = ([gnu_time, "-f", "%M", "-o", str(rss_file)] if gnu_time else []) + cmd
    t0 = time.perf_counter()
    proc = subprocess.run(full, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if gnu_time and rss_file.exists():
        try:
            peak_kb = int(rss_file.read_text().split()[-1])
        except (ValueError, IndexError):
            peak_kb = None
        os.unlink(rss_file)
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(wall, 1), "peak_rss_gb": None if peak_kb is None else round(peak_kb / 2**20, 2),
            "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def cli_roundtrip(wan_dir: Path, work: Path, *, unadapted: bool = True) -> dict:
    """`encode -> info -> decode` with the CLI on a synthetic 1-frame 64x64 clip, through
    LORA_CODEC_WAN_PATH=`wan_dir` (settings: `ROUNDTRIP`). With `unadapted`, the same code with every
    symbol 0 (theta = 0: the unadapted model) is decoded too, to compare. Returns per-command
    measurements (`_timed`) and the paths written."""
    import os
    from fractions import Fraction

    import numpy as np

    from lora_codec import bitstream
    from lora_codec.app_support import synthetic_frames
    from lora_codec.video import write_video

    work.mkdir(parents=True, exist_ok=True)
    r = ROUNDTRIP
    w, h = r["size"]
    clip = work / "clip.mp4"
    write_video(clip, synthetic_frames(r["frames"], h, w), Fraction(16), crf=12)
    env = dict(os.environ, LORA_CODEC_WAN_PATH=str(wan_dir), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    py = [sys.executable, "-m", "lora_codec"]
    code, out = work / "clip.vov", work / "decoded.mp4"
    runs = {"encode": _timed(py + ["encode", str(clip), "-o", str(code), "--model", "wan2.1-t2v-1.3b", "--size",
                                   f"{w}x{h}", "--steps", str(r["fit_steps"]), "--batch", str(r["batch"]),
                                   "--sample-steps", str(r["sample_steps"]), "--caption", "a test pattern",
                                   "--json"], env, work)}
    if runs["encode"]["rc"] != 0:
        return {"runs": runs}
    runs["info"] = _timed(py + ["info", str(code), "--json"], env, work)
    runs["decode"] = _timed(py + ["decode", str(code), "-o", str(out), "--json"], env, work)
    result = {"runs": runs, "code": code, "decoded": out}
    if unadapted:
        c = bitstream.read_code(code.read_bytes())
        zero = work / "unadapted.vov"
        c.symbols = np.zeros_like(c.symbols)
        zero.write_bytes(bitstream.write_code(c))
        result["unadapted"] = work / "unadapted.mp4"
        runs["decode_unadapted"] = _timed(py + ["decode", str(zero), "-o", str(result["unadapted"]), "--json"], env,
                                          work)
    return result
