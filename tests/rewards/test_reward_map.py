import numpy as np
import pytest

from srum.rewards.reward_map import reward_map

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


def test_ablation_switches():
    regions = [((0, 0, 4, 4), 0.6)]
    assert np.allclose(reward_map(-0.5, regions, (H, W), use_global=False)[:4, :4], 0.8)
    assert np.allclose(reward_map(-0.5, regions, (H, W), use_local=False), 0.5 * 0.25)
    b = reward_map(0.2, [((0, 0, 4, 4), 0.1)], (H, W), binarize=True)
    assert np.isclose(b[0, 0], 1.0) and np.isclose(b[7, 7], 0.5)


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


def test_uniform_map_ignores_the_judge():
    m = reward_map(-0.9, [((0, 0, 4, 4), -1.0)], (8, 8), uniform=True)
    assert (m == 1).all() and m.dtype == np.float32
