"""BAGEL's network: a Qwen2 decoder with two experts per layer (mixture of transformers), a SigLIP vision
tower, and the small modules that join them. Module and tensor names are those of ema.safetensors.

Every token is routed to one expert: text and ViT tokens (and the <|vision_start|> / <|vision_end|> tokens
around a generated image) to the understanding expert (`q_proj`, `mlp`, `input_layernorm`, ...), noised
latent tokens to the generation expert (the `*_moe_gen` twins). Both experts attend in one attention over
the whole sequence. Sequences are padded batches here (the official code packs them); a boolean mask per
row says which keys a query sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from .config import CONNECTOR_ACT, TIME_FREQ_DIM, BagelConfig


def routed(x: torch.Tensor, gen: torch.Tensor | None, und_fn, gen_fn) -> torch.Tensor:
    """und_fn on the understanding tokens of x, gen_fn on the generation tokens. `gen`: a bool mask over x's
    leading (batch, token) dims, True for generation tokens; None when every token is understanding."""
    if gen is None or not bool(gen.any()):
        return und_fn(x)
    und_out, gen_out = und_fn(x[~gen]), gen_fn(x[gen])
    out = und_out.new_empty(*gen.shape, *und_out.shape[1:])
    out[~gen] = und_out
    out[gen] = gen_out
    return out


class MoTAttention(nn.Module):
    """Grouped-query attention with per-head RMSNorm on queries and keys (qk_norm), one set of projections
    and norms per expert."""

    def __init__(self, cfg):
        super().__init__()
        hidden, heads, kv_heads = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        q, kv = heads * self.head_dim, kv_heads * self.head_dim
        for expert in ("", "_moe_gen"):  # the understanding expert's projections, then the generation expert's twins
            setattr(self, f"q_proj{expert}", nn.Linear(hidden, q, bias=True))
            setattr(self, f"k_proj{expert}", nn.Linear(hidden, kv, bias=True))
            setattr(self, f"v_proj{expert}", nn.Linear(hidden, kv, bias=True))
            setattr(self, f"o_proj{expert}", nn.Linear(q, hidden, bias=False))
            setattr(self, f"q_norm{expert}", Qwen2RMSNorm(self.head_dim, eps=cfg.rms_norm_eps))
            setattr(self, f"k_norm{expert}", Qwen2RMSNorm(self.head_dim, eps=cfg.rms_norm_eps))

    def forward(self, x, cos_sin, gen, mask, past=None):
        """x (B, T, hidden); mask (B, 1, T, past + T) bool, True = attend. Returns the output and this call's
        (keys, values) after norm and rotary, which a cache keeps."""
        b, t, _ = x.shape
        q = routed(x, gen, self.q_proj, self.q_proj_moe_gen).view(b, t, self.heads, self.head_dim)
        k = routed(x, gen, self.k_proj, self.k_proj_moe_gen).view(b, t, self.kv_heads, self.head_dim)
        v = routed(x, gen, self.v_proj, self.v_proj_moe_gen).view(b, t, self.kv_heads, self.head_dim)
        q = routed(q, gen, self.q_norm, self.q_norm_moe_gen).transpose(1, 2)
        k = routed(k, gen, self.k_norm, self.k_norm_moe_gen).transpose(1, 2)
        v = v.transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *cos_sin)
        new_kv = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        out = out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return routed(out, gen, self.o_proj, self.o_proj_moe_gen), new_kv


class MoTDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = MoTAttention(cfg)
        self.mlp, self.mlp_moe_gen = Qwen2MLP(cfg), Qwen2MLP(cfg)
        self.input_layernorm = Qwen2RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.input_layernorm_moe_gen = Qwen2RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm_moe_gen = Qwen2RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, x, cos_sin, gen, mask, past=None):
        h = routed(x, gen, self.input_layernorm, self.input_layernorm_moe_gen)
        h, new_kv = self.self_attn(h, cos_sin, gen, mask, past)
        x = x + h
        h = routed(x, gen, lambda u: self.mlp(self.post_attention_layernorm(u)),
                   lambda g: self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(g)))
        return x + h, new_kv


class MoTModel(nn.Module):
    """`language_model.model`: embeddings, the decoder layers, a final norm per expert, rotary positions."""

    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = Qwen2RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.norm_moe_gen = Qwen2RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(cfg)

    def forward(self, x, positions, gen, mask, past=None):
        """x (B, T, hidden) embeddings; positions (B, T) rotary ids; `past`: per layer (keys, values) that the
        mask's first columns refer to. Returns the normed hidden states and each layer's new (keys, values)."""
        cos_sin = self.rotary_emb(x, positions)
        kvs = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos_sin, gen, mask, None if past is None else past[i])
            kvs.append(kv)
        return routed(x, gen, self.norm, self.norm_moe_gen), kvs


class LanguageModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.model = MoTModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)


class VisionEmbeddings(nn.Module):
    """SigLIP's patch embedding, stored as a Linear over a patch flattened as (kh, kw, c), plus a learned
    position per cell of the (image_size / patch)^2 grid (BAGEL runs the ViT without 2D rope)."""

    def __init__(self, cfg):
        super().__init__()
        self.patch_embedding = nn.Linear(cfg.num_channels * cfg.patch_size**2, cfg.hidden_size)
        self.position_embedding = nn.Embedding((cfg.image_size // cfg.patch_size) ** 2, cfg.hidden_size)

    def forward(self, patches, position_ids):
        return self.patch_embedding(patches) + self.position_embedding(position_ids)


class VisionEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class VisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = VisionEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, patches, position_ids):
        """patches (B, N, 3 p^2) of same-size images (full attention within each image)."""
        h = self.embeddings(patches, position_ids)
        for layer in self.encoder.layers:
            h = layer(h, None)
        return self.post_layernorm(h)


class VisionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vision_model = VisionTransformer(cfg)


class Connector(nn.Module):
    """ViT features -> the language model's width."""

    def __init__(self, vit_hidden: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(vit_hidden, hidden), nn.Linear(hidden, hidden)
        self.act = ACT2FN[CONNECTOR_ACT]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PositionTable(nn.Module):
    """A 2D sin-cos table (side^2, hidden) read by flattened ids row * side + col. The values are stored in
    ema.safetensors; `sincos_table` computes the same ones for new directories."""

    def __init__(self, side: int, hidden: int):
        super().__init__()
        self.side = side
        self.pos_embed = nn.Parameter(torch.zeros(side * side, hidden), requires_grad=False)

    def forward(self, ids):
        return self.pos_embed[ids]


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features (cos first) -> MLP (DiT's)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = TIME_FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[..., None] * freqs
        features = torch.cat([torch.cos(args), torch.sin(args)], -1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


def sincos_table(side: int, hidden: int) -> torch.Tensor:
    """The official 2D table: the first half of the channels encodes the column (DiT's meshgrid puts w
    first), the second half the row; each half is [sin, cos] of position * 10000^(-k / (hidden/4))."""
    def one_axis(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32), indexing="ij")
    table = np.concatenate([one_axis(hidden // 2, cols), one_axis(hidden // 2, rows)], axis=1)
    return torch.from_numpy(table).float()


def grid_ids(rows: int, cols: int, side: int) -> torch.Tensor:
    """Flattened position ids of a rows x cols grid in a table `side` wide (row-major, no interpolation)."""
    return (torch.arange(rows)[:, None] * side + torch.arange(cols)).reshape(-1)


@dataclass
class PromptCache:
    """The prompt's keys and values per layer, computed once and read by every flow step."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (B, kv_heads, L, head_dim) each
    valid: torch.Tensor  # (B, L) bool: real tokens (False: padding, or an empty context)
    next_position: torch.Tensor  # (B,) rotary position of whatever follows the prompt

    def with_empty(self) -> PromptCache:
        """This cache followed by as many rows of the empty context (classifier-free guidance's unconditional
        branch: no text at all, the image at position 0)."""
        kv = [(torch.cat([k, torch.zeros_like(k)]), torch.cat([v, torch.zeros_like(v)])) for k, v in self.kv]
        return PromptCache(kv, torch.cat([self.valid, torch.zeros_like(self.valid)]),
                           torch.cat([self.next_position, torch.zeros_like(self.next_position)]))

    def rows(self, n: int) -> PromptCache:
        return PromptCache([(k[:n], v[:n]) for k, v in self.kv], self.valid[:n], self.next_position[:n])


class BagelNet(nn.Module):
    """Everything in ema.safetensors."""

    def __init__(self, cfg: BagelConfig):
        super().__init__()
        self.cfg = cfg
        hidden = cfg.hidden_size
        self.language_model = LanguageModel(cfg.llm)
        self.vit_model = VisionModel(cfg.vit)
        self.connector = Connector(cfg.vit.hidden_size, hidden)
        self.vit_pos_embed = PositionTable(cfg.vit_max_patches_per_side, hidden)
        self.time_embedder = TimestepEmbedder(hidden)
        self.vae2llm = nn.Linear(cfg.latent_dim, hidden)
        self.llm2vae = nn.Linear(hidden, cfg.latent_dim)
        self.latent_pos_embed = PositionTable(cfg.max_latent_size, hidden)

    @property
    def lm(self) -> MoTModel:
        return self.language_model.model

    # ---- text ----
    def prompt_cache(self, ids: torch.Tensor, valid: torch.Tensor) -> PromptCache:
        """Causal pass over right-padded text blocks (<|im_start|> text <|im_end|>) at positions 0..L-1,
        all through the understanding expert; keeps the keys and values."""
        b, length = ids.shape
        positions = torch.arange(length, device=ids.device).expand(b, length)
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        mask = (causal[None] & valid[:, None, :])[:, None]
        _, kv = self.lm(self.lm.embed_tokens(ids), positions, None, mask)
        return PromptCache(kv, valid, valid.sum(1))

    # ---- generation ----
    def latent_embeds(self, x_t: torch.Tensor, t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Noised latent tokens (B, N, latent_dim) at times t (B,) -> the decoder's inputs (B, N, hidden)."""
        ids = grid_ids(rows, cols, self.cfg.max_latent_size).to(x_t.device)
        time = self.time_embedder(t)[:, None]
        # the sampler keeps x_t in fp32 between steps, as the official one does; the network may be bf16
        return self.vae2llm(x_t.to(self.vae2llm.weight.dtype)) + time + self.latent_pos_embed(ids)

    def flow_velocity(self, x_t, t, cache: PromptCache, rows: int, cols: int, start: int, end: int) -> torch.Tensor:
        """The velocity (B, N, latent_dim) of noised latents x_t at times t, after the cached prompt. The
        query is <|vision_start|> latents <|vision_end|>, every token at the position after the prompt,
        attending to the whole prompt and to each other (full attention)."""
        b, n, _ = x_t.shape
        dev = x_t.device
        marks = self.lm.embed_tokens(torch.tensor([start, end], device=dev))
        x = torch.cat([marks[:1].expand(b, 1, -1), self.latent_embeds(x_t, t, rows, cols).to(marks.dtype),
                       marks[1:].expand(b, 1, -1)], 1)
        positions = cache.next_position[:, None].expand(b, n + 2)
        gen = torch.zeros(b, n + 2, dtype=torch.bool, device=dev)
        gen[:, 1:-1] = True
        mask = torch.cat([cache.valid[:, None, :].expand(b, n + 2, -1),
                          torch.ones(b, n + 2, n + 2, dtype=torch.bool, device=dev)], 2)[:, None]
        h, _ = self.lm(x, positions, gen, mask, cache.kv)
        return self.llm2vae(h[:, 1:-1])

    # ---- understanding ----
    def image_embeds(self, patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Same-size images as patches (B, N, 3 p^2) -> ViT -> connector -> + 2D sin-cos positions (B, N, hidden)."""
        ids = grid_ids(rows, cols, self.cfg.vit_max_patches_per_side).to(patches.device)
        feats = self.vit_model.vision_model(patches, ids)
        return self.connector(feats) + self.vit_pos_embed(ids)

    def answer_logits(self, image: torch.Tensor, marks: torch.Tensor, text_ids: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
        """Next-token logits after an image block and a right-padded text block.

        image (B, N, hidden) from `image_embeds`; marks: the <|vision_start|>, <|vision_end|> ids. The image
        block (start, N tokens, end) sits at position 0 with full attention inside it; text token j sits at
        position 1 + j and sees the image block and the text before it. Returns (B, vocab) at each row's last
        real text token."""
        b, n, _ = image.shape
        dev = image.device
        length = text_ids.shape[1]
        mark_emb = self.lm.embed_tokens(marks)
        x = torch.cat([mark_emb[:1].expand(b, 1, -1), image.to(mark_emb.dtype), mark_emb[1:].expand(b, 1, -1),
                       self.lm.embed_tokens(text_ids)], 1)
        block = n + 2
        positions = torch.cat([torch.zeros(b, block, dtype=torch.long, device=dev),
                               torch.arange(1, length + 1, device=dev).expand(b, length)], 1)
        total = block + length
        key_valid = torch.cat([torch.ones(b, block, dtype=torch.bool, device=dev), text_valid], 1)
        allowed = torch.ones(total, total, dtype=torch.bool, device=dev).tril()
        allowed[:block, :block] = True
        mask = (allowed[None] & key_valid[:, None, :])[:, None]
        h, _ = self.lm(x, positions, None, mask)
        last = block + text_valid.sum(1) - 1
        return self.language_model.lm_head(h[torch.arange(b, device=dev), last])
