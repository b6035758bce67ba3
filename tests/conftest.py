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
