"""Pretraining of the built-in: a recipe, not a backend. From nothing to a Janus directory that draws and judges
CompWorld (`srum pretrain`); the product then serves it as it would any Janus."""

from .config import SETTINGS, JanusPretrainConfig
from .janus import pretrain

__all__ = ["SETTINGS", "JanusPretrainConfig", "pretrain"]
