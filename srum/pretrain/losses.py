"""Stage 2's data and losses: generation and understanding batches (pure functions of (seed, step)) and the
losses the built-in learns from them."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from ..world import layout, passes, training_spec
from ..world.corrupt import global_noise
from ..world.examples import token_objects, und_example
from ..world.scenes import shows_heldout
from ..world.oracle import MAP_COLORS, MAP_SHAPES, describe
from ..world.render import draw
from .config import JanusPretrainConfig
from .patches import IGNORE


def gen_batch(cfg: JanusPretrainConfig, step: int) -> tuple[np.ndarray, list[str], list[bool]]:
    """Renders of training-stream prompts, their prompts, and which rows drop the prompt (for CFG)."""
    rng = random.Random(f"janus-gen/{cfg.seed}/{step}")
    specs = [training_spec(cfg.seed, step * cfg.gen_batch + i, scenes=cfg.scenes) for i in range(cfg.gen_batch)]
    imgs = np.stack([draw(layout(s, rng)) for s in specs])
    return imgs, [s.prompt for s in specs], [rng.random() < cfg.cond_drop for _ in specs]


def und_batch(cfg: JanusPretrainConfig, step: int, model) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(images, prompts asked about, yes/no labels), labelled by the world's rules."""
    rng = random.Random(f"janus-und/{cfg.seed}/{step}")
    imgs, texts, labels = [], [], []
    edit_rows, edit_specs = [], []
    for i in range(cfg.und_batch):
        spec = training_spec(cfg.seed + 1, step * cfg.und_batch + i, scenes=cfg.scenes)
        if rng.random() < cfg.und_token_edits:
            edit_rows.append(len(imgs)), edit_specs.append(spec)
            imgs.append(draw(layout(spec, rng)))
            texts.append(spec.prompt)
            labels.append(None)
            continue
        img, text, label, _ = und_example(rng, spec, cfg.und_resized, cfg.und_edited, tuple(cfg.und_edits), 0.0, cfg.und_blobs,
                                          cfg.und_free_layouts, cfg.und_reversed_relations, scenes=cfg.scenes)
        imgs.append(img), texts.append(text), labels.append(label)
    if edit_rows:
        edited = token_edit(model, np.stack([imgs[i] for i in edit_rows]), rng)
        for i, spec, img in zip(edit_rows, edit_specs, edited):
            imgs[i] = global_noise(img, rng)
            if cfg.scenes and shows_heldout(imgs[i]):  # an edit that drew a held-out scene: its clean render instead
                imgs[i] = draw(layout(spec, rng))
            labels[i] = passes(imgs[i], spec)
    return np.stack(imgs), texts, np.array(labels, np.float32)


def token_edit(model, images: np.ndarray, rng: random.Random) -> np.ndarray:
    """Renders with one to three of their image tokens replaced by the token of another position of the same
    image (an object's patch where background was, an edge of one shape on another), decoded by the VQ."""
    tokens = model.encode(images)
    for row in tokens:
        for _ in range(rng.choice([1, 1, 2, 3])):
            row[rng.randrange(len(row))] = row[rng.randrange(len(row))]
    return model.decode(tokens)


# ---- stage 2: losses ----


def generation_loss(model, imgs: np.ndarray, prompts: list[str], drop: list[bool]) -> torch.Tensor:
    tokens = torch.as_tensor(model.encode(imgs))
    logits = model.image_logits(prompts, tokens, drop)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.to(logits.device).reshape(-1))


