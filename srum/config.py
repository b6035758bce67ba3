"""Typed configuration: pydantic v2 models, loaded from YAML with dotted `--set key=value` overrides.

An unknown or ill-typed key is a ConfigError that names the key, the file and the line
(or the `--set` that introduced it), never a stack trace from deep inside a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

T = TypeVar("T", bound=BaseModel)
DEVICE = r"^(auto|cpu|cuda(:\d+)?)$"  # what a device setting may say


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(Section):
    """How images are drawn; a key left null takes the model's own default (janus: temperature 1, no guidance,
    every token; flow models: their own steps and guidance)."""
    cfg_scale: float | None = Field(None, ge=0)  # classifier-free guidance; 1 = off
    temperature: float | None = Field(None, gt=0)  # autoregressive models
    top_k: int | None = Field(None, ge=0)  # autoregressive models; 0 = every token
    steps: int | None = Field(None, ge=1)  # flow models: Euler steps
    eta: float | None = Field(None, ge=0)  # flow models: 0 = ODE
    # flow models (bagel; janus ignores them): the image size in pixels (multiples of 16 within the latent position
    # table; training needs a square image) and BAGEL's sampler settings (docs/bagel-format.md, "Generation")
    height: int | None = Field(None, ge=16)
    width: int | None = Field(None, ge=16)
    timestep_shift: float | None = Field(None, gt=0)  # bagel: 3.0 at inference
    cfg_interval: tuple[float, float] | None = None  # bagel: guidance where lo < t <= hi; (0.4, 1.0)
    cfg_renorm_type: Literal["global", "channel", "text_channel"] | None = None  # bagel: global
    cfg_renorm_min: float | None = Field(None, ge=0, le=1)  # bagel: 0.0

    @model_validator(mode="after")
    def _interval_in_order(self):
        if self.cfg_interval is not None and not 0 <= self.cfg_interval[0] <= self.cfg_interval[1] <= 1:
            raise ValueError(f"cfg_interval must be [lo, hi] with 0 <= lo <= hi <= 1 (got {list(self.cfg_interval)})")
        return self


class ConfigError(ValueError):
    """A configuration problem, with where it came from."""


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Build `cls` from an optional YAML file, then apply `key.sub=value` overrides in order."""
    data: dict[str, Any] = {}
    lines: dict[tuple, int] = {}
    if path is not None:
        data, lines = _read_yaml(Path(path))
    origin = {k: f"{path}:{n}" for k, n in lines.items()}
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(data, key, value, item)
        origin[tuple(key)] = f"--set {item}"
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e, origin, path)) from None


def _read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    lines: dict[tuple, int] = {}
    _key_lines(node, (), lines)
    return data, lines


