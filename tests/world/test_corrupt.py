import random

import numpy as np

from srum.world import SHAPES, detect, layout, parse, passes
from srum.world.corrupt import blob, edit_scene, global_noise, resize, warp
from srum.world.render import draw
from srum.world.spec import COLORS, SHAPE_MASKS, shape_mask


def _render(prompt: str, seed: int = 0) -> np.ndarray:
    return draw(layout(parse(prompt), random.Random(seed)))


def test_warp_is_seeded_and_keeps_the_palette():
    img = _render("a red circle and a blue square")
    a, b = warp(img, random.Random(3)), warp(img, random.Random(3))
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == img.shape
    palette = {tuple(c) for c in COLORS.values()} | {(0, 0, 0)}
    assert {tuple(p) for p in a.reshape(-1, 3)} <= palette  # nearest-pixel sampling: no blended colours
    assert not np.array_equal(a, img)


def test_warps_give_both_labels():
    """Mild warps still meet the prompt and strong ones break it: the judge learns the boundary."""
    spec = parse("a yellow square")
    labels = [passes(warp(_render(spec.prompt, i), random.Random(i)), spec) for i in range(60)]
    assert 0 < sum(labels) < len(labels)


def test_global_noise_is_a_pure_function_of_the_rng():
    img = _render("two green triangles")
    assert np.array_equal(global_noise(img, random.Random(9)), global_noise(img, random.Random(9)))


def test_shape_masks_are_the_world_shapes_and_stretch_by_fill():
    """At S = 10 px the masks are the world's (100 / 80 / 50 pixels); stretched, the oracle still
    tells them apart by fill, and past an aspect of 1.6 they are unknown."""
    assert {s: int(m.sum()) for s, m in SHAPE_MASKS.items()} == {"square": 100, "circle": 80, "triangle": 50}
    for shape in SHAPES:
        for w, h, seen in ((8, 6, shape), (12, 9, shape), (14, 6, "unknown")):
            img = np.zeros((32, 32, 3), np.uint8)
            img[2 : 2 + h, 2 : 2 + w][shape_mask(shape, w, h)] = COLORS["red"]
            assert [d.shape for d in detect(img)] == [seen], (shape, w, h)


def test_resized_objects_are_labelled_by_fill_not_size():
    """A 6 px square is still a square and a 14 x 5 square is an unknown shape; both outcomes occur."""
    spec = parse("a red square")
    verdicts = []
    for seed in range(40):
        rng = random.Random(seed)
        objs = layout(spec, rng)
        img = resize(draw(objs), objs, rng)
        assert set(map(tuple, img.reshape(-1, 3))) <= {(0, 0, 0), COLORS["red"]}
        verdicts.append(passes(img, spec))
    assert 0 < sum(verdicts) < len(verdicts)


def test_edited_scenes_add_change_or_remove_one_object_and_fail_their_prompt():
    """edit_scene: one object more (never past four), one changed, or one fewer, with the relations of those
    that remain; a render of the edit fails the original prompt (the oracle's rules label it)."""
    import collections

    for prompt in ("a red circle", "two blue squares", "a green triangle to the left of a white circle",
                   "four purple circles"):
        spec = parse(prompt)
        for seed in range(30):
            rng = random.Random(seed)
            edit = edit_scene(spec, rng)
            before, after = collections.Counter(spec.objects), collections.Counter(edit.objects)
            added, gone = after - before, before - after
            assert (sum(added.values()), sum(gone.values())) in {(1, 0), (1, 1), (0, 1)}, (prompt, edit)
            assert len(edit.objects) <= 4 and edit.objects
            assert all(0 <= a < len(edit.objects) and 0 <= b < len(edit.objects) for a, _, b in edit.relations)
            assert not passes(draw(layout(edit, rng)), spec), (prompt, edit)
    kept = edit_scene(parse("a red circle to the left of a blue square"), random.Random(1))
    if len(kept.objects) == 2:
        assert kept.relations == ((0, "to the left of", 1),)


def test_a_swap_keeps_every_colour_and_shape_but_binds_them_wrongly():
    import collections

    spec = parse("a green circle and a white triangle")
    for seed in range(10):
        edit = edit_scene(spec, random.Random(seed), ("swap",))
        assert sorted(edit.objects) == [("green", "triangle"), ("white", "circle")]
        img = draw(layout(edit, random.Random(seed)))
        assert not passes(img, spec)
        found = detect(img)
        assert collections.Counter(d.color for d in found) == collections.Counter(c for c, _ in spec.objects)
        assert collections.Counter(d.shape for d in found) == collections.Counter(s for _, s in spec.objects)
    # same colours: the shapes swap places, which only a relation can tell
    rel = parse("a purple circle above a purple triangle")
    edit = edit_scene(rel, random.Random(0), ("swap",))
    assert edit.objects == (("purple", "triangle"), ("purple", "circle")) and edit.relations == rel.relations
    assert not passes(draw(layout(edit, random.Random(0))), rel)
    # a full scene cannot grow, so with only "add" allowed it is changed instead (before: an empty choice)
    full = parse("four purple circles")
    assert len(edit_scene(full, random.Random(0), ("add",)).objects) == 4
    # a scene of one kind of object cannot swap: it is changed instead
    assert edit_scene(parse("two blue squares"), random.Random(0), ("swap",)).objects != (("blue", "square"),) * 2


def test_resize_redraws_the_object_it_is_given_and_no_other():
    spec = parse("a red circle to the left of a blue square")
    for seed in range(10):
        rng = random.Random(seed)
        objs = layout(spec, rng)
        before = draw(objs)
        after = resize(before.copy(), objs, rng, objs[1])
        other = objs[0]
        x0, y0, x1, y1 = other.box
        assert np.array_equal(before[y0:y1, x0:x1], after[y0:y1, x0:x1])
        assert set(map(tuple, after[after.any(-1)])) <= {COLORS["red"], COLORS["blue"]}


def test_blob_redraws_one_object_in_its_colour_and_the_rules_decide():
    """A blob replaces only the object given, in that object's colour; whether it still is that shape is the
    world's call (fill and aspect), so over many draws some pass and some fail."""
    spec = parse("a red triangle to the left of a blue circle")
    verdicts = []
    for seed in range(60):
        rng = random.Random(seed)
        objs = layout(spec, rng)
        before = draw(objs)
        after = blob(before.copy(), objs, rng, objs[1])
        x0, y0, x1, y1 = objs[0].box
        assert np.array_equal(before[y0:y1, x0:x1], after[y0:y1, x0:x1])
        assert set(map(tuple, after[after.any(-1)])) <= {COLORS["red"], COLORS["blue"]}
        verdicts.append(passes(after, spec))
    assert 5 < sum(verdicts) < 55
