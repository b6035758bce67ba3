import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import foundation  # noqa: E402  (bench/ is scripts, not a package)

from srum.models import load_model  # noqa: E402
from srum.world import parse, render  # noqa: E402


def test_tail_logprob_is_the_tails_own_log_likelihood_whatever_the_padding(tiny_janus32_dir):
    model = load_model(tiny_janus32_dir)
    rng = random.Random(0)
    imgs = np.stack([render(parse(p), rng) for p in ("a red square to the left of a blue circle", "a green triangle")])
    questions = [model.question("a red square to the left of a blue circle"), model.question("a green triangle")]
    tails = ["yes it shows a red square to the left of a blue circle", "no it shows nothing"]
    together = foundation.tail_logprob(model, imgs, questions, tails)
    for i in range(2):  # alone, unpadded: the same number, summed by hand
        inputs = model.understanding_inputs(imgs[i : i + 1], questions[i : i + 1], tails[i : i + 1])
        with torch.no_grad():
            logp = model.net(**inputs).logits.float().log_softmax(-1)[0]
        n = len(model.tok(tails[i], add_special_tokens=False).input_ids)
        ids = inputs["input_ids"][0]
        want = sum(logp[t - 1, ids[t]].item() for t in range(len(ids) - n, len(ids)))
        assert abs(together[i] - want) < 1e-3
    assert together[0] < together[1] < 0  # more tokens to predict, each of probability below one


def test_description_reads_relation_compares_each_render_with_its_reversal(tiny_janus32_dir):
    model = load_model(tiny_janus32_dir)
    rng = random.Random(1)
    specs = [parse("a red square to the left of a blue circle"), parse("a green triangle above a white square"), parse("a red square")]
    images = np.stack([render(s, rng) for s in specs])
    share = foundation.description_reads_relation(model, specs, images)
    assert share in (0.0, 0.5, 1.0)  # two related renders are compared; the single object names no relation
