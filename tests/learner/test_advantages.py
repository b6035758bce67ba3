import numpy as np
import pytest
import torch

from srum.learner.advantages import centre, pool_to_tokens, shuffled_within_groups


def test_pool_to_tokens_is_area_average_row_major():
    m = np.zeros((1, 32, 32), np.float32)
    m[0, :4, 4:8] = 1.0  # exactly token (row 0, col 1)
    m[0, 4:6, :4] = 1.0  # half of token (row 1, col 0)
    w = pool_to_tokens(m, 8)
    assert w.shape == (1, 64) and w[0, 1] == 1.0 and w[0, 8] == 0.5 and w.sum() == 1.5


def test_centre_subtracts_the_batch_mean():
    w = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert torch.allclose(centre(w), w - 0.5)


def test_centre_per_prompt_weighs_a_sample_against_its_siblings():
    w = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.5, 0.5], [0.7, 0.3]])  # two prompts, two samples each
    c = centre(w, "prompt", 2)
    assert torch.allclose(c[:2], torch.tensor([[0.5, 0.5], [-0.5, -0.5]]))
    assert torch.allclose(c[2:].sum(), torch.tensor(0.0), atol=1e-6)
    assert torch.equal(centre(w, "none"), w)
    with pytest.raises(ValueError, match="whole groups"):
        centre(w[:3], "prompt", 2)
    with pytest.raises(ValueError, match="one of none"):
        centre(w, "median", 2)


def test_shuffled_within_groups_moves_every_sample_inside_its_group():
    for seed in range(50):
        order = shuffled_within_groups(12, 3, seed)
        assert sorted(order) == list(range(12))
        assert all(o != i and o // 3 == i // 3 for i, o in enumerate(order))
    assert shuffled_within_groups(8, 4, 1) != shuffled_within_groups(8, 4, 2) or shuffled_within_groups(8, 4, 1) != shuffled_within_groups(8, 4, 3)
    with pytest.raises(ValueError, match="whole groups"):
        shuffled_within_groups(7, 2, 0)