def understanding_loss(model, imgs: np.ndarray, texts: list[str], labels: np.ndarray, describe_coef: float = 0.0,
                       ground=None, relations: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(class-balanced yes/no loss, caption loss on true captions, yes/no accuracy, description loss or None).

    With `describe_coef`, every question is followed by its answer and "it shows <what the oracle sees>"
    (`oracle.describe`), and the description is learned by next-token prediction: every example, positive or
    negative, then teaches the model to read counts, colours and shapes token by token, where the yes/no answer
    teaches one bit. Only the answer position is ever read when judging. With `relations`, the description also
    names how the objects stand ("a red square to the left of a blue circle").

    With `ground` (a GroundingHead), the vision tower's output at every patch also learns which object it shows,
    by the world's rules (`examples.token_objects`: colour, and the shape its whole component has): the features
    reach the language model already knowing their objects, where the yes/no bit teaches that slowly.
    (Returns the grounding loss, or None, last.)"""
    questions = [model.question(t) for t in texts]
    tails = [f"{'yes' if y > 0.5 else 'no'} it shows {describe(img, relations)}" for img, y in zip(imgs, labels)] if describe_coef else None
    inputs = {k: v.to(model.device) for k, v in model.understanding_inputs(imgs, questions, tails).items()}
    vision = model.net.model.get_image_features(inputs.pop("pixel_values"), return_dict=True)
    logits = model.net(**inputs, mm_encoder_outputs={"image": vision}).logits.float()
    grounded = ground.loss(vision.last_hidden_state, imgs, model.image_size // model.grid) if ground is not None else None
    ids = inputs["input_ids"]
    n_tail = torch.tensor([len(model.tok(t, add_special_tokens=False).input_ids) for t in tails]) if tails else torch.zeros(len(texts), dtype=torch.long)
    rows = torch.arange(len(ids))
    at = (ids.shape[1] - 1 - n_tail).to(ids.device)  # the position that predicts the answer (left padding: ends align)
    answer = logits[rows, at][:, [model.yes, model.no]]
    margin = answer[:, 0] - answer[:, 1]
    y = torch.as_tensor(labels).to(model.device)
    pos = y.mean().clamp(0.05, 0.95)
    yes_no = F.binary_cross_entropy_with_logits(margin, y, weight=torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos)))
    eoi = model.tok.convert_tokens_to_ids(model.tok.eoi_token)
    col = torch.arange(ids.shape[1], device=ids.device)[None]
    after_image = (ids == eoi).long().cumsum(1) > 0  # the question's tokens follow <end_of_image>
    in_question = after_image & (col < at[:, None])  # up to the question's last token, never the answer
    target = ids[:, 1:].masked_fill(~(in_question[:, :-1] & (ids[:, 1:] != eoi)) | (y[:, None] < 0.5), IGNORE)
    caption = _next_token_loss(logits, target)
    described = None
    if tails:  # the tokens after the answer: "it shows ..."
        described = _next_token_loss(logits, ids[:, 1:].masked_fill(col[:, 1:] <= (at + 1)[:, None], IGNORE))
    return yes_no, caption, ((margin > 0).float() == y).float().mean(), described, grounded


class GroundingHead(torch.nn.Module):
    """A linear read-out of the vision tower's patch features: (colour, shape by the rules) of the object each
    patch shows. Pretraining only: it is not part of the Janus model and is not saved with it."""

    def __init__(self, width: int):
        super().__init__()
        self.colour, self.shape = torch.nn.Linear(width, len(MAP_COLORS)), torch.nn.Linear(width, len(MAP_SHAPES))

    def loss(self, features: torch.Tensor, imgs: np.ndarray, patch: int) -> torch.Tensor:
        target = torch.as_tensor(np.stack([token_objects(img, patch) for img in imgs])).to(features.device)  # (B, N, 2)
        obj = (target[..., 0] > 0).float()  # object patches weigh as much as all background ones together
        w = torch.where(obj > 0, 0.5 / obj.mean().clamp(min=1e-3), 0.5 / (1 - obj.mean()).clamp(min=1e-3))
        ce = F.cross_entropy(self.colour(features).flatten(0, 1), target[..., 0].flatten(), reduction="none") + \
            F.cross_entropy(self.shape(features).flatten(0, 1), target[..., 1].flatten(), reduction="none")
        return (ce * w.flatten()).mean()


def _next_token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits[:, t] against target[:, t] (the token at t + 1), 0 when no target is set (a batch
    with no true caption)."""
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)


# ---- the run ----
