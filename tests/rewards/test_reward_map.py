import numpy as np
import pytest
import torch

from srum.rewards.judge import JudgeOptions
from srum.rewards.reward_map import centre, pool_to_tokens, reward_map

H = W = 8


def test_empty_proposals_give_flat_half_times_global():
    m = reward_map(0.0, [], (H, W))
    assert m.dtype == np.float32 and np.allclose(m, 0.25)  # 0.5 * (0 + 1) / 2
    assert np.allclose(reward_map(1.0, [], (H, W)), 0.5)
    assert np.allclose(reward_map(-1.0, [], (H, W)), 0.0)


def test_region_raised_only_where_larger():
    m = reward_map(1.0, [((0, 0, 4, 4), 0.6), ((4, 4, 8, 8), -0.6)], (H, W))
    assert np.allclose(m[:4, :4], 0.8) and np.allclose(m[4:, 4:], 0.5)  # (-0.6 + 1) / 2 = 0.2 < 0.5: unchanged
    assert np.allclose(m[:4, 4:], 0.5)


def test_overlapping_regions_take_the_max():
    m = reward_map(1.0, [((0, 0, 6, 6), 0.2), ((2, 2, 8, 8), 0.8)], (H, W))
    assert np.isclose(m[1, 1], 0.6) and np.isclose(m[3, 3], 0.9) and np.isclose(m[7, 7], 0.9)


def test_global_factor_scales_everything():
    m = reward_map(0.5, [((0, 0, 4, 4), 1.0)], (H, W))
    assert np.isclose(m[0, 0], 1.0 * 0.75) and np.isclose(m[7, 7], 0.5 * 0.75)


def test_boxes_outside_the_image_are_clipped_or_ignored():
    m = reward_map(1.0, [((-3, -3, 2, 2), 1.0), ((10, 10, 20, 20), 1.0), ((5, 5, 5, 9), 1.0)], (H, W))
    assert np.allclose(m[:2, :2], 1.0) and np.isclose(m[2, 2], 0.5) and np.isclose(m.sum(), 4 * 1.0 + 60 * 0.5)


def test_scores_are_clamped():
    assert np.isclose(reward_map(3.0, [((0, 0, 1, 1), 7.0)], (H, W))[0, 0], 1.0)


def test_signed_map_pushes_bad_regions_below_zero():
    m = reward_map(1.0, [((0, 0, 4, 4), -0.6), ((2, 2, 6, 6), 0.8)], (H, W), signed=True)
    assert np.isclose(m[0, 0], 2 * 0.2 - 1)  # negative weight: pushed away
    assert np.isclose(m[3, 3], 2 * 0.2 - 1)  # overlap: the lowest judgement wins
    assert np.isclose(m[5, 5], 2 * 0.9 - 1) and np.isclose(m[7, 7], 0.0)


def test_ablation_switches():
    regions = [((0, 0, 4, 4), 0.6)]
    assert np.allclose(reward_map(-0.5, regions, (H, W), use_global=False)[:4, :4], 0.8)
    assert np.allclose(reward_map(-0.5, regions, (H, W), use_local=False), 0.5 * 0.25)
    b = reward_map(0.2, [((0, 0, 4, 4), 0.1)], (H, W), binarize=True)
    assert np.isclose(b[0, 0], 1.0) and np.isclose(b[7, 7], 0.5)


def test_binarize_threshold_is_a_p_yes_level():
    # P(yes) 0.6 passes at the default 0.5 and fails at 0.8; so does a region judged at P(yes) 0.7
    lenient = reward_map(0.2, [((0, 0, 4, 4), 0.4)], (H, W), binarize=True)
    strict = reward_map(0.2, [((0, 0, 4, 4), 0.4)], (H, W), binarize=True, binarize_at=0.8)
    assert np.isclose(lenient[7, 7], 0.5) and np.isclose(lenient[0, 0], 1.0)
    assert np.allclose(strict, 0.0)  # the global score fails: the whole map is 0
    strict_local = reward_map(0.7, [((0, 0, 4, 4), 0.4)], (H, W), binarize=True, binarize_at=0.8)
    assert np.isclose(strict_local[0, 0], 0.5) and np.isclose(strict_local[7, 7], 0.5)  # the region is not raised


def test_pool_to_tokens_is_area_average_row_major():
    m = np.zeros((1, 32, 32), np.float32)
    m[0, :4, 4:8] = 1.0  # exactly token (row 0, col 1)
    m[0, 4:6, :4] = 1.0  # half of token (row 1, col 0)
    w = pool_to_tokens(m, 8)
    assert w.shape == (1, 64) and w[0, 1] == 1.0 and w[0, 8] == 0.5 and w.sum() == 1.5


def test_centre_subtracts_the_batch_mean():
    w = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert torch.allclose(centre(w), w - 0.5)


