"""`srum serve`: the model behind HTTP with Ray Serve (`app`), and what requests may say (`requests`)."""

from .app import build, serve_forever, start
from .requests import MAX_BODY, ImageSides, RequestError, decode_png, encode_png, generate_request, judge_request, judge_sides

__all__ = ["MAX_BODY", "ImageSides", "RequestError", "build", "decode_png", "encode_png", "generate_request", "judge_request",
           "judge_sides", "serve_forever", "start"]
