"""The built-in unified model's network: a toy BAGEL-style mixture-of-transformers (MoT).

One sequence, shared self-attention, two sets of expert weights chosen by token type:
- understanding expert: text tokens, and clean image patches from a small conv vision encoder;
- generation expert: noisy image patches (rectified flow), with a timestep embedding.
Understanding reads a yes/no answer from the LM head; generation predicts the flow velocity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..world.oracle import MAP_COLORS, MAP_SHAPES
from ..world.spec import BACKGROUND_DISTANCE, COLORS
from . import regions


class MotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int = 32
    patch: int = 4
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    mlp_ratio: int = 4
    vocab_size: int = 34
    gen_text_len: int = 12  # <bos> + longest prompt (10 words) + slack
    und_text_len: int = 18  # <bos> + question around the prompt + <ans>
    vision_channels: int = 32
    refine_channels: int = 32  # conv refinement of the generated velocity at full resolution; 0 = none
    vision_palette: bool = False  # understanding also sees each pixel's nearest paint (a fixed colour codebook)
    vision_blocks: int = 0  # residual 3x3 conv blocks in the vision encoder before patching (wider receptive field)
    und_grounding: bool = False  # a head that reads each understanding image token's object (colour, shape) — pretraining only
    und_regions: int = Field(0, ge=0)  # object tokens from a segmenter beside the image patches (srum/models/regions.py); 0 = none

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def patch_dim(self) -> int:
        return self.patch * self.patch * 3


class Expert(nn.Module):
    """One expert's half of a transformer layer: everything except the attention operation itself."""

    def __init__(self, d: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))


