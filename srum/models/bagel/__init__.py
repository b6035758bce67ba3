"""BAGEL (ByteDance-Seed/BAGEL-7B-MoT): a mixture-of-transformers unified model, reimplemented from its
release format (docs/bagel-format.md). `BagelUMM.load(directory)` reads a release directory strictly."""

from .sampling import BagelSampleOptions
from .umm import BagelUMM

__all__ = ["BagelSampleOptions", "BagelUMM"]
