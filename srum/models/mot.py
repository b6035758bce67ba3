"""The built-in unified model (`mot`) behind the backend protocol: generate, judge, weights, save/load."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write, load_metadata, load_tensors, save_tensors, write_text
from ..learner.objective import weighted_flow_loss
from .mot_net import MotConfig, MotNet, patchify, unpatchify
from .sampling import SampleOptions, generate
from .tokenizer import QUESTION, WordTokenizer


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float in [-1, 1]."""
    return torch.as_tensor(images).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


class MotUMM:
    """Built-in unified model. `net` holds every weight; the tokenizer is word-level."""

    kind = "mot"
    default_sampling = SampleOptions(cfg_scale=3.0, steps=20, eta=0.0)

    def __init__(self, cfg: MotConfig, tokenizer: WordTokenizer | None = None, net: MotNet | None = None):
        self.cfg = cfg
        self.tok = tokenizer or WordTokenizer.default()
        if len(self.tok.vocab) != cfg.vocab_size:
            raise ValueError(f"tokenizer has {len(self.tok.vocab)} words; config says vocab_size={cfg.vocab_size}")
        self.net = net or MotNet(cfg)
        self.policy_version = 0

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> MotUMM:
        """Move the weights (e.g. to "cuda"). Random numbers stay on the CPU and move over, so a seed draws
        the same noise on every device."""
        self.net.to(device)
        return self

    # ---- generation: rectified flow ----
    def text_ids(self, prompts: list[str], drop: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning tokens; rows where `drop` is True get the empty prompt (classifier-free guidance)."""
        texts = [("" if drop is not None and bool(drop[i]) else p) for i, p in enumerate(prompts)]
        return self.tok.batch(texts, self.cfg.gen_text_len)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        d = self.device
        return self.net.velocity(x_t.to(d), t.to(d), text_ids.to(d), self.tok.pad)

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], generator: torch.Generator, opts: SampleOptions) -> torch.Tensor:
        """Integrate the flow from noise to data; returns clean patches (B, N, patch_dim) in ~[-1, 1]."""
        opts = (opts or SampleOptions()).over(self.default_sampling).check()
        B, cfg = len(prompts), self.cfg
        x = torch.randn(B, cfg.grid**2, cfg.patch_dim, generator=generator).to(self.device)
        cond = self.text_ids(prompts)
        guided = opts.cfg_scale != 1.0
        ids = torch.cat([cond, self.text_ids([""] * B)]) if guided else cond
        ts = torch.linspace(1.0, 0.0, opts.steps + 1)
        for t, s in itertools.pairwise(ts):
            xin = torch.cat([x, x]) if guided else x
            v = self.velocity(xin, t.expand(xin.shape[0]), ids)
            if guided:
                vc, vu = v.chunk(2)
                v = vu + opts.cfg_scale * (vc - vu)
            x = self._step(x, v, float(t), float(s), opts.eta, generator)
        return x

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Clean patches -> uint8 images (B, H, W, 3)."""
        return to_uint8(unpatchify(latents, self.cfg.patch, self.cfg.image_size))

    @staticmethod
    def _step(x, v, t: float, s: float, eta: float, generator) -> torch.Tensor:
        """Move from time t to s < t. eta = 0 is the Euler step x - (t - s) v; eta > 0 re-mixes a share
        of fresh noise into the predicted noise (DDIM-style), keeping the marginal at time s."""
        if eta == 0.0:
            return x - (t - s) * v
        x0 = x - t * v
        eps = x + (1 - t) * v
        z = torch.randn(x.shape, generator=generator).to(x.device)
        return (1 - s) * x0 + s * ((1 - eta**2) ** 0.5 * eps + eta * z)

    def sample(self, prompts: list[str], seed: int, opts: SampleOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One image per prompt: (uint8 images, clean latents), deterministic for a seed."""
        o = (opts or SampleOptions()).over(self.default_sampling).check()
        lat = self.sample_latents(prompts, torch.Generator().manual_seed(seed), o).cpu()
        return self.decode(lat), lat.numpy()

    def generate(self, prompts: list[str], n: int = 1, seed: int = 0, opts: SampleOptions | None = None):
        """n rollouts per prompt (srum.models.sampling.generate)."""
        return generate(self, prompts, n, seed, opts)

    # ---- understanding: yes / no ----
    def answer_logits(self, images: np.ndarray | torch.Tensor, questions: list[str]) -> torch.Tensor:
        """Two-way logits (yes, no) per image for a yes/no question."""
        return self.understand(images, questions)[1]

    def understand(self, images, questions: list[str], grounding: bool = False) -> tuple[torch.Tensor, ...]:
        """(LM logits at every text position, the (yes, no) logits at <ans>, the token ids), and with
        grounding=True the grounding head's logits per image token."""
        x = to_unit(images).permute(0, 3, 1, 2).to(self.device)
        ids = self.tok.batch(questions, self.cfg.und_text_len, answer=True).to(self.device)
        out = self.net.understand(x, ids, self.tok.pad, grounding)
        logits = out[0] if grounding else out
        last = (ids != self.tok.pad).sum(1) - 1
        answer = logits[torch.arange(len(ids), device=ids.device), last][:, [self.tok.yes, self.tok.no]]
        return (logits, answer, ids, out[1]) if grounding else (logits, answer, ids)

    @torch.no_grad()
    def judge_yes_prob(self, images: np.ndarray, questions: list[str], batch: int = 256) -> np.ndarray:
        """P(yes | image, question), the yes/no answer renormalised over {yes, no}."""
        out = []
        for i in range(0, len(questions), batch):
            out.append(self.answer_logits(images[i : i + batch], questions[i : i + batch]).softmax(-1)[:, 0])
        return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)

    @staticmethod
    def question(prompt: str) -> str:
        return QUESTION.format(prompt)

    def patches(self, images: np.ndarray) -> torch.Tensor:
        return patchify(to_unit(images), self.cfg.patch)

    # ---- the SRUM objective at this backend's token grid ----
    @property
    def token_grid(self) -> int:
        return self.cfg.grid

    def srum_loss(self, latents: torch.Tensor, prompts: list[str], token_weights: torch.Tensor, reference: MotNet,
                  kl_coef: float, generator: torch.Generator, rows: slice = slice(None),
                  push_margin: float | None = None) -> dict[str, torch.Tensor]:
        """Re-noise the policy's own clean latents, weight the velocity error per token, add lambda * KL.
        (`push_margin` is the AR push-away's bound; flow's push, the reflected velocity, is bounded by itself.)
        `rows`: the share of the batch to compute (a data-parallel learner's); the noise is drawn for the
        whole batch first, so the shares of all ranks together see exactly what one learner would."""
        d = self.device
        eps = torch.randn(latents.shape, generator=generator)[rows].to(d)
        t = torch.rand(latents.shape[0], generator=generator)[rows].to(d)
        x0, token_weights, prompts = latents[rows].to(d), token_weights[rows].to(d), prompts[rows]
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        ids = self.text_ids(prompts)
        v = self.velocity(x_t, t, ids)
        with torch.no_grad():
            v_ref = reference.velocity(x_t, t, ids.to(d), self.tok.pad)
        return weighted_flow_loss(v, eps - x0, v_ref, token_weights, kl_coef)

    def generation_parameters(self) -> list[str]:
        """Names of the generation expert's weights (the rest is the understanding side)."""
        gen = ("gen_in.", "gen_img_pos", "time_mlp.", "gen_norm.", "gen_out.", "gen_feat.", "gen_refine.")
        return [n for n, _ in self.net.named_parameters() if n.startswith(gen) or ".gen." in n]

    def trainable(self, mode: str) -> list[str]:
        """Names of the weights an update touches: the generation expert, or everything."""
        if mode == "generation":
            return self.generation_parameters()
        if mode == "all":
            return [n for n, _ in self.net.named_parameters()]
        raise ValueError(f"learner.train {mode!r}: the mot backend trains 'generation' or 'all' (no LoRA)")

    def make_reference(self) -> MotNet:
        """The frozen reference the loss reads: a copy of the network as it is now (the initial policy)."""
        import copy

        return copy.deepcopy(self.net).requires_grad_(False).eval()

    def load_state(self, directory: Path) -> None:
        """Load the weights a `save` wrote into this model, in place."""
        other = MotUMM.load(Path(directory))
        self.net.load_state_dict(other.net.state_dict())
        self.policy_version = other.policy_version

    def take_generation_expert(self, donor: MotUMM) -> None:
        """Replace this model's generation-only weights with `donor`'s. Understanding reads none of them, so
        the judge stays exactly this model's; used to ship an understanding stage whose generation side
        got worse with the earlier stage's generator (the text they share runs through the understanding
        expert, so the bench decides whether the pair works)."""
        own, theirs = self.net.state_dict(), donor.net.state_dict()
        self.net.load_state_dict(own | {k: theirs[k] for k in self.generation_parameters()})

    # ---- weights ----
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def flat_weights(self) -> torch.Tensor:
        """A snapshot of every weight as one flat float32 tensor (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    def flatten_parameters(self) -> torch.Tensor:
        """Move every weight into one contiguous buffer (the parameters become views of it) and return
        it. A learner publishes this buffer as it is: one object-store put per version is then the only
        copy of the weights, where a snapshot would cost a second one (200 MB: about 20 ms)."""
        flat = self.flat_weights()
        with torch.no_grad():
            for p, chunk in zip(self.net.parameters(), flat.split([p.numel() for p in self.net.parameters()])):
                p.data = chunk.view_as(p)
        return flat

    def load_flat_weights(self, flat: torch.Tensor, version: int | None = None, share: bool = False) -> None:
        """Copy `flat` into the weights; with share=True the weights become views of `flat` instead (no copy):
        for inference-only replicas reading a buffer that lives in shared memory (Ray's object store)."""
        params = list(self.net.parameters())
        total = sum(t.numel() for t in params)
        if flat.numel() != total:  # check before copying: a bad buffer must not leave half-loaded weights
            raise ValueError(f"flat weights have {flat.numel()} values; the model has {total}")
        share = share and flat.device == self.device  # a GPU replica copies from the host buffer
        with torch.no_grad():
            for t, chunk in zip(params, flat.split([t.numel() for t in params])):
                if share:
                    t.data = chunk.view_as(t)
                else:
                    t.copy_(chunk.view_as(t))
        if version is not None:
            self.policy_version = version

    def save(self, directory: Path) -> None:
        """config.json + model.safetensors + tokenizer.json, each written atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_tensors(self.net.state_dict(), d / "model.safetensors", {"policy_version": str(self.policy_version)})
        atomic_write(d / "tokenizer.json", self.tok.save)
        write_text(d / "config.json", json.dumps({"kind": self.kind, **self.cfg.model_dump()}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> MotUMM:
        d = Path(directory)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (d / f).exists():
                raise FileNotFoundError(f"{d}: not a srum model directory (missing {f})")
        raw = json.loads((d / "config.json").read_text())
        raw.pop("kind", None)
        model = cls(MotConfig(**raw), WordTokenizer.load(d / "tokenizer.json"))
        model.net.load_state_dict(load_tensors(d / "model.safetensors"))
        model.policy_version = int(load_metadata(d / "model.safetensors").get("policy_version", 0))
        return model
