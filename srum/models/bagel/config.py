"""What a BAGEL release directory says about the model, and what the official code hard-codes instead.

The files give the language model (llm_config.json, a Qwen2 config) and the vision tower (vit_config.json,
SigLIP). Everything else is a constant of the official code (ByteDance-Seed/Bagel, app.py / inferencer.py /
eval scripts), collected here with where it comes from. See docs/bagel-format.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...io import ModelDirError

# ---- constants of the official code, not stored in any file ----
LATENT_PATCH_SIZE = 2  # latent pixels per side of one generation token
MAX_LATENT_SIZE = 64  # tokens per side of the latent position table (the hub's config.json says 32: wrong)
VIT_MIN_SIZE = 224  # the understanding transform's shortest side (app.py: ImageTransform(980, 224, 14))
VIT_MAX_PIXELS = 14 * 14 * 9 * 1024  # ImageTransform's default pixel budget
CONNECTOR_ACT = "gelu_pytorch_tanh"
TIME_FREQ_DIM = 256  # sinusoidal features fed to the timestep embedder
VAE_SCALE, VAE_SHIFT = 0.3611, 0.1159  # FLUX autoencoder: z = scale * (mean - shift)

# ---- sampling, as the official inferencer does it ----
INFER_TIMESTEP_SHIFT = 3.0
INFER_STEPS = 49  # BAGEL's num_timesteps=50 is 50 points on [1, 0]: 49 Euler steps
CFG_TEXT_SCALE = 4.0
CFG_INTERVAL = (0.4, 1.0)  # guidance on for t in (lo, hi]
CFG_RENORM_TYPE = "global"  # global | channel | text_channel
CFG_RENORM_MIN = 0.0
TRAIN_TIMESTEP_SHIFT = 1.0  # train/pretrain_unified_navit.py's default timestep_shift

# ---- the chat format ----
SPECIAL_TOKENS = {
    "bos": "<|im_start|>",  # opens every text block, and starts the answer
    "eos": "<|im_end|>",  # closes every text block
    "start_of_image": "<|vision_start|>",
    "end_of_image": "<|vision_end|>",
}
QUESTION = "Does the image show {}? Answer the question using a single word or phrase."  # MME's suffix
ANSWERS = ("Yes", "No")


@dataclass(frozen=True)
class AEShape:
    """The FLUX autoencoder's widths, as read from the tensors of ae.safetensors."""

    in_channels: int
    out_channels: int
    widths: tuple[int, ...]  # channels per resolution level (BFL: ch * ch_mult)
    num_res_blocks: int
    z_channels: int

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.widths) - 1)


@dataclass(frozen=True)
class BagelConfig:
    llm: object  # transformers Qwen2Config, qk_norm and untied embeddings implied
    vit: object  # transformers SiglipVisionConfig with the layer count the weights hold (file says one more)
    ae: AEShape
    max_latent_size: int = MAX_LATENT_SIZE

    @property
    def hidden_size(self) -> int:
        return self.llm.hidden_size

    @property
    def head_dim(self) -> int:
        return self.llm.hidden_size // self.llm.num_attention_heads

    @property
    def latent_channels(self) -> int:
        return self.ae.z_channels

    @property
    def latent_dim(self) -> int:
        """Width of one generation token: a 2 x 2 patch of latent pixels."""
        return LATENT_PATCH_SIZE**2 * self.ae.z_channels

    @property
    def latent_downsample(self) -> int:
        """Image pixels per side of one generation token (16 for BAGEL)."""
        return self.ae.downsample * LATENT_PATCH_SIZE

    @property
    def vit_max_patches_per_side(self) -> int:
        """Row stride of the ViT's flattened position ids: 980 // 14 = 70 for the release."""
        return self.vit.image_size // self.vit.patch_size

    @property
    def max_image_side(self) -> int:
        """The largest image side the latent position table covers."""
        return self.max_latent_size * self.latent_downsample


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{path.parent}: missing {path.name} (a BAGEL release directory has it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"{path}: expected a JSON object")
    return data


def llm_config(raw: dict, path: Path):
    """A Qwen2Config from llm_config.json. The official loader forces qk_norm and untied embeddings whatever
    the file says; a separate lm_head is what ema.safetensors holds."""
    from transformers import Qwen2Config

    keep = {k: v for k, v in raw.items() if not k.startswith("_") and k not in ("architectures", "auto_map")}
    try:
        cfg = Qwen2Config(**keep)
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{path}: not a Qwen2 config ({e})") from None
    cfg.tie_word_embeddings = False
    if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ModelDirError(f"{path}: hidden_size / num_attention_heads / num_key_value_heads do not divide")
    return cfg


def vit_config(raw: dict, path: Path):
    """A SiglipVisionConfig from vit_config.json, with one layer less: the official loader drops the last
    layer (it takes the penultimate layer's features; the weights hold only those layers)."""
    from transformers import SiglipVisionConfig

    keep = {k: v for k, v in raw.items() if not k.startswith("_") and k not in ("architectures", "auto_map")}
    try:
        cfg = SiglipVisionConfig(**keep)
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{path}: not a SigLIP vision config ({e})") from None
    if cfg.num_hidden_layers < 2:
        raise ModelDirError(f"{path}: num_hidden_layers {cfg.num_hidden_layers}; BAGEL uses all but the last")
    cfg.num_hidden_layers -= 1
    cfg._attn_implementation = "sdpa"
    return cfg
