"""The oracle against hand-built images, one rule at a time, including values at the thresholds."""

import random

import numpy as np
import pytest

from srum.world import (
    COLORS,
    check,
    detect,
    failure,
    parse,
    passes,
    render,
    sample_prompt,
)
from srum.world.spec import SHAPE_MASKS

RED = np.array(COLORS["red"])


def canvas():
    return np.zeros((32, 32, 3), np.uint8)


def put(img, x0, y0, mask, color="red"):
    h, w = mask.shape
    img[y0 : y0 + h, x0 : x0 + w][mask] = COLORS[color]
    return img


def rect(w, h):
    return np.ones((h, w), bool)


def test_every_render_of_1000_seeded_prompts_passes():
    rng = random.Random(1234)
    specs = [sample_prompt(rng) for _ in range(1000)]
    assert {s.category for s in specs} == {"single", "color", "shape", "spatial", "numeracy", "complex"}
    failed = [s.prompt for s in specs if not passes(render(s, rng), s)]
    assert failed == []


def test_one_colour_swapped_fails():
    rng = random.Random(7)
    for _ in range(200):
        spec = sample_prompt(rng)
        img = render(spec, rng)
        colour = spec.objects[-1][0]
        other = next(c for c in COLORS if c != colour and c not in spec.prompt)
        swapped = parse(spec.prompt[::-1].replace(colour[::-1], other[::-1], 1)[::-1])  # swap the last colour word
        assert swapped.prompt != spec.prompt
        assert not passes(img, swapped), swapped.prompt


@pytest.mark.parametrize("shape", ["square", "circle", "triangle"])
def test_each_shape_is_recognised(shape):
    img = put(canvas(), 5, 7, SHAPE_MASKS[shape])
    assert [(d.color, d.shape) for d in detect(img)] == [("red", shape)]


def test_background_distance_threshold_80():
    # (230 - d, 30, 30) lies at distance d from red and farther from every other reference.
    for dist, seen in [(79, True), (80, True), (81, False)]:
        img = canvas()
        img[5:15, 5:15] = RED - [dist, 0, 0]
        assert bool(detect(img)) is seen, dist


def test_nearest_reference_wins():
    img = canvas()
    img[0:10, 0:10] = (200, 60, 40)  # closer to red than to yellow or black
    assert detect(img)[0].color == "red"


def test_components_below_12_pixels_are_dropped():
    img = put(canvas(), 0, 0, rect(11, 1))
    assert detect(img) == []
    img = put(canvas(), 0, 0, rect(4, 3))  # 12 pixels
    assert len(detect(img)) == 1


def test_four_connectivity():
    img = put(canvas(), 0, 0, rect(5, 5))
    img = put(img, 5, 5, rect(5, 5))  # touches only at a corner
    assert len(detect(img)) == 2
    img = put(canvas(), 0, 0, rect(5, 5))
    img = put(img, 5, 0, rect(5, 5))  # shares an edge: one component
    assert len(detect(img)) == 1


def test_aspect_ratio_over_1_6_is_unknown():
    assert detect(put(canvas(), 0, 0, rect(10, 6)))[0].shape == "unknown"  # 1.667
    assert detect(put(canvas(), 0, 0, rect(8, 5)))[0].shape == "square"  # 1.6 exactly: not over


@pytest.mark.parametrize("pixels,shape", [(88, "square"), (87, "circle"), (66, "circle"), (65, "triangle")])
def test_fill_thresholds(pixels, shape):
    # Remove pixels from the top-right, keeping column 0 and the bottom row: still one component, box 10 x 10.
    mask = np.ones((10, 10), bool)
    for r, c in [(r, c) for r in range(9) for c in range(1, 10)][: 100 - pixels]:
        mask[r, c] = False
    d = detect(put(canvas(), 0, 0, mask))
    assert len(d) == 1 and d[0].box == (0, 0, 9, 9) and d[0].pixels == pixels and d[0].shape == shape


def two_objects(ax, bx, ay=0, by=0, a="red", b="blue"):
    img = put(canvas(), ax, ay, SHAPE_MASKS["square"], a)
    return put(img, bx, by, SHAPE_MASKS["square"], b)


def test_relation_margin_is_two_pixels():
    left = parse("a red square to the left of a blue square")
    # centres differ by exactly 12 along x when boxes are apart; construct a 2 px margin with tall boxes instead
    img = canvas()
    img[0:10, 0:10] = COLORS["red"]
    img[12:22, 2:12] = COLORS["blue"]  # cx: 5 vs 7 -> 5 + 2 <= 7 holds
    assert passes(img, left)
    img = canvas()
    img[0:10, 0:10] = COLORS["red"]
    img[12:22, 1:11] = COLORS["blue"]  # cx: 5 vs 6 -> fails
    assert not passes(img, left)
    assert passes(two_objects(0, 0, 0, 12), parse("a red square above a blue square"))
    assert not passes(two_objects(0, 0, 0, 12), parse("a red square below a blue square"))
    assert passes(two_objects(20, 0), parse("a red square to the right of a blue square"))