def test_grid_and_component_proposers():
    from srum.rewards.proposals import ComponentProposer, GridProposer, load_proposer

    img = np.zeros((32, 32, 3), np.uint8)
    img[2:12, 2:12] = 200
    img[20:23, 20:23] = 200  # 9 px
    img[30, 30] = 200  # 1 px: below min_area
    assert ComponentProposer(min_area=8)(img) == [(2, 2, 12, 12), (20, 20, 23, 23)]
    assert ComponentProposer(min_area=8, max_regions=1)(img) == [(2, 2, 12, 12)]
    assert GridProposer(2)(img) == [(0, 0, 16, 16), (16, 0, 32, 16), (0, 16, 16, 32), (16, 16, 32, 32)]
    # a module's function: called with the image only, or with the image and the prompt's phrases if it takes them
    one = load_proposer("tests.rewards.test_reward_map:boxes_of_image")
    two = load_proposer("tests.rewards.test_reward_map:boxes_of_phrases")
    assert one(img, ("a cat",)) == [(0, 0, 1, 1)] and two(img, ("a cat", "a dog")) == [(0, 0, 2, 2)]
    with pytest.raises(ValueError, match="module:function"):
        load_proposer("nocolon")
    with pytest.raises(ValueError, match="cannot import"):
        load_proposer("no_such_module_here:f")


def boxes_of_image(image):
    return [(0, 0, 1, 1)]


def boxes_of_phrases(image, phrases):
    return [(0, 0, len(phrases), len(phrases))]


def test_centre_per_prompt_weighs_a_sample_against_its_siblings():
    w = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.5, 0.5], [0.7, 0.3]])  # two prompts, two samples each
    c = centre(w, "prompt", 2)
    assert torch.allclose(c[:2], torch.tensor([[0.5, 0.5], [-0.5, -0.5]]))
    assert torch.allclose(c[2:].sum(), torch.tensor(0.0), atol=1e-6)
    assert torch.equal(centre(w, "none"), w)
    with pytest.raises(ValueError, match="whole groups"):
        centre(w[:3], "prompt", 2)


def test_centre_per_token_position_cancels_what_siblings_share():
    w = torch.tensor([[0.5, 1.0], [0.5, 0.5], [0.0, 0.2], [1.0, 0.2]])  # column 0: background, column 1: a region
    c = centre(w, "prompt_token", 2)
    assert torch.allclose(c[:, 0], torch.tensor([0.0, 0.0, -0.5, 0.5]))  # the same background in both: no credit
    assert torch.allclose(c[:, 1], torch.tensor([0.25, -0.25, 0.0, 0.0]))


def test_centre_on_the_global_level_keeps_a_regions_raise_a_bonus():
    # two passing samples (background 0.5): under `prompt` the first's raised region drags its background below 0
    g = [1.0, 1.0, 1.0, -1.0]
    maps = np.stack([reward_map(s, r, (8, 8)) for s, r in zip(g, [[((0, 0, 4, 4), 1.0)], [], [], []])])
    w = pool_to_tokens(maps, 2)  # token 0 is the region's
    assert (centre(w, "prompt", 2)[:2, 1:] < 0).all()
    background = torch.tensor([JudgeOptions().background(s) for s in g])
    assert torch.allclose(background, torch.tensor([0.5, 0.5, 0.5, 0.0]))
    c = centre(w, "prompt_global", 2, background)
    assert torch.allclose(c[:2, 1:], torch.zeros(2, 3)) and torch.isclose(c[0, 0], torch.tensor(0.5))
    assert torch.allclose(c[2], torch.full((4,), 0.25)) and torch.allclose(c[3], torch.full((4,), -0.25))  # symmetric
    with pytest.raises(ValueError, match="background level"):
        centre(w, "prompt_global", 2)
    with pytest.raises(ValueError, match="one of none"):
        centre(w, "median", 2)


def test_prompt_scale_gives_every_prompt_with_a_success_the_same_total():
    # binarised: prompt 0 (4 samples) has one judged success, prompt 1 three, prompt 2 none
    w = torch.tensor([0.5, 0, 0, 0, 0.5, 0.5, 0.5, 0, 0, 0, 0, 0])[:, None].repeat(1, 3)
    c = centre(w, "prompt_scale", 4)
    assert torch.allclose(c[:4, 0], torch.tensor([4.0, 0, 0, 0]))  # the rare success: 4 samples' worth
    assert torch.allclose(c[4:8, 0], torch.tensor([4 / 3] * 3 + [0.0]))
    assert torch.equal(c[8:], torch.zeros(4, 3))  # nothing judged good: nothing learned, no division by zero
    assert torch.allclose(c.view(3, 4, 3).sum(dim=(1, 2))[:2], torch.tensor([12.0, 12.0]))  # equal totals
    assert (c >= 0).all()  # no centring: nothing is pushed away


def test_background_level_follows_the_maps_form():
    assert JudgeOptions().background(0.0) == 0.25 and JudgeOptions(use_global=False).background(0.0) == 0.5
    assert JudgeOptions(signed=True).background(-1.0) == -1.0 and JudgeOptions(binarize=True).background(0.2) == 0.5
    assert JudgeOptions(uniform=True).background(-0.7) == 1.0


def test_uniform_map_ignores_the_judge():
    m = reward_map(-0.9, [((0, 0, 4, 4), -1.0)], (8, 8), uniform=True)
    assert (m == 1).all() and m.dtype == np.float32
