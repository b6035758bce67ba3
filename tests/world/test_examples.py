"""The judge's training examples (srum/world/examples.py)."""

import random

import numpy as np

from srum.world import check, failure, parse, passes, training_spec
from srum.world.spec import OPPOSITE
from srum.world.examples import und_example


def test_free_layouts_place_related_scenes_anywhere_labelled_by_the_rules():
    """und_free_layouts: the named objects placed with no regard to the relation, so it holds, fails or misses by a
    pixel — the relation mistakes a generator makes and renders never show; off, it draws nothing (old recipes replay)."""
    related = [s for s in (training_spec(3, i) for i in range(400)) if s.relations][:80]
    free = [und_example(random.Random(i), s, free_layouts=1.0) for i, s in enumerate(related)]
    assert {e[3] for e in free} == {"free layout"} and all(text == s.prompt for (_, text, _, _), s in zip(free, related))
    assert all(label == passes(img, s) for (img, _, label, _), s in zip(free, related))
    why = []
    for (img, _, _, _), s in zip(free, related):
        passed, found = check(img, s)
        why.append(failure(s, found, passed))
    assert 10 < why.count(None) < 70 and why.count("relation") > 10  # both answers, and relation failures among the noes
    off = und_example(random.Random(0), related[0], free_layouts=0.0)
    assert np.array_equal(off[0], und_example(random.Random(0), related[0])[0])


def test_reversed_relations_ask_a_render_the_opposite_relation_labelled_by_the_rules():
    """und_reversed_relations: a related scene's render asked with its first relation reversed; the oracle labels
    it, and a render keeps its relation by 4 px, so (noise aside) the answer is no; off, nothing changes."""
    related = [s for s in (training_spec(3, i) for i in range(400)) if s.relations][:60]
    ex = [und_example(random.Random(i), s, reversed_relations=1.0) for i, s in enumerate(related)]
    assert {e[3] for e in ex} == {"reversed relation"}
    for (img, text, label, _), s in zip(ex, related):
        rel = s.relations[0][1]
        assert text == s.prompt.replace(rel, OPPOSITE[rel], 1) and label == passes(img, parse(text))
    assert sum(label for _, _, label, _ in ex) <= 3  # a reversed relation is false on a render
    unrelated = next(s for s in (training_spec(3, i) for i in range(50)) if not s.relations)
    assert und_example(random.Random(0), unrelated, reversed_relations=1.0)[3] != "reversed relation"