def test_exact_multiset():
    img = two_objects(0, 20)
    assert passes(img, parse("a red square and a blue square"))
    assert not passes(img, parse("a red square"))  # an extra object
    assert not passes(put(canvas(), 0, 0, rect(10, 10)), parse("a red square and a blue square"))  # missing
    img = put(img, 0, 20, rect(10, 5), "green")  # an unknown shape
    assert not passes(img, parse("a red square and a blue square"))


def test_complex_needs_every_object_in_relation():
    spec = parse("two red squares above a blue square")
    img = two_objects(0, 11, 0, 20)
    img = put(img, 20, 0, SHAPE_MASKS["square"], "red")
    assert passes(img, spec)
    img = two_objects(0, 11, 0, 20)
    img = put(img, 22, 22, SHAPE_MASKS["square"], "red")  # not above the blue one
    ok, found = check(img, spec)
    assert not ok and len(found) == 3


def test_same_kind_assignment_is_searched():
    spec = parse("two red squares above a red square")
    img = put(canvas(), 0, 0, SHAPE_MASKS["square"])
    img = put(img, 12, 0, SHAPE_MASKS["square"])
    img = put(img, 6, 20, SHAPE_MASKS["square"])
    assert passes(img, spec)


def test_noise_and_blur_tolerated_within_threshold():
    spec = parse("a green circle")
    img = put(canvas(), 10, 10, SHAPE_MASKS["circle"], "green").astype(float)
    img += np.random.default_rng(0).normal(0, 10, img.shape)
    assert passes(img.clip(0, 255).astype(np.uint8), spec)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="32x32x3"):
        detect(np.zeros((16, 16, 3), np.uint8))


def test_every_prompt_of_the_grammar_renders_and_passes():
    from srum.world import CATEGORIES, enumerate_prompts

    rng = random.Random(5)
    bad = [p for c in CATEGORIES for p in enumerate_prompts(c) if not passes(render(parse(p), rng), parse(p))]
    assert bad == []


def test_failure_names_the_first_rule_broken():
    def why(img, prompt):
        spec = parse(prompt)
        return failure(spec, *reversed(check(img, spec)))

    pair = two_objects(0, 20)
    assert why(pair, "a red square and a blue square") is None
    assert why(pair, "a red square") == "extra object"
    assert why(put(canvas(), 0, 0, rect(10, 10)), "a red square and a blue square") == "missing object"
    assert why(pair, "a red circle and a blue square") == "wrong shape or colour"
    assert why(put(pair.copy(), 0, 20, rect(10, 5), "green"), "a red square and a blue square") == "unknown shape"
    assert why(pair, "a red square to the right of a blue square") == "relation"


def test_object_map_reads_every_pixel_by_the_rules():
    from srum.world.oracle import MAP_COLORS, MAP_SHAPES, object_map

    img = canvas()
    put(img, 2, 2, rect(10, 10), "red")  # square
    put(img, 20, 2, rect(10, 4), "blue")  # aspect 2.5: unknown
    put(img, 2, 20, rect(3, 3), "green")  # 9 px: a fragment the oracle drops
    colour, shape = object_map(img)
    assert colour[5, 5] == MAP_COLORS.index("red") and shape[5, 5] == MAP_SHAPES.index("square")
    assert colour[3, 21] == MAP_COLORS.index("blue") and shape[3, 21] == MAP_SHAPES.index("unknown")
    assert colour[21, 3] == MAP_COLORS.index("green") and shape[21, 3] == MAP_SHAPES.index("fragment")
    assert colour[31, 31] == 0 and shape[31, 31] == 0
    assert (shape > 0).sum() == 100 + 40 + 9
    assert [d.shape for d in detect(img)] == ["square", "unknown"]  # detect is unchanged: fragments dropped


def test_describe_names_relations_only_when_asked_and_when_they_hold():
    from srum.world.oracle import describe

    side_by_side = two_objects(20, 0)  # red right of blue, same row
    assert describe(side_by_side) == "a red square and a blue square"
    assert describe(side_by_side, relations=True) == "a red square to the right of a blue square"
    diagonal = two_objects(0, 20, 0, 20)  # red above-left of blue
    assert describe(diagonal, relations=True) == "a red square above and to the left of a blue square"
    img = canvas()
    img[0:10, 0:10] = COLORS["red"]
    img[12:22, 1:11] = COLORS["blue"]  # centres 1 px apart in x (under the oracle's 2 px), red above
    assert describe(img, relations=True) == "a red square above a blue square"
    # a group relation must hold for every member: the blue square lies between the two red ones
    img = put(put(two_objects(0, 11), 22, 0, SHAPE_MASKS["square"], "red"), 0, 0, SHAPE_MASKS["square"], "red")
    assert describe(img, relations=True) == "two red squares and a blue square"
    assert describe(canvas(), relations=True) == "nothing"
