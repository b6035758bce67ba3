"""The built-in Janus's image tokenizer: a `JanusVQVAE` trained on CompWorld renders.

Renders are flat-coloured shapes on black, so the f x f patches they contain come from a small set
(about 2,300 in 100 k renders at f = 4, most of them far more often than the rest). Instead of learning a
codebook by straight-through vector quantisation (slow on two cores: 20 % of renders survived a round
trip after 300 steps), the patch dictionary names each patch's code outright: code k is the k-th most
frequent patch. The encoder then learns to name the code of every patch (a classification against the
normalised codebook) and the decoder to draw a patch from its code. Both are the ordinary `JanusVQVAE`
modules, so `encode` / `decode` in transformers are what tokenise and draw images afterwards. The training
loop is `srum.pretrain.tokenizer.train_tokenizer`.

Janus's `decode` reads L2-normalised code vectors while its `encode` compares unnormalised ones; the
codebook is trained and stored unit-norm, so both agree.
"""

from __future__ import annotations

import collections
import math
import random

import numpy as np
import torch

from ..world import draw, layout, passes, training_spec

IGNORE = -100


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], Janus's pixel range."""
    return torch.as_tensor(images).float().permute(0, 3, 1, 2) / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def patches(images: np.ndarray, f: int) -> np.ndarray:
    """(B, H, W, 3) -> (B, (H/f)*(W/f), f*f*3) in raster order, the token order of the VQ grid."""
    b, h, w, c = images.shape
    return images.reshape(b, h // f, f, w // f, f, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // f) * (w // f), f * f * c)


def renders(seed: int, step: int, n: int, scenes: bool = False) -> tuple[np.ndarray, list]:
    """Batch `step` of the tokenizer's data: n renders of training-stream prompts (never held-out ones)."""
    rng = random.Random(f"vq/{seed}/{step}")
    specs = [training_spec(seed, step * n + i, scenes=scenes) for i in range(n)]
    return np.stack([draw(layout(s, rng)) for s in specs]), specs


class PatchDictionary:
    """Patch bytes -> code, for the `size` most frequent patches of `n_renders` renders."""

    def __init__(self, seed: int, n_renders: int, size: int, f: int):
        count = collections.Counter()
        for step in range(math.ceil(n_renders / 256)):
            count.update(p.tobytes() for p in patches(renders(seed + 7919, step, 256)[0], f).reshape(-1, f * f * 3))
        self.code = {p: k for k, (p, _) in enumerate(count.most_common(size))}
        self.f, self.seen = f, len(count)

    def targets(self, images: np.ndarray) -> torch.Tensor:
        """(B, tokens) codes; IGNORE for a patch outside the dictionary."""
        p = patches(images, self.f)
        return torch.tensor([[self.code.get(x.tobytes(), IGNORE) for x in row] for row in p], dtype=torch.long)


@torch.no_grad()
def round_trip(vq, images: np.ndarray) -> np.ndarray:
    """Encode and decode with transformers' own JanusVQVAE methods: what the generator's tokens look like."""
    tokens = vq.encode(to_unit(images)).image_tokens.view(len(images), -1)
    return to_uint8(vq.decode(tokens))


def round_trip_pass_rate(vq, seed: int, n: int, batch: int = 100) -> float:
    """Share of renders of n seeded training-stream prompts that still pass the oracle after a round trip."""
    ok = 0
    for step in range(math.ceil(n / batch)):
        imgs, specs = renders(seed, 1_000_000 + step, min(batch, n - step * batch))
        ok += sum(passes(img, s) for img, s in zip(round_trip(vq, imgs), specs))
    return ok / n
