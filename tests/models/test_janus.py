"""The janus backend on tiny random Janus directories: transformers' classes, files as save_pretrained writes
them, loaded offline."""

import json

import numpy as np
import pytest
import torch

from srum.io import InputError
from srum.models import load_model
from srum.learner.objective import srum_loss
from srum.models.janus import JanusUMM
from srum.models.sampling import SampleOptions

PROMPTS = ["a red square", "two blue circles above a green triangle"]


@pytest.fixture
def janus(tiny_janus_dir):
    torch.manual_seed(0)
    return load_model(tiny_janus_dir)


def test_loads_offline_with_janus_pro_defaults(janus):
    assert isinstance(janus, JanusUMM) and janus.image_size == 64 and janus.grid == 8
    assert janus.tok.convert_ids_to_tokens([janus.yes, janus.no]) == ["Yes", "No"]
    # the chat template frames both tasks
    framed = janus._chat("a red square", image=False)
    assert framed.startswith("<|User|>: a red square\n") and framed.endswith("<|Assistant|>:")
    assert janus._chat("q", image=True).startswith("<|User|>: <image_placeholder>\nq")


def test_sampling_is_seeded_and_the_kv_cache_changes_nothing(janus):
    img, tok = janus.sample(PROMPTS * 2, seed=3)
    assert img.shape == (4, 64, 64, 3) and img.dtype == np.uint8 and tok.shape == (4, 64)
    img2, tok2 = janus.sample(PROMPTS * 2, seed=3, kv_cache=False)
    assert np.array_equal(tok, tok2) and np.array_equal(img, img2)
    assert not np.array_equal(tok, janus.sample(PROMPTS * 2, seed=4)[1])
    # the decoder draws what the tokens say
    assert np.array_equal(janus.decode(tok), img)


def test_guidance_and_top_k_change_the_draw(janus):
    plain = janus.sample(PROMPTS, 0)[1]
    assert not np.array_equal(plain, janus.sample(PROMPTS, 0, SampleOptions(cfg_scale=4.0))[1])
    greedy = janus.sample(PROMPTS, 0, SampleOptions(top_k=1))[1]
    assert np.array_equal(greedy, janus.sample(PROMPTS, 1, SampleOptions(top_k=1))[1])  # top-1: no randomness left


def test_cfg_rows_keep_only_bos_and_boi(janus):
    ids, mask = janus.generation_ids(PROMPTS, drop=[False, True])
    kept = set(ids[1][mask[1] > 0].tolist())
    assert kept <= {janus.tok.bos_token_id, janus.boi, janus.tok.pad_token_id}
    assert ids[0][-1] == ids[1][-1] == janus.boi


def test_sampling_matches_teacher_forcing(janus):
    """The logits the loss re-scores are the ones the sampler drew from (same prompt, same tokens)."""
    _, tok = janus.sample(PROMPTS, seed=1, opts=SampleOptions(top_k=1))
    logits = janus.image_logits(PROMPTS, torch.as_tensor(tok))
    assert torch.equal(logits.argmax(-1), torch.as_tensor(tok))


