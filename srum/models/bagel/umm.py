"""BAGEL (ByteDance-Seed/BAGEL-7B-MoT and directories in its layout) behind the backend protocol.

- generation: rectified flow in the FLUX autoencoder's latent space, from noise (t = 1) to data (t = 0) with
  BAGEL's shifted schedule; text classifier-free guidance against the empty context, inside a timestep
  interval, with BAGEL's renormalisation; the prompt's keys and values computed once per call.
- understanding: ViT -> connector -> the understanding expert; P(yes) from the next-token logits of the
  answer's first token (after <|im_start|>), renormalised over {yes, no}.
- the loss's inputs: `flow_inputs` draws (x_t, t, target) as BAGEL trains, `velocity` predicts v; the learner
  owns the objective. What trains is the generation expert, in full or through LoRA adapters; the
  understanding expert and the ViT stay frozen, so the judge is the initial model by construction.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from ...io import ModelDirError
from ..sampling import SampleOptions
from ..synced import SyncedWeights
from . import adapters, autoencoder, release
from .adapters import ADAPTERS_FILE
from .config import (
    CFG_INTERVAL,
    CFG_RENORM_MIN,
    CFG_RENORM_TYPE,
    CFG_TEXT_SCALE,
    INFER_STEPS,
    INFER_TIMESTEP_SHIFT,
    TRAIN_TIMESTEP_SHIFT,
    VIT_MIN_SIZE,
)
from .inputs import patchify, text_blocks, tokens_to_latents, vit_pixels
from .modeling import BagelNet, PromptCache
from .sampling import flow_schedule, renormalised

GENERATION_PREFIXES = ("time_embedder.", "vae2llm.", "llm2vae.", "latent_pos_embed.")
LORA_TARGETS = {"q_proj": r"self_attn\.q_proj_moe_gen", "k_proj": r"self_attn\.k_proj_moe_gen",
                "v_proj": r"self_attn\.v_proj_moe_gen", "o_proj": r"self_attn\.o_proj_moe_gen",
                "gate_proj": r"mlp_moe_gen\.gate_proj", "up_proj": r"mlp_moe_gen\.up_proj",
                "down_proj": r"mlp_moe_gen\.down_proj"}
TRAIN_MODES = ("generation", "lora")

LORA_SEED = 0  # peft's initialisation of the adapters (A random, B zero), the same in every process
DEFAULT_IMAGE_SIDE = 1024  # the official demos' resolution; smaller where the position table is smaller


class BagelUMM(SyncedWeights):
    kind = "bagel"
    objective = "flow"  # srum/learner/objective.py: velocity regression at flow_inputs' (x_t, t)
    train_modes = TRAIN_MODES
    default_sampling = SampleOptions(cfg_scale=CFG_TEXT_SCALE, steps=INFER_STEPS, eta=0.0)

    def __init__(self, loaded: release.Release):
        self.cfg, self.net, self.ae, self.tok = loaded.cfg, loaded.net, loaded.ae, loaded.tokenizer
        self.special = loaded.special_ids
        self.settings, self.carried, self.weights_dtype = loaded.settings, loaded.carried, loaded.weights_dtype
        self.policy_version = int(self.settings.get("policy_version", 0))
        side = min(DEFAULT_IMAGE_SIDE, self.cfg.max_image_side)
        self.image_size = side - side % self.cfg.latent_downsample
        # BAGEL's inference settings; SampleOptions' fields of these names override them per call
        self.timestep_shift, self.train_timestep_shift = INFER_TIMESTEP_SHIFT, TRAIN_TIMESTEP_SHIFT
        self.cfg_interval, self.cfg_renorm_type, self.cfg_renorm_min = CFG_INTERVAL, CFG_RENORM_TYPE, CFG_RENORM_MIN
        self.sample_batch = 8  # images per forward when sampling (noise is drawn for the whole call first)
        self.yes, self.no = (self._single_token(self.settings[k]) for k in ("yes", "no"))
        self.peft = None
        generation = set(self.generation_names())
        self.synced = [p for n, p in self.net.named_parameters() if n in generation]

    # ---- loading ----
    @classmethod
    def load(cls, directory: Path, dtype: torch.dtype = torch.float32) -> BagelUMM:
        """A BAGEL release directory, strictly (release.py); weights in `dtype` (bf16 for a 7B on a GPU)."""
        return cls(release.load(Path(directory), dtype))

    def load_state(self, directory: Path) -> None:
        """Take the trained weights of a directory `save` wrote (same architecture), in place: with LoRA the
        adapters of its adapters.safetensors (the base stays this model's: the run's initial weights, which are
        the reference), else the generation expert of its ema.safetensors. Both bit-exact."""
        if self.peft is not None:
            adapters.load_adapters(self, Path(directory))
            return
        if (Path(directory) / ADAPTERS_FILE).exists():
            raise ModelDirError(f"{directory}: holds LoRA adapters ({ADAPTERS_FILE}): it was written with learner.train "
                                "lora; resume it with lora (its ema.safetensors has them merged, not the base)")
        other = BagelUMM.load(Path(directory), self.dtype)
        theirs = dict(other.net.named_parameters())
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                if name in theirs:
                    p.copy_(theirs[name].to(p.device))
        self.policy_version = other.policy_version

    def _single_token(self, text: str) -> int:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ModelDirError(f"judge answer {text!r} is not one token of this tokenizer (got {ids}); "
                                        f"set \"yes\" / \"no\" in the model's {release.SRUM_FILE}")
        return ids[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.net.llm2vae.weight.dtype

    def to(self, device) -> BagelUMM:
        """Move the network and the autoencoder (which stays fp32). Random numbers are drawn on the CPU."""
        self.net.to(device)
        self.ae.to(device)
        return self

    # ---- text ----
    def text_ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def prompt_cache(self, prompts: list[str], net: BagelNet | None = None) -> PromptCache:
        """Each prompt as BAGEL's text block, <|im_start|> prompt <|im_end|>, through the understanding expert."""
        rows = [[self.special["bos"], *self.text_ids(p), self.special["eos"]] for p in prompts]
        ids, valid = text_blocks(rows)
        return (net or self.net).prompt_cache(ids.to(self.device), valid.to(self.device))

    # ---- generation ----
    def _image_shape(self, opts) -> tuple[int, int]:
        height = getattr(opts, "height", None) or self.image_size
        width = getattr(opts, "width", None) or self.image_size
        step, top = self.cfg.latent_downsample, self.cfg.max_image_side
        if height % step or width % step or not (0 < height <= top and 0 < width <= top):
            raise ValueError(f"image {height}x{width}: sides must be multiples of {step} up to {top} "
                             f"(the latent position table is {self.cfg.max_latent_size} tokens per side)")
        return height, width

    def _setting(self, opts, name: str):
        value = getattr(opts, name, None)
        return getattr(self, name) if value is None else value

    @torch.no_grad()
    def sample(self, prompts: list[str], seed: int, opts: SampleOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One image per prompt: (uint8 images (B, H, W, 3), clean latent tokens float32 (B, N, 4z)).
        Deterministic for a seed: the noise comes from a CPU generator, drawn for all prompts at once."""
        o = (opts or SampleOptions()).over(self.default_sampling).check()
        if o.eta:
            raise ValueError(f"eta {o.eta}: the bagel backend integrates BAGEL's deterministic ODE (eta 0)")
        height, width = self._image_shape(opts)
        rows, cols = height // self.cfg.latent_downsample, width // self.cfg.latent_downsample
        noise = torch.randn(len(prompts), rows * cols, self.cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
        out = []
        with self.autocast():
            for i in range(0, len(prompts), self.sample_batch):
                chunk = noise[i : i + self.sample_batch].to(self.device)
                out.append(self._integrate(prompts[i : i + self.sample_batch], chunk, rows, cols, o, opts).float().cpu())
        latents = torch.cat(out) if out else noise
        return self.decode(latents, rows, cols), latents.numpy()

    def _integrate(self, prompts, x, rows, cols, o, opts) -> torch.Tensor:
        """Euler steps x <- x - (t - t_next) v from t = 1 to 0; guided where t is inside the CFG interval."""
        cache = self.prompt_cache(prompts)
        guided = o.cfg_scale > 1.0  # BAGEL's rule: a scale of 1 or less switches guidance off
        both = cache.with_empty() if guided else None
        lo, hi = self._setting(opts, "cfg_interval")
        times = flow_schedule(o.steps, self._setting(opts, "timestep_shift"))
        for t, t_next in zip(times[:-1].tolist(), times[1:].tolist()):
            if guided and lo < t <= hi:
                v = self._guided_velocity(x, t, both, rows, cols, o.cfg_scale, opts)
            else:
                v = self._flow(self.net, x, torch.full((len(x),), t, device=x.device), cache, rows, cols)
            x = x - v.float() * (t - t_next)
        return x

    def _guided_velocity(self, x, t, both: PromptCache, rows, cols, scale, opts) -> torch.Tensor:
        """Conditional and unconditional velocities in one doubled batch, mixed and renormalised."""
        xx = torch.cat([x, x])
        v_cond, v_uncond = self._flow(self.net, xx, torch.full((len(xx),), t, device=x.device), both, rows, cols).float().chunk(2)
        v_guided = v_uncond + scale * (v_cond - v_uncond)
        return renormalised(v_cond, v_guided, self._setting(opts, "cfg_renorm_type"), self._setting(opts, "cfg_renorm_min"))

    def _flow(self, net, x_t, t, cache, rows, cols) -> torch.Tensor:
        return net.flow_velocity(x_t, t, cache, rows, cols, self.special["start_of_image"], self.special["end_of_image"])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor | np.ndarray, rows: int | None = None, cols: int | None = None) -> np.ndarray:
        """Clean latent tokens (B, rows*cols, 4z) -> uint8 images (B, H, W, 3), truncated like the official
        `(x * 0.5 + 0.5).clamp(0, 1) * 255 -> uint8`."""
        latents = torch.as_tensor(latents)
        if rows is None:
            rows, cols = self.latent_grid(latents.shape[1])
        out = []
        for i in range(0, len(latents), self.sample_batch):
            z = tokens_to_latents(latents[i : i + self.sample_batch].float(), rows, cols).to(self.device)
            px = autoencoder.decode(self.ae, z)
            out.append(((px * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
        ds = self.cfg.latent_downsample
        return torch.cat(out).numpy() if out else np.zeros((0, rows * ds, cols * ds, 3), np.uint8)

    def latent_grid(self, tokens: int) -> tuple[int, int]:
        """(rows, cols) of a latent with this many tokens: the default size's grid, or a square one."""
        side = self.token_grid
        if tokens == side * side:
            return side, side
        root = math.isqrt(tokens)
        if root * root != tokens:
            raise ValueError(f"{tokens} latent tokens: not a square grid; pass grid=(rows, cols)")
        return root, root

    # ---- understanding ----
    def question(self, prompt: str) -> str:
        return self.settings["question"].format(prompt)

    def answer_logits(self, images: np.ndarray, questions: list[str], net: BagelNet | None = None) -> torch.Tensor:
        """(B, 2) logits of the yes and no tokens as the answer's first token. Each image is its own block
        (<|vision_start|> ViT tokens <|vision_end|>), then <|im_start|> question <|im_end|>, then <|im_start|>
        where the answer begins (the official `chat`). Images of one size share a forward."""
        net = net or self.net
        vit = self.cfg.vit
        max_side = vit.image_size
        pixels = [vit_pixels(im, max_side, min(VIT_MIN_SIZE, max_side), vit.patch_size) for im in images]
        marks = torch.tensor([self.special["start_of_image"], self.special["end_of_image"]], device=self.device)
        out = torch.empty(len(pixels), 2)
        for shape in sorted({tuple(p.shape) for p in pixels}):
            idx = [i for i, p in enumerate(pixels) if tuple(p.shape) == shape]
            x = torch.stack([pixels[i] for i in idx]).to(self.device, self.dtype)
            rows, cols = shape[1] // vit.patch_size, shape[2] // vit.patch_size
            image = net.image_embeds(patchify(x, vit.patch_size), rows, cols)
            bos, eos = self.special["bos"], self.special["eos"]
            ids, valid = text_blocks([[bos, *self.text_ids(questions[i]), eos, bos] for i in idx])
            logits = net.answer_logits(image, marks, ids.to(self.device), valid.to(self.device))
            out[idx] = logits[:, [self.yes, self.no]].float().cpu()
        return out

    @torch.no_grad()
    def judge_yes_prob(self, images: np.ndarray, questions: list[str], batch: int = 16) -> np.ndarray:
        """P(yes | image, question), renormalised over {yes, no}."""
        with self.autocast():
            out = [self.answer_logits(images[i : i + batch], questions[i : i + batch]).softmax(-1)[:, 0]
                   for i in range(0, len(questions), batch)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    @property
    def judge_sides(self) -> tuple[int, int]:
        """(fewest, most) pixels a side of an image judge_yes_prob takes: from one ViT patch up to the larger of the
        ViT's table and the latent table (what BAGEL draws); `vit_pixels` resizes each into the ViT's table."""
        vit = self.cfg.vit
        return vit.patch_size, max(vit.image_size, self.cfg.max_image_side)

    # ---- what the learner's objective reads ----
    @property
    def token_grid(self) -> int:
        """Latent tokens per side at the default resolution (the reward map is pooled to this grid)."""
        return self.image_size // self.cfg.latent_downsample

    def flow_inputs(self, latents, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, t, target) for clean latents (B, N, 4z), as BAGEL trains: t = shift(sigmoid(n)), n ~ N(0, 1)
        (logit-normal; shift = train_timestep_shift), noise eps ~ N(0, I), x_t = (1 - t) x0 + t eps, target
        velocity eps - x0. Drawn on the CPU from `generator`: t first, then eps."""
        x0 = torch.as_tensor(latents).float()
        s = self.train_timestep_shift
        t = torch.sigmoid(torch.randn(len(x0), generator=generator))
        t = s * t / (1 + (s - 1) * t)
        eps = torch.randn(x0.shape, generator=generator)
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        return x_t.to(self.device), t.to(self.device), (eps - x0).to(self.device)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, prompts: list[str], net: BagelNet | None = None,
                 grid: tuple[int, int] | None = None) -> torch.Tensor:
        """v (B, N, 4z) predicted at x_t (B, N, 4z), times t (B,), given the prompts. Gradients reach the
        generation expert only: the prompt runs through the frozen understanding expert without them."""
        net = net or self.net
        rows, cols = grid or self.latent_grid(x_t.shape[1])
        with torch.no_grad():
            cache = self.prompt_cache(prompts, net)
        return self._flow(net, x_t.to(self.device), t.to(self.device), cache, rows, cols)

    def make_reference(self):
        """The frozen reference the learner keeps: None with LoRA (adapters off is the reference), else a copy
        of this model whose generation expert is copied and whose understanding side is shared (it never
        trains), so a 7B reference costs the generation expert's memory, not the whole model's."""
        if self.peft is not None:
            return None
        gen = {id(p) for p in self.synced}
        shared = {id(t): t for t in [*self.net.parameters(), *self.net.buffers()] if id(t) not in gen}
        ref = copy.copy(self)
        ref.net = copy.deepcopy(self.net, shared).eval()
        ref.synced = [p for p in ref.net.parameters() if id(p) not in shared]
        for p in ref.synced:
            p.requires_grad_(False)
        return ref

    def generation_names(self) -> list[str]:
        """The generation expert: the *_moe_gen twins, the timestep embedder, vae2llm / llm2vae and the latent
        position table (BAGEL itself keeps that sin-cos table frozen)."""
        return [n for n, _ in self.net.named_parameters()
                if "lora_" not in n and ("_moe_gen" in n or n.startswith(GENERATION_PREFIXES))]

    def trainable(self, mode: str) -> list[str]:
        """Names an update touches: `generation` = the generation expert; `lora` = its LoRA adapters."""
        if mode not in TRAIN_MODES:
            raise ValueError(f"learner.train {mode!r}: the bagel backend trains one of {TRAIN_MODES} "
                             "(the understanding expert is the judge and stays frozen)")
        if mode == "lora":
            if self.peft is None:
                raise ValueError("learner.train lora: the model has no LoRA adapters (add_lora first)")
            return [n for n, _ in self.net.named_parameters() if "lora_" in n]
        return self.generation_names()

    def add_lora(self, rank: int = 8, alpha: float = 16.0, targets: list[str] | None = None) -> None:
        """LoRA adapters on the generation expert's projections (`targets` name them as in Qwen2: q_proj ...
        down_proj; each means its *_moe_gen twin). The flat weights then carry the adapters only."""
        from peft import LoraConfig, get_peft_model

        targets = targets or list(LORA_TARGETS)
        unknown = sorted(set(targets) - set(LORA_TARGETS))
        if unknown:
            raise ValueError(f"LoRA targets {unknown}: expected some of {list(LORA_TARGETS)}")
        pattern = r"language_model\.model\.layers\.\d+\.(" + "|".join(LORA_TARGETS[t] for t in targets) + ")"
        with torch.random.fork_rng(devices=[]):  # the same adapters in every process (learner, generators, judge),
            torch.manual_seed(LORA_SEED)          # whatever the global RNG has drawn before; it is left untouched
            self.peft = get_peft_model(self.net, LoraConfig(r=rank, lora_alpha=alpha, target_modules=pattern, lora_dropout=0.0))
        self.net = self.peft.base_model.model  # the BagelNet itself, now with adapters inside
        self.synced = [p for n, p in self.net.named_parameters() if "lora_" in n]

    # ---- weights ----
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def save(self, directory: Path, dtype: torch.dtype | None = None) -> None:
        """A release directory (ema.safetensors in `dtype`, by default the dtype the weights are in now, so a
        checkpoint resumes bit-exactly: fp32 on the CPU, bf16 on a GPU as the release ships; ae.safetensors fp32 in
        BFL's names; the configs and tokenizer files as they came; srum.json), written atomically. The official
        loader reads it. With LoRA, ema.safetensors holds the adapters merged (what the official loader, `srum
        eval` and `srum serve` read) and adapters.safetensors the adapters themselves (what a resume reads)."""
        settings = {k: self.settings[k] for k in ("question", "yes", "no")} | {"policy_version": self.policy_version}
        extra = {}
        if self.peft is not None:
            extra[ADAPTERS_FILE] = {n: p.detach() for n, p in self.net.named_parameters() if "lora_" in n}
        release.save(Path(directory), adapters.merged_state_dict(self.net, self.peft), autoencoder.bfl_state_dict(self.ae, len(self.cfg.ae.widths)),
                     self.carried, settings, dtype or self.dtype, extra)
