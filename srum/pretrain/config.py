"""The pretraining recipe's configuration: `srum pretrain --config configs/pretrain-janus.yaml` (defaults: the
shipped built-in's recipe)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import DEVICE
from ..models.janus.build import JanusShape
from ..world.corrupt import EDITS
from .vocabulary import QUESTION

SETTINGS = {"question": QUESTION, "yes": "yes", "no": "no"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizerStage(Section):
    steps: int = Field(1000, ge=0)
    batch: int = Field(64, ge=1)
    lr: float = 2e-3
    dictionary_renders: int = Field(100_000, ge=1)
    temperature: float = 0.05  # of the encoder's code classification
    init_from: str | None = None  # reuse a trained tokenizer: a JanusVQVAE directory, or a Janus model directory
    label_coef: float = 0.1  # cross-entropy of each decoded pixel's nearest world colour: what the oracle reads
    hard_coef: float = 1.0  # squared error of the hardest `hard_share` of the batch's pixels
    hard_share: float = Field(0.005, gt=0, le=1)


class JanusPretrainConfig(Section):
    """Defaults: the shipped built-in's recipe (configs/pretrain-janus.yaml)."""
    backend: Literal["janus"] = "janus"
    shape: JanusShape = JanusShape()
    seed: int = 0
    tokenizer: TokenizerStage = TokenizerStage()
    steps: int = Field(6500, ge=1)
    gen_batch: int = Field(64, ge=1)
    und_batch: int = Field(64, ge=0)
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    cond_drop: float = Field(0.1, ge=0, le=1)
    caption_coef: float = 0.5
    describe_coef: float = Field(0.5, ge=0)  # weight of "it shows <what the oracle sees>" after every answer
    describe_relations: bool = False  # the description also says how the objects stand ("... to the left of ...")
    ground_coef: float = Field(0.0, ge=0)  # weight of the vision tower's per-patch (colour, shape by the rules) loss
    und_resized: float = Field(0.1, ge=0, le=1)
    und_edited: float = Field(0.3, ge=0, le=1)
    und_edits: list[Literal[EDITS]] = Field(default_factory=lambda: list(EDITS), min_length=1)
    und_blobs: float = Field(0.0, ge=0, le=1)
    und_token_edits: float = Field(0.15, ge=0, le=1)  # share of renders with a VQ token or two edited
    und_free_layouts: float = Field(0.0, ge=0, le=1)  # share of related scenes placed freely (examples.und_example)
    und_reversed_relations: float = Field(0.0, ge=0, le=1)  # share of related scenes asked with the relation reversed
    # continue from a trained Janus directory or `builtin` (its tokenizer and model) instead of from nothing
    init_from: str | None = None
    # every prompt, scene and image pretraining learns from is of a training scene (srum/world/scenes.py): the
    # validation and test scenes stay unseen (the shipped built-in); false: every prompt but the 300 held-out wordings
    scenes: bool = True
    ema: float = Field(0.995, ge=0, lt=1)
    init_scale: bool = True  # re-initialise the image-token input path at the scale of a text embedding (_scale_init)
    checkpoint_every: int = Field(250, ge=1)
    threads: int = Field(2, ge=1)
    device: str = Field("cpu", pattern=DEVICE)
    # stage 2 on a CPU under bf16 autocast (weights, optimiser and EMA stay fp32): on these AVX-512-BF16 machines
    # the generation loss's forward + backward runs 1.7x and the understanding loss's 1.3x faster (docs/pretraining.md)
    cpu_bf16: bool = True
    time_budget_min: float = Field(0.0, ge=0)  # stop (and save) after this many minutes of this run; 0 = none
