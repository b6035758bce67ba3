import random

import pytest

from srum.world import (
    CATEGORIES,
    PromptError,
    enumerate_prompts,
    heldout_set,
    parse,
    training_spec,
)
from srum.world.bench import training_prompts
from srum.world.corrupt import perturb_prompt


@pytest.mark.parametrize(
    "prompt,category,n",
    [
        ("a red square", "single", 1),
        ("a red square and a blue square", "color", 2),
        ("a red square and a red circle", "shape", 2),
        ("a red square to the left of a blue circle", "spatial", 2),
        ("one white triangle", "numeracy", 1),
        ("four white triangles", "numeracy", 4),
        ("three green circles below a yellow square", "complex", 4),
    ],
)
def test_parse_each_template(prompt, category, n):
    spec = parse(prompt)
    assert spec.category == category and len(spec.objects) == n


@pytest.mark.parametrize(
    "prompt",
    [
        "a pink square",  # unknown colour
        "a red square and a red square",  # neither color nor shape
        "a red square above a red square",  # spatial needs different objects
        "one red squares",
        "two red square",
        "five red squares",
        "four red squares above a blue circle",  # complex takes two or three
        "a red square ",  # trailing space is stripped: valid
    ][:-1],
)
def test_parse_rejects(prompt):
    with pytest.raises(PromptError):
        parse(prompt)


def test_sizes_of_the_grammar():
    sizes = {c: len(enumerate_prompts(c)) for c in CATEGORIES}
    assert sizes == {"single": 18, "color": 270, "shape": 36, "spatial": 1224, "numeracy": 72, "complex": 2592}
    for c in CATEGORIES:
        assert all(parse(p).category == c for p in enumerate_prompts(c))


def test_heldout_never_in_training():
    held = heldout_set()
    assert len(held) == 300 and {s.category for s in held} == set(CATEGORIES)
    train = {p for c in CATEGORIES for p in training_prompts(c)}
    assert not {s.prompt for s in held} & train
    stream = {training_spec(0, i).prompt for i in range(5000)}
    assert not {s.prompt for s in held} & stream


def test_training_stream_is_seeded_random_access():
    assert [training_spec(3, i) for i in range(20)] == [training_spec(3, i) for i in range(20)]
    assert [training_spec(3, i) for i in range(20)] != [training_spec(4, i) for i in range(20)]


def test_perturbed_prompt_is_grammatical_and_different():
    rng = random.Random(0)
    for i in range(300):
        spec = training_spec(0, i)
        other = perturb_prompt(spec, rng)
        assert other.prompt != spec.prompt and parse(other.prompt) == other
