import shutil

import pytest


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_janus32_dir):
    """A tiny random Janus in the built-in's format, the test's own copy (a test may write into it)."""
    return shutil.copytree(tiny_janus32_dir, tmp_path / "tiny_model")


@pytest.fixture
def tiny_model(tiny_model_dir):
    from srum.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head (`ray start --head`) on 127.0.0.1, shared by the end-to-end tests."""
    from ray_head import start_head, stop_head

    head = start_head()
    yield head
    stop_head(head)


# ---- tiny random Janus directories, built from configs (no hub): transformers' own classes and files ----

CHAT = ("{% for message in messages %}<|User|>: {% for c in message['content'] %}{% if c['type'] == 'image' %}"
        "<image_placeholder>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n\n{% endfor %}"
        "{% if add_generation_prompt %}<|Assistant|>:{% endif %}")
JANUS_WORDS = ["Does", "Answer", "or", ".", "Yes", "No", ":"]


def tiny_shape(image_size: int):
    from srum.models.janus.build import JanusShape

    levels = {32: [1, 2, 2], 64: [1, 1, 2, 2]}[image_size]  # an 8 x 8 token grid either way
    return JanusShape(image_size=image_size, patch_size=image_size // 8, hidden=32, layers=2, heads=2, mlp=64,
                      vision_hidden=32, vision_layers=1, vision_heads=2, codebook=64, vq_multipliers=levels, vq_latent=32)


@pytest.fixture(scope="session")
def tiny_janus_dir(tmp_path_factory):
    """A random Janus at 64 x 64 with a chat template and no srum.json (Janus-Pro's defaults: 'Yes' / 'No')."""
    import os

    from srum.models.janus.build import build_janus
    from srum.pretrain.vocabulary import WORDS

    os.environ["HF_HUB_OFFLINE"] = "1"
    d = tmp_path_factory.mktemp("janus") / "tiny64"
    return build_janus(d, tiny_shape(64), WORDS + JANUS_WORDS, seed=0, chat_template=CHAT, specials=["<|User|>", "<|Assistant|>"])


@pytest.fixture(scope="session")
def tiny_janus32_dir(tmp_path_factory):
    """A random Janus in the built-in's format: 32 x 32, plain prompts, srum.json with its question (seed 0)."""
    return tiny_janus32(tmp_path_factory.mktemp("janus") / "tiny32", seed=0)


def tiny_janus32(d, seed: int):
    """A random Janus in the built-in's format at `d`, its weights drawn from `seed`."""
    import os

    from srum.models.janus.build import build_janus
    from srum.pretrain import SETTINGS
    from srum.pretrain.vocabulary import WORDS
    from srum.world.oracle import DESCRIBE_WORDS

    os.environ["HF_HUB_OFFLINE"] = "1"
    return build_janus(d, tiny_shape(32), WORDS + DESCRIBE_WORDS, seed=seed, settings=SETTINGS)