def _key_lines(node, prefix: tuple, out: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = prefix + (k.value,)
            out[key] = k.start_mark.line + 1
            _key_lines(v, key, out)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set learner.lr=1e-5")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_dotted(data: dict, key: list[str], value: Any, item: str) -> None:
    d = data
    for part in key[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item}: {'.'.join(key[:-1])} is a value, not a section")
        d = nxt
    d[key[-1]] = value


def _explain(e: ValidationError, origin: dict[tuple, str], path) -> str:
    msgs = []
    for err in e.errors():
        loc = tuple(str(x) for x in err["loc"])
        where = _origin_of(loc, origin) or str(path or "defaults")
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        got = "" if err["type"] == "extra_forbidden" else f" (got {err.get('input')!r})"
        msgs.append(f"{where}: {'.'.join(loc)}: {what}{got}")
    return "invalid configuration:\n  " + "\n  ".join(msgs)


def _origin_of(loc: tuple, origin: dict[tuple, str]) -> str | None:
    """Where the innermost key of `loc` was set; else where a key below it was (a value given a section)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origin:
            return origin[loc[:n]]
    return next((v for k, v in origin.items() if k[: len(loc)] == loc), None)


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# ---- `srum train`: every knob of the online loop ----


class RolloutConfig(Section):
    prompts: str = "compworld"  # compworld (the training stream) | a .jsonl / .json prompt file
    scenes: bool = True  # compworld: training scenes only (srum/world/scenes.py), those the built-in learned from
    prompts_per_step: int = Field(16, ge=1)  # x samples_per_prompt = 64 own samples a learner step
    # a group per prompt for per-prompt centring, which needs siblings that differ: a prompt passed 28 % of the time
    # has two samples that differ 40 % of the time, a group of 4 a pass and a failure 73 % (srum_compworld.md at tag archive/wordings-2026-12)
    samples_per_prompt: int = Field(4, ge=1)
    sampling: SamplingConfig = SamplingConfig()


class JudgeConfig(Section):
    """Who judges. `policy`: the model's own understanding in torch (the frozen initial model unless
    learner.judge_follows). `vllm`: an understanding model served by vLLM in each judge actor, from `model`.
    `oracle`: CompWorld's program (pass +1, fail -1; with reward.use_local, each detected object +1 if the prompt
    names it, else -1) — a diagnostic upper bound, not SRUM."""
    engine: Literal["policy", "vllm", "oracle"] = "policy"
    model: str | None = None  # vllm: the judge model's directory (e.g. a Qwen2-VL, or a BAGEL's understanding)
    mode: Literal["yesno", "text"] = "yesno"  # vllm: P(yes) from answer logprobs, or "Score: x" parsed from text
    question: str = "Does the image show {}? Answer yes or no."  # vllm yes/no; {} is the prompt or object phrase
    yes: str = "Yes"
    no: str = "No"
    retries: int = Field(2, ge=0)  # text mode: re-asks when a score is missing; then the sample has failed
    # A failed sample (unparsed after the retries, a judge error; never a neutral 0) is dropped with its prompt's
    # whole group and counted; the run stops when more than this share of the last `failure_window` samples failed.
    max_failure_share: float = Field(0.5, ge=0.0, le=1.0)
    failure_window: int = Field(64, ge=1)  # samples
    # a judge call (one batch) past this is hung: its samples fail (as above) and on Ray its actor is replaced
    timeout_s: float = Field(600.0, gt=0)
    kv_cache_mb: int = Field(256, ge=16)  # vllm on CPU: the KV cache's size (vLLM would otherwise take 92 % of RAM)
    max_model_len: int = Field(1024, ge=64)

    @model_validator(mode="after")
    def _needs_a_model(self):
        if self.engine == "vllm" and not self.model:
            raise ValueError("reward.judge.engine vllm needs reward.judge.model: the judge model's directory")
        if "{}" not in self.question:
            raise ValueError(f"reward.judge.question {self.question!r} needs a {{}} where the prompt goes")
        return self


class RewardConfig(Section):
    # paper: 0.5 everywhere, regions raised to (s+1)/2, times (g+1)/2; uniform: every token weight 1, whatever the
    # judge says (the control: the same update on the model's own samples with no reward, self-imitation alone)
    map: Literal["paper", "uniform"] = "paper"
    use_global: bool = True
    use_local: bool = True
    binarize: bool = False  # each score +1 where the judge says yes, else -1 (RAFT-style filtering)
    # advantage centring of the token weights (not in the paper): none, the batch's mean, or each prompt's mean
    # over its rollout.samples_per_prompt samples (GRPO-style). `prompt` measured best: every weight of the paper's
    # map is positive, so most of it weighs the model's own samples alike, which only adds noise (docs/findings.md)
    centre: Literal["none", "batch", "prompt"] = "prompt"
    # a control, not a method: each sample's map is another sample's of the same prompt, so the weights keep their
    # magnitudes (and the update its noise) but carry nothing about the sample they weigh
    shuffle: bool = False
    # components | grid | detector:DIR (a transformers zero-shot detector, e.g. OWLv2 or Grounding DINO, from a
    # local directory, asked for the prompt's objects) | module:function (any other segmenter or detector)
    proposer: str = "components"
    max_regions: int = 6
    min_area: int = 8
    grid_cells: int = 2
    detector_threshold: float = Field(0.1, ge=0, le=1)
    match: float = 0.5
    unmatched: Literal["negative", "drop"] = "negative"
    # the map's global score is the judge's fine-grained verdict, the lowest of the global answer, every region's score
    # and the relation reading (an image is as good as its worst part); measured better than the paper's global answer
    # alone (srum_compworld.md at tag archive/wordings-2026-12); false is the paper's form
    strict_global: bool = True
    # self: the paper's judge, the model's own answers on the whole image and on each proposed region, no rule reads
    # the image; grounded: self plus the prompt's relations read by geometry off the regions the model recognises as
    # its objects (centres compared, as T2I-CompBench scores spatial prompts; srum/rewards/relations.py)
    judge_mode: Literal["self", "grounded"] = "grounded"
    relation_margin: float = Field(1 / 16, ge=0, lt=1)  # of the image's width: related centres at least this far apart
    judge: JudgeConfig = JudgeConfig()


class LoraConfig(Section):
    rank: int = Field(8, ge=1)
    alpha: float = 16.0
    targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LearnerConfig(Section):
    lr: float = 5e-5  # measured on the built-in with centred weights: 3e-4 fell below the base, 2.5e-5 to 1e-4 rose alike
    # lambda: the pull toward the frozen reference that stops reward hacking. Measured on the built-in (20 minutes, 3 seeds):
    # 0.05 removed 37 % of the error where 0.1 removed 23 %; 0.02 (10 minutes) wandered off and gained nothing
    kl_coef: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # AdamW's epsilon. Adam divides each weight's step by its own gradient scale, so a weight whose gradient is only
    # noise (the rows of rarely drawn image tokens) moves as far as one the reward pushes; a larger eps damps them
    # (1e-5 measured no different on the built-in: docs/results/srum_diagnostics_10min.json)
    adam_eps: float = Field(1e-8, gt=0)
    # which weights the update touches: generation (janus: the language model and generation modules; bagel: its generation
    # expert), all (but a VQ), or lora (janus: adapters on the language model; the reference is the base, only they broadcast)
    train: Literal["generation", "all", "lora"] = "generation"
    lora: LoraConfig = LoraConfig()
    judge_follows: bool = False  # True: the judge uses the current policy's understanding head
    logprob_check: float = Field(0.1, ge=0, le=1)  # share of learner steps that re-score the batch's sampled tokens (AR)
    logprob_warn: float = Field(0.1, ge=0)  # the gap (mean |log p recorded - re-scored|, nats; fp32 CPU ~1e-9) that warns
    logprob_stop: float = Field(1.0, ge=0)  # and that stops the run (bf16 on a GPU has a small gap; srum/learner/agreement.py)


class EvalConfig(Section):
    # validation / test: the scene split's held-out scenes (srum/world/scenes.py), for choices and for claims;
    # heldout: the 300 held-out wordings of the figures before the scene split (their scenes may be trained on)
    split: Literal["heldout", "validation", "test"] = "validation"
    prompts: int = Field(300, ge=1)  # the first N prompts of the split (validation 303, test 299, heldout 300)
    images_per_prompt: int = Field(4, ge=1)
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig()  # null keys: the model's defaults
    at_start: bool = True
    at_end: bool = True


class ActorResources(Section):
    num_cpus: float = 0.5  # fractional CPUs share a laptop's cores; on a GPU cluster give whole GPUs
    num_gpus: float = 0.0
    threads: int = 1  # torch intra-op threads inside the actor
    # custom resources that pin the role to a pool of nodes, as a KubeRay worker group declares them in its
    # rayStartParams (e.g. {rollout_pool: 1}: each actor of the role takes one unit on a node that offers it)
    resources: dict[str, float] = {}


class StandInConfig(Section):
    """Stages that only sleep (no CPU): measure srum's own orchestration, transport and weight sync."""
    generate_s: float = 0.2
    judge_s: float = 0.1
    learn_s: float = 0.05
    weights_mb: float = 10.0


