"""How a backend draws images: one options record for every backend, each reading the fields it has.

A field left None takes the backend's own default (`default_sampling`), so one configuration can name
only what it changes: the Janus built-in samples every image token at temperature 1 without guidance.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class SampleOptions:
    cfg_scale: float | None = None  # classifier-free guidance; 1.0 switches it off
    temperature: float | None = None  # autoregressive: softmax temperature of each image token
    top_k: int | None = None  # autoregressive: sample among the k likeliest tokens; 0 = all
    steps: int | None = None  # flow: Euler steps from noise (t = 1) to data (t = 0)
    eta: float | None = None  # flow: 0 = deterministic ODE; > 0 re-injects noise each step

    @classmethod
    def of(cls, sampling) -> SampleOptions:
        """The options a configuration's `sampling` section names (srum.config.SamplingConfig)."""
        return cls(**sampling.model_dump())

    def over(self, defaults: SampleOptions) -> SampleOptions:
        """These options, with every field left None taken from `defaults`."""
        return replace(defaults, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})

    def check(self) -> SampleOptions:
        if self.cfg_scale is not None and self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0 (got {self.cfg_scale})")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature})")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {self.top_k})")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 (got {self.steps})")
        return self
