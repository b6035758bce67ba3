import numpy as np
import torch

from srum.models.mot import MotUMM
from srum.models.mot_net import nearest_paint
from srum.models.regions import FEATURES, N_PAINTS, region_features
from srum.world.oracle import label_pixels
from srum.world.spec import COLORS
from tests.conftest import TINY

RED, GREEN = COLORS["red"], COLORS["green"]
GEOMETRY = slice(N_PAINTS, N_PAINTS + 7)  # x0, y0, x1, y1, w, h, area (scaled by the canvas)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def _features(img: np.ndarray, k: int = 4):
    feats, pad = region_features(nearest_paint(_tensor(img)), k)
    return feats[0].numpy(), pad[0].numpy()


def test_regions_are_components_of_one_paint_largest_first_with_box_area_and_mask():
    img = np.zeros((32, 32, 3), np.uint8)
    img[4:14, 2:12] = RED  # 10 x 10 = 100 px
    img[20:26, 20:23] = GREEN  # 3 x 6 = 18 px
    img[14:16, 2:4] = GREEN  # touches the red square: another paint, another region (4 px)
    img[0, 30] = RED  # 1 px: a speck, not a region
    feats, pad = _features(img)
    assert feats.shape == (4, FEATURES) and pad.tolist() == [False, False, False, True]
    assert [int(f[:N_PAINTS].argmax()) for f in feats[:3]] == [list(COLORS).index(c) for c in ("red", "green", "green")]
    np.testing.assert_allclose(feats[0, GEOMETRY] * 32, [2, 4, 12, 14, 10, 10, 100 / 32], rtol=1e-6)
    np.testing.assert_allclose(feats[1, GEOMETRY] * 32, [20, 20, 23, 26, 3, 6, 18 / 32], rtol=1e-6)
    np.testing.assert_allclose(feats[1, N_PAINTS + 7 : N_PAINTS + 10], [1.0, -1.0, np.log2(18) / 10], rtol=1e-6)
    np.testing.assert_allclose(feats[2, N_PAINTS + 7 : N_PAINTS + 9], [1.0, 0.0])  # 2 x 2, full
    assert not feats[3].any()


def test_diagonal_pixels_are_not_connected_and_only_the_k_largest_are_kept():
    img = np.zeros((32, 32, 3), np.uint8)
    for i in range(4):  # four 2x2 blocks touching only at corners: four regions of 4 px
        img[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = RED
    img[20:30, 20:30] = RED
    feats, pad = _features(img, k=3)
    assert not pad.any()
    assert [round(float(f[N_PAINTS + 6]) * 32 * 32) for f in feats] == [100, 4, 4]


def test_a_region_as_tall_as_the_canvas_is_one_elongated_token():
    img = np.zeros((32, 32, 3), np.uint8)
    img[0:32, 4:8] = RED
    feats, pad = _features(img, k=2)
    assert pad.tolist() == [False, True]
    np.testing.assert_allclose(feats[0, N_PAINTS + 4 : N_PAINTS + 9], [4 / 32, 1.0, 128 / 1024, 1.0, -3.0])


def test_nearest_paint_is_the_oracles_pixel_labelling():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    paint = nearest_paint(torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert np.array_equal(paint.numpy(), np.stack([label_pixels(i) for i in imgs]))


def test_object_tokens_join_the_judge_and_a_blank_image_has_none():
    torch.manual_seed(0)
    model = MotUMM(TINY.model_copy(update={"und_regions": 4}))
    imgs = np.zeros((2, 32, 32, 3), np.uint8)
    imgs[1, 4:14, 4:14] = RED
    p = model.judge_yes_prob(imgs, [model.question("a red square")] * 2)
    assert np.isfinite(p).all()
    torch.nn.init.normal_(model.net.region_in[-1].bias)  # the region tokens matter only where there are regions
    q = model.judge_yes_prob(imgs, [model.question("a red square")] * 2)
    assert q[0] == p[0] and q[1] != p[1]
