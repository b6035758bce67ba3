"""Sample grids: what a run's samples/step_N.png shows, so a reader can tell what each row was meant to show.

Each row: the generated image; the same image tinted by its reward map (red low, green high); and a caption
with the prompt, the judge's global score and, for a CompWorld prompt, the oracle's verdict. Under the rows,
the tint's colour scale, over the map's range [0, 1].
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_write

TILE = 128  # px per image tile
CAPTION_W = 260


def tint(image: np.ndarray, reward_map: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The image half-blended with the map's colour: red at `lo`, green at `hi`."""
    m = np.clip((reward_map - lo) / (hi - lo), 0, 1)
    colour = np.stack([1 - m, m, np.zeros_like(m)], -1) * 255
    return (0.5 * image.astype(np.float32) + 0.5 * colour).clip(0, 255).astype(np.uint8)


def verdict(prompt: str, image: np.ndarray) -> str | None:
    """'pass' / 'fail' by the CompWorld oracle, or None for a prompt outside its grammar."""
    from .world import PromptError, parse, passes
    from .world.canvas import to_canvas

    try:
        spec = parse(prompt)
    except PromptError:
        return None
    return "pass" if passes(to_canvas(image[None])[0], spec) else "fail"


def grid(rollouts, judgements, n: int = 8) -> Image.Image:
    pairs = list(zip(rollouts, judgements))[:n]
    lo, hi = 0.0, 1.0
    font = ImageFont.load_default()
    rows = []
    for r, j in pairs:
        img = np.asarray(Image.fromarray(r.image).resize((TILE, TILE), Image.NEAREST))
        m = np.asarray(Image.fromarray(j.reward_map.astype(np.float32)).resize((TILE, TILE), Image.NEAREST))
        row = Image.new("RGB", (2 * TILE + CAPTION_W, TILE), "white")
        row.paste(Image.fromarray(img), (0, 0))
        row.paste(Image.fromarray(tint(img, m, lo, hi)), (TILE, 0))
        d = ImageDraw.Draw(row)
        v = verdict(r.prompt, r.image)
        lines = textwrap.wrap(r.prompt, 38)[:4] + [f"judge g = {j.global_score:+.2f}", f"map mean {j.reward_map.mean():.2f}"]
        lines += [f"oracle: {v}"] if v else []
        for k, line in enumerate(lines):
            d.text((2 * TILE + 6, 6 + 14 * k), line, fill="black", font=font)
        rows.append(row)
    legend = _legend(2 * TILE + CAPTION_W, lo, hi, font)
    out = Image.new("RGB", (legend.width, TILE * len(rows) + legend.height), "white")
    for k, row in enumerate(rows):
        out.paste(row, (0, k * TILE))
    out.paste(legend, (0, TILE * len(rows)))
    return out


def _legend(width: int, lo: float, hi: float, font) -> Image.Image:
    bar_w, h = 2 * TILE - 12, 34
    out = Image.new("RGB", (width, h), "white")
    ramp = np.linspace(lo, hi, bar_w)[None].repeat(12, 0)
    out.paste(Image.fromarray(tint(np.zeros((12, bar_w, 3), np.uint8) + 255, ramp, lo, hi)), (6, 4))
    d = ImageDraw.Draw(out)
    for x, value in ((6, lo), (6 + bar_w // 2, (lo + hi) / 2), (6 + bar_w - 12, hi)):
        d.text((x, 18), f"{value:g}", fill="black", font=font)
    d.text((2 * TILE + 6, 10), "reward map tint: red low, green high", fill="black", font=font)
    return out


def write_grid(path: Path, rollouts, judgements, n: int = 8) -> None:
    img = grid(rollouts, judgements, n)
    atomic_write(Path(path), lambda p: img.save(p, format="PNG"))
