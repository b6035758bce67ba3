"""How a backend draws images: one options record for every backend, each reading the fields it has.

A field left None takes the backend's own default (`default_sampling`, or the model's own settings), so one
configuration can name only what it changes: the Janus built-in samples every image token at temperature 1 without
guidance. A backend ignores the fields it does not read (Janus reads none of the flow fields).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

RENORM_TYPES = ("global", "channel", "text_channel")  # BAGEL's CFG renormalisation kinds


@dataclass(frozen=True)
class SampleOptions:
    cfg_scale: float | None = None  # classifier-free guidance; 1.0 switches it off
    temperature: float | None = None  # autoregressive: softmax temperature of each image token
    top_k: int | None = None  # autoregressive: sample among the k likeliest tokens; 0 = all
    steps: int | None = None  # flow: Euler steps from noise (t = 1) to data (t = 0)
    eta: float | None = None  # flow: 0 = deterministic ODE; > 0 re-injects noise each step
    # flow (bagel): the image size (multiples of the latent token's 16 px, within the latent position table) and
    # BAGEL's sampler settings; None = the model's own (1024 px or the table's limit, shift 3, CFG in (0.4, 1],
    # global renorm with floor 0: docs/bagel-format.md)
    height: int | None = None
    width: int | None = None
    timestep_shift: float | None = None  # t' = s t / (1 + (s - 1) t)
    cfg_interval: tuple[float, float] | None = None  # guidance where lo < t <= hi
    cfg_renorm_type: str | None = None  # global | channel | text_channel
    cfg_renorm_min: float | None = None  # the guided velocity is scaled down to no less than this fraction

    @classmethod
    def of(cls, sampling) -> SampleOptions:
        """The options a configuration's `sampling` section names (srum.config.SamplingConfig)."""
        d = sampling.model_dump()
        if d.get("cfg_interval") is not None:
            d["cfg_interval"] = tuple(d["cfg_interval"])
        return cls(**d)

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
        for name in ("height", "width"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.timestep_shift is not None and self.timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be > 0 (got {self.timestep_shift})")
        if self.cfg_interval is not None and (len(self.cfg_interval) != 2 or not 0 <= self.cfg_interval[0] <= self.cfg_interval[1] <= 1):
            raise ValueError(f"cfg_interval must be [lo, hi] with 0 <= lo <= hi <= 1 (got {self.cfg_interval})")
        if self.cfg_renorm_type is not None and self.cfg_renorm_type not in RENORM_TYPES:
            raise ValueError(f"cfg_renorm_type {self.cfg_renorm_type!r}: expected one of {', '.join(RENORM_TYPES)}")
        if self.cfg_renorm_min is not None and not 0 <= self.cfg_renorm_min <= 1:
            raise ValueError(f"cfg_renorm_min must be in [0, 1] (got {self.cfg_renorm_min})")
        return self
