"""Janus / Janus-Pro (transformers' `JanusForConditionalGeneration`) behind the backend protocol: any directory
`save_pretrained` wrote (a local Janus-Pro-1B/7B in Hugging Face format, or the tiny built-in trained on CompWorld).

- generation: image tokens sampled one at a time through the language model with a KV cache, classifier-
  free guidance by a doubled batch (the unconditional rows keep only <bos> and <begin_of_image>, as Janus
  trains them), logits from `generation_head`, pixels from the VQ decoder. Written here because transformers
  5.19's `generate(generation_mode="image")` loses the generation config's `generation_kwargs` on load.
- understanding: vision tower -> aligner -> language model -> the logits of the yes / no tokens at the
  answer position, through the processor's chat template where the directory has one.
- for the learner: the sampled image tokens teacher-forced through `generation_head` (`image_logits`).
- training: the generation path (language model + generation modules), everything but the VQ, or LoRA
  adapters on the language model (peft), whose reference is the same model with the adapters switched off.

srum's own settings for a model (judge question, answer tokens): an optional `srum.json` (`directory.py`).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ...io import ModelDirError, replace_dir
from ..sampling import SampleOptions
from ..synced import SyncedWeights
from ..strict import differences, header
from .directory import DEFAULTS, SRUM_FILE, base_fingerprint, check_base, check_model_dir, check_safetensors, read_settings

TRAIN_MODES = ("generation", "all", "lora")
GENERATION_MODULES = ("model.language_model.", "model.generation_embeddings.", "model.generation_aligner.", "model.generation_head.")


class JanusUMM(SyncedWeights):
    kind = "janus"
    default_sampling = SampleOptions(cfg_scale=1.0, temperature=1.0, top_k=0)

    def __init__(self, net, processor, settings: dict | None = None):
        self.net, self.processor, self.tok = net, processor, processor.tokenizer
        self.settings = {**DEFAULTS, **(settings or {})}
        self.yes, self.no = (self._single_token(self.settings[k]) for k in ("yes", "no"))
        self.image_size = net.config.vision_config.image_size
        self.grid = net.config.vision_config.image_size // net.config.vision_config.patch_size
        self.boi = self.tok.convert_tokens_to_ids(self.tok.boi_token)
        self.policy_version = 0
        self.peft = None  # the peft wrapper when LoRA adapters train
        self.synced: list[torch.nn.Parameter] = list(net.parameters())  # what flat weights carry
        net.eval()

    # ---- loading ----
    @classmethod
    def load(cls, directory: Path) -> JanusUMM:
        """A Janus directory, or a LoRA checkpoint (srum.json naming its base directory and its adapters)."""
        from transformers import JanusForConditionalGeneration, JanusProcessor
        from transformers.utils import logging as hf_logging

        d = Path(directory)
        settings = read_settings(d)
        if settings.get("adapter"):
            model = cls.load(check_base(d, settings))
            model._apply_adapter(d / settings["adapter"])
            model.policy_version = int(settings.get("policy_version", 0))
            return model
        check_model_dir(d)
        hf_logging.disable_progress_bar()
        try:
            processor = JanusProcessor.from_pretrained(d, local_files_only=True)
            net, info = JanusForConditionalGeneration.from_pretrained(d, local_files_only=True, use_safetensors=True,
                                                                      output_loading_info=True)
        except Exception as e:  # noqa: BLE001 - whatever a user's files make transformers raise, it is their file
            raise ModelDirError(f"{d}: cannot load as a Janus model: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
        # check_model_dir compared the headers already; this catches whatever transformers itself still filled in
        off = {k: sorted(map(str, v))[:5] for k, v in info.items() if k != "error_msgs" and v} | (
            {"error_msgs": info["error_msgs"][:2]} if info.get("error_msgs") else {})
        if off:
            raise ModelDirError(f"{d}: transformers did not load every tensor as the file holds it: {off}")
        model = cls(net, processor, settings)
        model.policy_version = int(settings.get("policy_version", 0))
        return model

    def load_state(self, directory: Path) -> None:
        """Load the weights a `save` wrote (same architecture) into this model, in place."""
        other = JanusUMM.load(Path(directory))
        with torch.no_grad():
            for p, q in zip(self.synced, other.synced, strict=True):
                p.copy_(q.to(p.device))
        self.policy_version = other.policy_version

    def _single_token(self, text: str) -> int:
        ids = self.tok(text, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == self.tok.unk_token_id:
            raise ModelDirError(f"judge answer {text!r} is not one token of this tokenizer (got {ids}); "
                                f"set \"yes\" / \"no\" in the model's {SRUM_FILE}")
        return ids[0]

    def to(self, device) -> JanusUMM:
        self.net.to(device)
        return self

    @property
    def lm(self):
        return self.net.model.language_model

    # ---- generation ----
    def generation_ids(self, prompts: list[str], drop: list[bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids ending in <begin_of_image>, and their attention mask. Rows with `drop` set
        are unconditional: every prompt token becomes <pad> (still attended), as in Janus's CFG training."""
        texts = [self._chat(p, image=False) for p in prompts]
        enc = self.tok(texts, padding=True, return_tensors="pt", padding_side="left")
        ids = torch.cat([enc.input_ids, torch.full((len(texts), 1), self.boi)], 1)
        mask = torch.cat([enc.attention_mask, torch.ones(len(texts), 1, dtype=torch.long)], 1)
        if drop is not None:
            keep = (ids == self.tok.bos_token_id) | (ids == self.boi) | (mask == 0)
            rows = torch.tensor(drop)[:, None]
            ids = torch.where(rows & ~keep, self.tok.pad_token_id, ids)
        return ids, mask

    def _chat(self, text: str, image: bool) -> str:
        """The model's own prompt format: its chat template where it has one, else the text as it is."""
        template = getattr(self.processor, "chat_template", None)
        if not template:
            return f"{self.tok.image_token}{text}" if image else text
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    @torch.no_grad()
    def sample(self, prompts: list[str], seed: int, opts: SampleOptions | None = None, kv_cache: bool = True,
               logprobs: bool = False) -> tuple[np.ndarray, ...]:
        """One image per prompt: (uint8 images (B, H, W, 3), image tokens (B, grid^2)). Deterministic for a
        seed on any device: the sampling noise is drawn on the CPU (Gumbel-max). `logprobs`: a third array, float32
        (B, grid^2), each sampled token's log-probability as `image_logits` scores it (the conditional logits,
        temperature 1, all tokens: the policy's own, not the guided / tempered / top-k sampler's)."""
        o = (opts or SampleOptions()).over(self.default_sampling).check()
        guided = o.cfg_scale != 1.0
        b = len(prompts)
        ids, mask = self.generation_ids(prompts * (2 if guided else 1), [False] * b + [True] * b if guided else None)
        ids, mask = ids.to(self.device), mask.to(self.device)
        g = torch.Generator().manual_seed(seed)
        tokens = torch.zeros(b, self.grid**2, dtype=torch.long)
        lp = torch.zeros(b, self.grid**2)
        with self.autocast():
            step = self._cached_steps(ids, mask) if kv_cache else self._uncached_steps(ids, mask)
            h = next(step)
            for i in range(self.grid**2):
                logits = self.net.model.generation_head(h).float()
                if guided:
                    cond, uncond = logits.chunk(2)
                    logits = uncond + o.cfg_scale * (cond - uncond)
                tokens[:, i] = _draw(logits.cpu(), o.temperature, o.top_k, g)
                if logprobs:
                    own = logits if not guided else cond
                    lp[:, i] = own.log_softmax(-1).gather(-1, tokens[:, i, None].to(own.device))[:, 0].cpu()
                if i + 1 < self.grid**2:
                    h = step.send(tokens[:, i].repeat(2 if guided else 1).to(self.device))
        return (self.decode(tokens), tokens.numpy()) + ((lp.numpy(),) if logprobs else ())

    def _cached_steps(self, ids, mask):
        """A coroutine: yields the last hidden state; is sent each new image token."""
        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.lm(inputs_embeds=self.lm.embed_tokens(ids), attention_mask=mask, past_key_values=cache, use_cache=True)
        while True:
            token = yield out.last_hidden_state[:, -1]
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
            emb = self.net.prepare_embeddings_for_image_generation(token[:, None])
            out = self.lm(inputs_embeds=emb, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)

    def _uncached_steps(self, ids, mask):
        """The same without a cache: the whole sequence again at every token (the speed baseline)."""
        emb = self.lm.embed_tokens(ids)
        while True:
            token = yield self.lm(inputs_embeds=emb, attention_mask=mask).last_hidden_state[:, -1]
            emb = torch.cat([emb, self.net.prepare_embeddings_for_image_generation(token[:, None])], 1)
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)

    @torch.no_grad()
    def decode(self, tokens: np.ndarray | torch.Tensor) -> np.ndarray:
        """Image tokens -> uint8 images (B, H, W, 3) at the directory's resolution, by its VQ decoder."""
        t = torch.as_tensor(tokens, dtype=torch.long).to(self.device)
        with self.autocast():
            px = self.net.decode_image_tokens(t).float()  # channels last, in [-1, 1]
        return ((px.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 images at the directory's resolution -> image tokens (B, grid^2), by its VQ encoder."""
        x = torch.as_tensor(images).float().permute(0, 3, 1, 2).to(self.device) / 127.5 - 1.0
        return self.net.model.vqmodel.encode(x).image_tokens.view(len(images), -1).cpu().numpy()

    def image_logits(self, prompts: list[str], tokens: torch.Tensor, drop: list[bool] | None = None) -> torch.Tensor:
        """Teacher forcing: the generation head's logits (B, N, codebook) for each of the N image tokens."""
        ids, mask = self.generation_ids(prompts, drop)
        ids, mask, tokens = ids.to(self.device), mask.to(self.device), tokens.to(self.device)
        emb = torch.cat([self.lm.embed_tokens(ids), self.net.prepare_embeddings_for_image_generation(tokens[:, :-1])], 1)
        mask = torch.cat([mask, mask.new_ones(len(mask), tokens.shape[1] - 1)], 1)
        h = self.lm(inputs_embeds=emb, attention_mask=mask).last_hidden_state[:, ids.shape[1] - 1 :]
        return self.net.model.generation_head(h).float()

    # ---- understanding ----
    def question(self, prompt: str) -> str:
        return self.settings["question"].format(prompt)

    def understanding_inputs(self, images: np.ndarray, questions: list[str], tails: list[str] | None = None) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask / pixel_values as the processor makes them (image placeholders expanded
        to <begin_of_image>, N image tokens, <end_of_image>), left-padded so the answer is read at the end.
        `tails`: text after the point where the answer is read (pretraining's answers and descriptions)."""
        n = self.net.config.vision_config.num_image_tokens
        one = self.tok.boi_token + self.tok.image_token * n + self.tok.eoi_token
        tails = tails or [""] * len(questions)
        texts = [(self._chat(q, image=True) + (f" {t}" if t else "")).replace(self.tok.image_token, one, 1)
                 for q, t in zip(questions, tails)]
        enc = self.tok(texts, padding=True, return_tensors="pt", padding_side="left")
        return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "pixel_values": self.pixel_values(images)}

    def pixel_values(self, images: np.ndarray) -> torch.Tensor:
        """The image processor's tensor: resized to the vision tower's size (its own resampling), scaled to
        [0, 1] and normalised by its mean and std. Already at that size (CompWorld), only the arithmetic runs."""
        ip = self.processor.image_processor
        if images.shape[1:3] != (self.image_size, self.image_size):
            return ip(images=list(images), return_tensors="pt")["pixel_values"]
        mean, std = torch.tensor(ip.image_mean).view(1, 3, 1, 1), torch.tensor(ip.image_std).view(1, 3, 1, 1)
        x = torch.as_tensor(images).permute(0, 3, 1, 2).float() * ip.rescale_factor
        return (x - mean) / std

    def answer_logits(self, images: np.ndarray, questions: list[str], net=None) -> torch.Tensor:
        """(B, 2) logits of the yes and no tokens at the answer position."""
        inputs = {k: v.to(self.device) for k, v in self.understanding_inputs(images, questions).items()}
        with self.autocast():
            logits = (net or self.net)(**inputs, logits_to_keep=1).logits[:, -1].float()
        return logits[:, [self.yes, self.no]]

    @torch.no_grad()
    def judge_yes_prob(self, images: np.ndarray, questions: list[str], batch: int = 64) -> np.ndarray:
        """P(yes | image, question), renormalised over {yes, no}."""
        out = [self.answer_logits(images[i : i + batch], questions[i : i + batch]).softmax(-1)[:, 0]
               for i in range(0, len(questions), batch)]
        return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)

    # ---- what the learner's objective reads ----
    objective = "tokens"  # per-token NLL of sampled image tokens (srum/learner/objective.py)

    @property
    def token_grid(self) -> int:
        return self.grid

    def make_reference(self):
        """The frozen reference the learner keeps: None with LoRA (the base model is the reference, adapters
        off, no copy), else a frozen copy of the model as it is now (the initial policy)."""
        if self.peft is not None:
            return None
        ref = copy.copy(self)
        ref.net = copy.deepcopy(self.net).requires_grad_(False).eval()
        return ref

    def trainable(self, mode: str) -> list[str]:
        """Names of the weights an update touches: `generation` = everything image generation reads except the
        frozen VQ (the language model and the generation modules); `all` = everything but the VQ; `lora` =
        the LoRA adapters."""
        if mode not in TRAIN_MODES:
            raise ValueError(f"learner.train {mode!r}: the janus backend trains one of {TRAIN_MODES}")
        names = [n for n, _ in self.net.named_parameters()]
        if mode == "lora":
            if self.peft is None:
                raise ValueError("learner.train lora: the model has no LoRA adapters (add_lora first)")
            return [n for n in names if "lora_" in n]
        if mode == "generation":
            return [n for n in names if n.startswith(GENERATION_MODULES) and "lora_" not in n]
        return [n for n in names if not n.startswith("model.vqmodel.") and "lora_" not in n]

    def _apply_adapter(self, adapter_dir: Path) -> None:
        """A saved LoRA adapter, strictly: its file holds exactly the adapters its adapter_config.json puts on this
        base (peft would leave a missing one at its initial value, a no-op, and ignore one for other modules)."""
        f = adapter_dir / "adapter_model.safetensors"
        if not f.is_file():
            raise ModelDirError(f"{adapter_dir}: not a LoRA adapter directory (no adapter_model.safetensors)")
        check_safetensors(f)
        try:
            self.add_lora(adapter_dir=adapter_dir)
        except Exception as e:  # noqa: BLE001 - peft's errors for an adapter that does not fit are the user's file
            raise ModelDirError(f"{adapter_dir}: the adapter does not apply to its base {self.settings['base']}: "
                                f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from None
        expected = {"base_model.model." + re.sub(r"\.(lora_[A-Za-z_]+)\.default\.", r".\1.", n): tuple(p.shape)
                    for n, p in self.net.named_parameters() if "lora_" in n}
        problems = differences(expected, header(f))
        if problems:
            raise ModelDirError(f"{f}: does not hold the LoRA adapters its adapter_config.json puts on the base "
                                f"{self.settings['base']}: {' / '.join(problems)}")

    def add_lora(self, rank: int = 8, alpha: float = 16.0, targets: list[str] | None = None, adapter_dir: Path | None = None) -> None:
        """LoRA adapters on the language model's projections (or the saved ones of `adapter_dir`). Afterwards the
        flat weights carry only the adapters: what a learner broadcasts is megabytes, not the whole model."""
        from peft import LoraConfig, PeftModel, get_peft_model

        if adapter_dir is not None:
            self.peft = PeftModel.from_pretrained(self.net, str(adapter_dir), is_trainable=True)
        else:
            targets = targets or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            pattern = r"model\.language_model\..*\.(" + "|".join(targets) + ")"
            self.peft = get_peft_model(self.net, LoraConfig(r=rank, lora_alpha=alpha, target_modules=pattern, lora_dropout=0.0))
        self.net = self.peft.base_model.model  # the Janus module itself, now with adapters inside
        self.synced = [p for n, p in self.net.named_parameters() if "lora_" in n]

    # ---- weights ----
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def save(self, directory: Path) -> None:
        """A Hugging Face directory (`save_pretrained`: config, safetensors, tokenizer, processor) and srum.json,
        written beside the target and renamed into place, so a reader never sees half of one. With LoRA: the
        adapters (peft's format, `adapter/`) and srum.json naming the base directory they apply to."""
        d = Path(directory)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=f".{d.name}."))
        try:
            settings = {k: self.settings[k] for k in DEFAULTS} | {"policy_version": self.policy_version}
            if self.peft is not None:
                self.peft.save_pretrained(tmp / "adapter")
                settings |= {"adapter": "adapter", "base": self.settings["base"],
                             "base_fingerprint": base_fingerprint(Path(self.settings["base"]))}
            else:
                self.net.save_pretrained(tmp, safe_serialization=True)
                self.processor.save_pretrained(tmp)
            (tmp / SRUM_FILE).write_text(json.dumps(settings, indent=2) + "\n")
            replace_dir(tmp, d)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _draw(logits: torch.Tensor, temperature: float, top_k: int, g: torch.Generator) -> torch.Tensor:
    """Sample one token per row by Gumbel-max (noise from the CPU generator `g`)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    u = torch.rand(logits.shape, generator=g).clamp_(1e-10, 1 - 1e-7)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
