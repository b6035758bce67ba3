"""Janus / Janus-Pro (transformers' `JanusForConditionalGeneration`): autoregressive image tokens."""

from .model import JanusUMM

__all__ = ["JanusUMM"]