class RayConfig(Section):
    address: str | None = None  # None: RAY_ADDRESS if set, else a fresh loopback-only local instance
    name: str = "srum"  # the controller actor's name in namespace "srum" (what `srum scale --name` finds)
    generators: int = 1
    judges: int = 1
    generator: ActorResources = ActorResources()
    judge: ActorResources = ActorResources()
    learner: ActorResources = ActorResources(num_cpus=1.0, threads=1)
    learners: int = 1  # data-parallel learner actors (each with `learner` resources), gradients all-reduced
    max_staleness: int = 1  # drop (and count) a batch made by a policy more than this many versions old
    sync_every: int = 1  # publish new weights every N learner steps
    # how weights reach the workers (srum/actors/weights/): auto = shared_memory on a one-node cluster,
    # else object_store; collective = a broadcast group (NCCL between GPU actors, gloo on CPUs)
    weights: Literal["auto", "object_store", "shared_memory", "collective"] = "auto"
    placement: bool = True  # one placement-group bundle per actor, so GPU roles never share a device
    autoscale: bool = False  # grow generators while the learner starves
    autoscale_idle: float = 0.3  # learner idle ratio (over the last window) above which a generator is added
    max_generators: int = 4
    stages: Literal["model", "stand_in"] = "model"
    stand_in: StandInConfig = StandInConfig()
    status_every: int = 10  # the driver prints a one-line status every N learner steps
    learner_restarts: int = Field(3, ge=0)  # a dead learner: back to the newest checkpoint this many times, then stop
    # a role with no actor running (its nodes lost) waits this long for its pool, then the run stops with a checkpoint
    pool_wait_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _staleness_covers_sync(self):
        # Generators hold weights up to sync_every - 1 versions old: a smaller bound would drop every batch.
        if self.max_staleness < self.sync_every - 1:
            raise ValueError(f"max_staleness ({self.max_staleness}) must be at least sync_every - 1 "
                             f"({self.sync_every - 1}), or every batch would be dropped as stale")
        if min(self.generators, self.judges, self.learners, self.sync_every, self.max_generators) < 1 or self.max_staleness < 0:
            raise ValueError("generators, judges, learners, sync_every and max_generators must be >= 1; max_staleness >= 0")
        return self


