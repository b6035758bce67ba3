"""CompWorld v1: the exactly specified image world in which every generated image is checked."""

from .bench import eval_set, heldout_set, training_spec, training_stream
from .oracle import Detected, check, detect, failure, passes
from .prompts import PromptError, Spec, enumerate_prompts, parse, sample_prompt
from .render import Placed, draw, layout, render
from .scenes import Scene, is_training_prompt, prompts_of, sample_training_prompt, scene_of, shows_heldout, split_of
from .spec import CANVAS, CATEGORIES, COLORS, SHAPES, WORLD_VERSION

__all__ = [
    "CANVAS", "CATEGORIES", "COLORS", "SHAPES", "WORLD_VERSION", "Detected", "Placed", "PromptError",
    "Spec", "check", "detect", "draw", "enumerate_prompts", "eval_set", "failure", "heldout_set", "layout", "parse", "passes",
    "render", "sample_prompt", "training_spec", "training_stream",
    "Scene", "is_training_prompt", "prompts_of", "sample_training_prompt", "scene_of", "shows_heldout", "split_of",
]
