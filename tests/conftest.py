import pytest
import torch

from srum.models.mot import MotUMM
from srum.models.mot_net import MotConfig

TINY = MotConfig(d_model=32, n_layers=2, n_heads=2, vision_channels=8)


@pytest.fixture
def tiny_model() -> MotUMM:
    torch.manual_seed(0)
    model = MotUMM(TINY)
    with torch.no_grad():  # the output layer starts at zero; give it weights so outputs depend on inputs
        model.net.gen_out.weight.normal_(0, 0.05)
    return model


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model):
    d = tmp_path / "tiny_model"
    tiny_model.save(d)
    return d


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
    from srum.models.janus_build import JanusShape

    levels = {32: [1, 2, 2], 64: [1, 1, 2, 2]}[image_size]  # an 8 x 8 token grid either way
    return JanusShape(image_size=image_size, patch_size=image_size // 8, hidden=32, layers=2, heads=2, mlp=64,
                      vision_hidden=32, vision_layers=1, vision_heads=2, codebook=64, vq_multipliers=levels, vq_latent=32)


@pytest.fixture(scope="session")
def tiny_janus_dir(tmp_path_factory):
    """A random Janus at 64 x 64 with a chat template and no srum.json (Janus-Pro's defaults: 'Yes' / 'No')."""
    import os

    from srum.models.janus_build import build_janus
    from srum.models.tokenizer import WORDS

    os.environ["HF_HUB_OFFLINE"] = "1"
    d = tmp_path_factory.mktemp("janus") / "tiny64"
    return build_janus(d, tiny_shape(64), WORDS + JANUS_WORDS, seed=0, chat_template=CHAT, specials=["<|User|>", "<|Assistant|>"])


@pytest.fixture(scope="session")
def tiny_janus32_dir(tmp_path_factory):
    """A random Janus in the built-in's format: 32 x 32, plain prompts, srum.json with its question."""
    import os

    from srum.models.janus_build import build_janus
    from srum.models.janus_pretrain import SETTINGS
    from srum.models.tokenizer import WORDS
    from srum.world.oracle import DESCRIBE_WORDS

    os.environ["HF_HUB_OFFLINE"] = "1"
    d = tmp_path_factory.mktemp("janus") / "tiny32"
    return build_janus(d, tiny_shape(32), WORDS + DESCRIBE_WORDS, seed=0, settings=SETTINGS)