class LoggingConfig(Section):
    """Experiment trackers beside metrics.jsonl (srum/trackers.py): any of wandb, tensorboard, mlflow."""
    trackers: list[Literal["wandb", "tensorboard", "mlflow"]] = []
    project: str = "srum"
    wandb_mode: Literal["offline", "online"] = "offline"  # offline: RUN/wandb, uploaded later by `wandb sync`
    mlflow_uri: str | None = None  # None: a file store in RUN/mlruns


class TrainConfig(Section):
    engine: Literal["local", "ray"] = "ray"  # ray: actors on a local instance or RAY_ADDRESS; local: one process
    model: str = "builtin"
    device: str = Field("auto", pattern=DEVICE)  # cpu, cuda[:i], or auto: CUDA where there is a GPU (a Ray actor's own)
    seed: int = 0
    steps: int = Field(150, ge=1)  # x 64 samples: the README command 1 fits in 20 minutes on 2 cores
    time_budget_min: float = Field(0.0, ge=0)  # stop training (checkpoint, then evaluate) after this many minutes; 0 = none
    checkpoint_every: int = Field(50, ge=1)
    sample_every: int = Field(50, ge=1)
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    learner: LearnerConfig = LearnerConfig()
    eval: EvalConfig = EvalConfig()
    ray: RayConfig = RayConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _batch_splits_over_learners(self):
        batch = self.rollout.prompts_per_step * self.rollout.samples_per_prompt
        if batch % self.ray.learners:
            raise ValueError(f"ray.learners ({self.ray.learners}) must divide the batch of {batch} samples "
                             "(rollout.prompts_per_step x rollout.samples_per_prompt): each learner takes an equal share")
        if self.reward.centre == "prompt" and self.rollout.samples_per_prompt < 2:
            raise ValueError(f"reward.centre {self.reward.centre} weighs each sample against its prompt's other samples: it needs "
                             f"rollout.samples_per_prompt >= 2 (got {self.rollout.samples_per_prompt}), "
                             "or reward.centre batch / none")
        if self.reward.judge.engine == "vllm" and self.learner.judge_follows:
            raise ValueError("learner.judge_follows with reward.judge.engine vllm: the vLLM judge serves its own model "
                             "directory (vLLM runs no srum policy backend), so it cannot follow the policy; keep it frozen")
        if self.ray.weights == "collective" and self.learner.judge_follows:
            raise ValueError("ray.weights=collective broadcasts to generators only: with learner.judge_follows=true "
                             "use ray.weights=object_store or shared_memory")
        return self