def test_understanding_inputs_match_the_processor(janus):
    img = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    q = janus.question("a red square")
    ours = janus.understanding_inputs(img, [q])
    theirs = janus.processor(text=[janus._chat(q, image=True)], images=[img[0]], return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"], atol=1e-6)
    # another resolution goes through the processor's own resize
    small = janus.pixel_values(np.zeros((2, 32, 32, 3), np.uint8))
    assert small.shape == (2, 3, 64, 64)


def test_judge_probabilities_are_batched_consistently(janus):
    imgs, _ = janus.sample(PROMPTS * 3, seed=0)
    qs = [janus.question(p) for p in PROMPTS * 3]
    whole, parts = janus.judge_yes_prob(imgs, qs), janus.judge_yes_prob(imgs, qs, batch=2)
    assert whole.shape == (6,) and ((whole > 0) & (whole < 1)).all()
    assert np.allclose(whole, parts, atol=1e-5)


def test_srum_loss_weights_tokens_and_starts_with_no_kl(janus):
    _, tok = janus.sample(PROMPTS, seed=2)
    tok = torch.as_tensor(tok)
    ref = janus.make_reference()
    w = torch.ones(2, 64)
    loss = srum_loss(janus, ref, tok, PROMPTS, w, 0.1, torch.Generator())
    assert loss["kl_term"].abs() < 1e-6 and loss["reward_term"] > 0
    zero = srum_loss(janus, ref, tok, PROMPTS, torch.zeros(2, 64), 0.1, torch.Generator())
    assert zero["reward_term"] == 0
    half = srum_loss(janus, ref, tok, PROMPTS, w, 0.1, torch.Generator(), rows=slice(1, 2))
    assert torch.isfinite(half["total"])


def test_trainable_modes(janus):
    gen, every = set(janus.trainable("generation")), set(janus.trainable("all"))
    assert any(n.startswith("model.language_model.") for n in gen) and any("generation_head" in n for n in gen)
    assert not any("vision_model" in n or "vqmodel" in n for n in gen)
    assert gen < every and not any("vqmodel" in n for n in every)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        janus.trainable("lora")


def test_lora_trains_adapters_and_its_reference_is_the_base(janus):
    _, tok = janus.sample(PROMPTS, seed=2)
    tok = torch.as_tensor(tok)
    with torch.no_grad():
        base = janus.image_logits(PROMPTS, tok)
    full = janus.flat_weights().numel()
    janus.add_lora(rank=2)
    names = janus.trainable("lora")
    assert names and all("lora_" in n for n in names)
    assert janus.flat_weights().numel() < full / 5  # only the adapters are synced
    assert janus.make_reference() is None
    with torch.no_grad():  # move the adapters: the policy changes, its reference (adapters off) does not
        for n, p in janus.net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    with torch.no_grad(), janus.reference_view(None) as ref:
        assert torch.allclose(ref.image_logits(PROMPTS, tok), base, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(janus.image_logits(PROMPTS, tok), base, atol=1e-3)
    loss = srum_loss(janus, None, tok, PROMPTS, torch.ones(2, 64), 0.1, torch.Generator())
    assert loss["kl_term"] > 0


def test_flat_weights_round_trip_and_refuse_a_wrong_size(janus, tiny_janus_dir):
    other = load_model(tiny_janus_dir)
    with torch.no_grad():
        for p in janus.net.model.generation_head.parameters():
            p.add_(0.01)
    other.load_flat_weights(janus.flat_weights(), version=5)
    assert torch.equal(other.flat_weights(), janus.flat_weights()) and other.policy_version == 5
    with pytest.raises(ValueError, match="flat weights have"):
        other.load_flat_weights(janus.flat_weights()[:-1])


def test_save_is_a_hugging_face_directory(janus, tmp_path):
    from transformers import JanusForConditionalGeneration

    janus.policy_version = 3
    janus.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "srum.json"} <= files
    assert not [f for f in files if f.startswith(".")]  # written aside and renamed in: no leftovers
    hf = JanusForConditionalGeneration.from_pretrained(tmp_path / "m", local_files_only=True)
    assert all(torch.equal(a, b) for a, b in zip(hf.state_dict().values(), janus.net.state_dict().values()))
    back = load_model(tmp_path / "m")
    assert back.policy_version == 3 and torch.equal(back.flat_weights(), janus.flat_weights())
    janus.save(tmp_path / "m")  # saving over an existing directory replaces it whole
    assert {p.name for p in (tmp_path / "m").iterdir()} == files


def test_lora_checkpoint_loads_back(janus, tmp_path):
    janus.add_lora(rank=2)
    with torch.no_grad():
        for n, p in janus.net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    janus.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").exists()
    back = load_model(tmp_path / "lora")
    assert back.peft is not None and torch.equal(back.flat_weights(), janus.flat_weights())


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "config.json").write_text("{not json"), "config.json: not valid JSON"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]), "not a readable safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100]), "model.safetensors: truncated"),
    (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer"),
    (lambda d: (d / "srum.json").write_text('{"question": "no slot"}'), "needs a {} where the prompt goes"),
    (lambda d: (d / "srum.json").write_text('{"yes": "definitely yes"}'), "is not one token"),
])
def test_a_damaged_directory_is_refused_by_name(tiny_janus_dir, tmp_path, damage, message):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_janus_dir, d)
    damage(d)
    with pytest.raises(InputError, match=message):
        load_model(d)


def test_pickle_weights_are_refused_unopened(tiny_janus_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_janus_dir, d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")  # opening it would fail loudly
    with pytest.raises(InputError, match="only pickle weights \\(pytorch_model.bin\\)"):
        load_model(d)


def test_safetensors_with_other_tensors_than_the_config(tiny_janus_dir, tiny_janus32_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_janus_dir, d)
    shutil.copy(tiny_janus32_dir / "model.safetensors", d / "model.safetensors")  # another model's weights
    with pytest.raises(InputError, match=r"m/model.safetensors: does not hold the Janus model its config.json describes: 40 missing"):
        load_model(d)


def test_built_in_format_uses_its_srum_settings(tiny_janus32_dir):
    m = load_model(tiny_janus32_dir)
    assert m.question("a red square") == "does the image show a red square ?"
    assert json.loads((tiny_janus32_dir / "srum.json").read_text())["yes"] == "yes"
    img, _ = m.sample(["a red square"], 0)
    assert img.shape == (1, 32, 32, 3)
