"""What a bench script measured before, so a rerun adds to its JSON instead of replacing it."""

from __future__ import annotations

import json
from pathlib import Path


def previous(out: Path, **identity) -> dict:
    """The JSON at `out` ({} if none) when it was measured under the same `identity` (weights, sizes); otherwise
    stop with both named, rather than mix or lose its figures."""
    old = json.loads(out.read_text()) if out.exists() else {}
    theirs = {k: old.get(k) for k in identity}
    if old and theirs != identity:
        raise SystemExit(f"{out}: measured with {theirs}, this run {identity}: give another --out rather than lose its figures")
    return old