class MoTLayer(nn.Module):
    def __init__(self, cfg: MotConfig):
        super().__init__()
        self.heads = cfg.n_heads
        self.und = Expert(cfg.d_model, cfg.mlp_ratio)
        self.gen = Expert(cfg.d_model, cfg.mlp_ratio)

    def forward(self, parts: list[tuple[torch.Tensor, Expert]], mask: torch.Tensor) -> list[torch.Tensor]:
        """parts: the sequence as consecutive (tokens, expert) segments; attention spans all of them."""
        q, k, v = zip(*(self._qkv(x, e) for x, e in parts))
        o = F.scaled_dot_product_attention(torch.cat(q, 2), torch.cat(k, 2), torch.cat(v, 2), attn_mask=mask)
        outs, start = [], 0
        for x, e in parts:
            L = x.shape[1]
            h = o[:, :, start : start + L].transpose(1, 2).reshape(x.shape)
            x = x + e.proj(h)
            outs.append(x + e.mlp(e.norm2(x)))
            start += L
        return outs

    def _qkv(self, x: torch.Tensor, e: Expert):
        B, L, D = x.shape
        qkv = e.qkv(e.norm1(x)).view(B, L, 3, self.heads, D // self.heads)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, L, dh)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], -1)


def block_mask(blocks: list[int], key_pad: torch.Tensor) -> torch.Tensor:
    """Bool (B, 1, L, L): a query attends to non-pad keys of its own or an earlier block.
    blocks: block id per position (same for every row); key_pad: (B, L) True where padding."""
    b = torch.tensor(blocks, device=key_pad.device)
    allowed = b[None, :] <= b[:, None]  # (Lq, Lk)
    return (allowed[None] & ~key_pad[:, None, :])[:, None]


class MotNet(nn.Module):
    def __init__(self, cfg: MotConfig):
        super().__init__()
        self.cfg = cfg
        d, n_img = cfg.d_model, cfg.grid**2
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.text_pos = nn.Parameter(torch.zeros(max(cfg.gen_text_len, cfg.und_text_len), d))
        c = cfg.vision_channels
        # Understanding sees clean pixels through its own small encoder (BAGEL: a ViT for understanding,
        # a VAE latent for generation): two 3x3 convs keep the pixel detail that shape judgements need.
        self.vision = nn.Sequential(
            nn.Conv2d(3 + len(PALETTE) * cfg.vision_palette, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, d, cfg.patch, stride=cfg.patch),
        )
        # Residual blocks whose last conv starts at zero: added to a trained encoder, they change nothing at first.
        self.vision_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1), nn.GELU())
            for _ in range(cfg.vision_blocks)
        )
        for blk in self.vision_blocks:
            nn.init.zeros_(blk[2].weight)
            nn.init.zeros_(blk[2].bias)
        self.und_img_pos = nn.Parameter(torch.zeros(n_img, d))
        if cfg.und_regions:
            # A region's features already say where it is (its box), so its token needs no position embedding.
            self.region_in = nn.Sequential(nn.Linear(regions.FEATURES, d), nn.GELU(), nn.Linear(d, d))
        self.gen_in = nn.Linear(cfg.patch_dim, d)
        self.gen_img_pos = nn.Parameter(torch.zeros(n_img, d))
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.layers = nn.ModuleList(MoTLayer(cfg) for _ in range(cfg.n_layers))
        self.und_norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, cfg.vocab_size)
        if cfg.und_grounding:
            # Dense supervision for pretraining (like a VLM's grounding data): which object, by the world's
            # rules, each image token shows. Judging never reads it.
            self.ground_head = nn.Linear(d, len(MAP_COLORS) + len(MAP_SHAPES))
        self.gen_norm = nn.LayerNorm(d)
        self.gen_out = nn.Linear(d, cfg.patch_dim)
        if cfg.refine_channels:
            r, f = cfg.refine_channels, 8
            # Like BAGEL's VAE decoder around the MoT: convs at full resolution see across patch borders,
            # which per-patch linear outputs cannot; the last conv starts at zero (no change at init).
            self.gen_feat = nn.Linear(d, cfg.patch * cfg.patch * f)
            self.gen_refine = nn.Sequential(
                nn.Conv2d(6 + f, r, 3, padding=1), nn.GELU(), nn.Conv2d(r, r, 3, padding=1), nn.GELU(),
                nn.Conv2d(r, 3, 3, padding=1),
            )
            nn.init.zeros_(self.gen_refine[-1].weight)
            nn.init.zeros_(self.gen_refine[-1].bias)
        for p in (self.text_pos, self.und_img_pos, self.gen_img_pos):
            nn.init.normal_(p, std=0.02)
        nn.init.zeros_(self.gen_out.weight)
        nn.init.zeros_(self.gen_out.bias)

    def _text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(ids) + self.text_pos[: ids.shape[1]]

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, text_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
        """x_t: (B, N, patch_dim) noisy patches; t: (B,) in [0, 1]; text_ids: (B, Lt) -> velocity (B, N, patch_dim)."""
        text = self._text(text_ids)
        img = self.gen_in(x_t) + self.gen_img_pos + self.time_mlp(timestep_embedding(t, self.cfg.d_model))[:, None]
        key_pad = torch.cat([text_ids == pad_id, torch.zeros(img.shape[:2], dtype=torch.bool, device=img.device)], 1)
        mask = block_mask([0] * text.shape[1] + [1] * img.shape[1], key_pad)
        for layer in self.layers:
            text, img = layer([(text, layer.und), (img, layer.gen)], mask)
        h = self.gen_norm(img)
        v = self.gen_out(h)
        if not self.cfg.refine_channels:
            return v
        p, size = self.cfg.patch, self.cfg.image_size
        maps = [unpatchify(x, p, size, x.shape[-1] // (p * p)).permute(0, 3, 1, 2) for x in (x_t, v, self.gen_feat(h))]
        dv = self.gen_refine(torch.cat(maps, 1)).permute(0, 2, 3, 1)
        return v + patchify(dv, p)

    def understand(self, images: torch.Tensor, text_ids: torch.Tensor, pad_id: int, grounding: bool = False):
        """images: (B, 3, H, W) in [-1, 1]; text_ids: (B, Lt) -> LM logits at every text position (B, Lt, V).
        Image tokens see the image; text is causal over image + earlier text, like a VLM's decoder.
        grounding=True: also the grounding head's logits (colours + shapes) per object token (B, und_regions, .)
        or, without object tokens, per patch token (B, grid^2, .)."""
        img = self._see(images).flatten(2).transpose(1, 2) + self.und_img_pos
        img_pad = torch.zeros(img.shape[:2], dtype=torch.bool, device=img.device)
        if self.cfg.und_regions:
            feats, no_region = regions.region_features(nearest_paint(images), self.cfg.und_regions)
            img = torch.cat([img, self.region_in(feats.to(img))], 1)
            img_pad = torch.cat([img_pad, no_region.to(img.device)], 1)
        x = torch.cat([img, self._text(text_ids)], 1)
        key_pad = torch.cat([img_pad, text_ids == pad_id], 1)
        mask = block_mask([0] * img.shape[1] + list(range(1, text_ids.shape[1] + 1)), key_pad)
        for layer in self.layers:
            (x,) = layer([(x, layer.und)], mask)
        h = self.und_norm(x)
        logits = self.lm_head(h[:, img.shape[1] :])
        if not grounding:
            return logits
        # With object tokens, grounding reads them (each one is a component, so its object is well defined);
        # otherwise every patch token.
        n = self.cfg.grid**2
        return logits, self.ground_head(h[:, n : img.shape[1]] if self.cfg.und_regions else h[:, :n])

    def _see(self, images: torch.Tensor) -> torch.Tensor:
        """The understanding expert's vision encoder: (B, 3, H, W) in [-1, 1] -> (B, d, grid, grid)."""
        x = torch.cat([images, palette_onehot(images)], 1) if self.cfg.vision_palette else images
        x = self.vision[:4](x)
        for blk in self.vision_blocks:
            x = x + blk(x)
        return self.vision[4](x)

    def answer_logits(self, images: torch.Tensor, text_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
        """LM logits at the <ans> token (the last non-pad one): (B, V)."""
        logits = self.understand(images, text_ids, pad_id)
        last = (text_ids != pad_id).sum(1) - 1
        return logits[torch.arange(logits.shape[0], device=logits.device), last]


# The world's paints and its background: a fixed codebook, like the image tokenizer a VLM ships with. It
# tells the encoder which paint each pixel is nearest to (and "none" past the world's distance cut-off);
# the encoder still has to learn objects, sizes, shapes and relations from renders.
PALETTE = torch.tensor([(0, 0, 0), *COLORS.values()], dtype=torch.float32)


def palette_onehot(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, len(PALETTE), H, W) one-hot of the nearest paint (all zero: none)."""
    idx, near = _nearest(images)
    onehot = F.one_hot(idx, len(PALETTE)).float() * near[..., None]
    return onehot.permute(0, 3, 1, 2).to(images.dtype)


def nearest_paint(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W) int64: the nearest of the world's colours (0..5 in COLORS order),
    or -1 where the nearest paint is black or none is within the world's distance cut-off (background)."""
    idx, near = _nearest(images)
    return torch.where(near & (idx > 0), idx - 1, -1)


def _nearest(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel: (index into PALETTE, whether it is within the cut-off), both (B, H, W)."""
    rgb = (images.detach().float() + 1) * 127.5
    dist = torch.cdist(rgb.permute(0, 2, 3, 1).reshape(-1, 3), PALETTE.to(rgb.device))
    near, idx = dist.min(-1)
    B, _, H, W = images.shape
    return idx.view(B, H, W), (near <= BACKGROUND_DISTANCE).view(B, H, W)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, H, W, 3) -> (B, (H/p)*(W/p), p*p*3)."""
    B, H, W, C = x.shape
    return x.reshape(B, H // p, p, W // p, p, C).permute(0, 1, 3, 2, 4, 5).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(x: torch.Tensor, p: int, size: int, channels: int = 3) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, H, W, C)."""
    B, g = x.shape[0], size // p
    return x.reshape(B, g, g, p, p, channels).permute(0, 1, 3, 2, 4, 5).reshape(B, size, size, channels)
