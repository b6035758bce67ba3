"""What `srum serve` accepts and answers: the limits, request parsing and validation (each malformed request a
RequestError with its HTTP status), PNG encoding and the judgement's JSON. No model here."""


import base64
import binascii
import io
import json
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..world import CANVAS, PromptError, parse

APP_NAME = "srum"
MAX_BODY = 64 * 1024  # bytes: /generate's limit; /judge's adds the largest PNG it accepts (`ImageSides.max_body`)
MAX_N = 16
MAX_SEED = 2**63 - 1
MAX_PROMPT = 300  # characters
POLL_S = 5.0
SAMPLING: dict = {}  # every sampling option at the served model's own default
log = logging.getLogger("ray.serve")


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class ImageSides:
    """The images /judge accepts: RGB PNGs whose width and height are each between `lo` and `hi` pixels, as the
    served model's judge path takes them (`judge_sides`); by default CompWorld's 32 x 32 canvas."""

    lo: int = CANVAS
    hi: int = CANVAS

    def __str__(self) -> str:
        if self.lo == self.hi:
            return f"a {self.lo}x{self.lo} RGB PNG"
        return f"an RGB PNG of {self.lo} to {self.hi} pixels a side (up to {self.hi}x{self.hi})"

    @property
    def max_body(self) -> int:
        """/judge's body limit: MAX_BODY (the JSON, the prompt, a data: prefix) plus the base64 of the largest PNG
        of hi x hi pixels, stored uncompressed (a filter byte a row, 3 bytes a pixel; zlib's 5 bytes a 16 KiB block;
        12 bytes a chunk, chunks of 8 KiB or more; 1 KiB of header and ancillary chunks)."""
        raw = self.hi * (1 + 3 * self.hi)
        png = raw + 5 * (raw // 16384 + 1) + 12 * (raw // 8192 + 1) + 1024
        return MAX_BODY + 4 * -(-png // 3)


def judge_sides(model) -> tuple[int, int]:
    """(fewest, most) pixels a side of an image the model's judge takes: its `judge_sides` (BAGEL: from one ViT patch
    to its largest image), else CompWorld's canvas up to its own `image_size` (Janus resizes to its vision tower's
    size: the built-in 32 only, a Janus-Pro 32 to 384)."""
    sides = getattr(model, "judge_sides", None)
    return tuple(sides) if sides else (min(CANVAS, model.image_size), model.image_size)


# ---------------------------------------------------------------- request parsing (no Ray, no model)

def parse_body(raw: bytes, fields: dict[str, bool]) -> dict:
    """JSON object with exactly the known `fields` (name -> required)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RequestError(400, f"body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; expected {', '.join(fields)}")
    for name, required in fields.items():
        if required and name not in body:
            raise RequestError(422, f"missing field {name!r}")
    return body


def integer(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name, default)
    if type(v) is not int:  # bool is an int subclass; floats and strings are refused too
        raise RequestError(422, f"field {name!r} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise RequestError(422, f"field {name!r} must be between {lo} and {hi}, got {v if abs(v) < 10**20 else 'a huge number'}")
    return v


def prompt_of(body: dict) -> tuple[str, str]:
    """(the prompt, its category); 422 with the grammar's message if it is not a CompWorld v1 prompt."""
    p = body["prompt"]
    if not isinstance(p, str):
        raise RequestError(422, f"field 'prompt' must be a string, got {type(p).__name__}")
    if len(p) > MAX_PROMPT:
        raise RequestError(422, f"field 'prompt' is longer than {MAX_PROMPT} characters")
    try:
        spec = parse(p)
    except PromptError as e:
        raise RequestError(422, f"prompt outside the CompWorld v1 grammar: {e}") from None
    return spec.prompt, spec.category


def generate_request(raw: bytes) -> tuple[str, int, int]:
    body = parse_body(raw, {"prompt": True, "n": False, "seed": False})
    prompt, _ = prompt_of(body)
    return prompt, integer(body, "n", 1, 1, MAX_N), integer(body, "seed", 0, 0, MAX_SEED)


def judge_request(raw: bytes, sides: ImageSides = ImageSides()) -> tuple[str, np.ndarray]:
    body = parse_body(raw, {"prompt": True, "image": True})
    prompt, _ = prompt_of(body)
    return prompt, decode_png(body["image"], sides)


def decode_png(s, sides: ImageSides = ImageSides()) -> np.ndarray:
    """base64 PNG (a data: URL prefix is allowed) -> uint8 H x W x 3, each side within `sides`; anything else is a 422."""
    if not isinstance(s, str):
        raise RequestError(422, f"field 'image' must be a base64 string, got {type(s).__name__}")
    if s.startswith("data:"):
        s = s.partition(",")[2]
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(422, f"field 'image' is not valid base64: {e}") from None
    try:  # PNG only (no other decoder is tried); reads the header: the size is checked before any pixel
        img = Image.open(io.BytesIO(data), formats=["PNG"])
    except Image.DecompressionBombError as e:
        raise RequestError(422, f"field 'image' must be {sides}: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError(422, "field 'image' is base64 but not a PNG image") from None
    if not all(sides.lo <= n <= sides.hi for n in img.size) or img.mode != "RGB":
        raise RequestError(422, f"field 'image' must be {sides}, got {img.size[0]}x{img.size[1]} {img.mode}")
    try:
        img.load()  # decoding errors surface here, not inside numpy's conversion
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, zlib.error, ... for broken data
        raise RequestError(422, f"field 'image' is a damaged PNG: {e}") from None
    return np.array(img, dtype=np.uint8)


def encode_png(image: np.ndarray, mode: str = "RGB") -> str:
    buf = io.BytesIO()
    Image.fromarray(image, mode).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def judgement_json(j) -> dict:
    lo, hi = 0.0, 1.0  # the map's range (srum/rewards/reward_map.py)
    m = j.reward_map
    grey = np.round((np.clip(m, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)
    return {"global_score": round(float(j.global_score), 4),
            "regions": [{"box": list(r.box), "label": r.label, "score": round(float(r.score), 4)} for r in j.regions],
            "relation_score": None if j.relation_score is None else round(float(j.relation_score), 4),
            "reward_map": np.round(m, 4).tolist(), "reward_map_range": [lo, hi], "reward_map_png": encode_png(grey, "L")}


# ---------------------------------------------------------------- the models, following a run
