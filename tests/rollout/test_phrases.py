"""The phrase extractor on T2I-CompBench-style prompts (tests/data/t2i_compbench_sample.txt, written for these
tests): each prompt and the object phrases the local judge should look for."""

import pytest

from srum.rollout.phrases import object_phrases, singular, spatial_relation

EXPECTED = [
    ('a red apple and a green leaf', ['a red apple', 'a green leaf']),
    ('a blue bench and a yellow bicycle', ['a blue bench', 'a yellow bicycle']),
    ('a pink flower and a white vase', ['a pink flower', 'a white vase']),
    ('a black cat and a brown dog', ['a black cat', 'a brown dog']),
    ('a green bus and a red car', ['a green bus', 'a red car']),
    ('an orange pumpkin and a purple grape', ['an orange pumpkin', 'a purple grape']),
    ('a gold ring and a silver necklace', ['a gold ring', 'a silver necklace']),
    ('a white horse and a black cow', ['a white horse', 'a black cow']),
    ('a yellow banana and a red strawberry', ['a yellow banana', 'a red strawberry']),
    ('a blue cup and a green plate', ['a blue cup', 'a green plate']),
    ('a round clock and a square mirror', ['a round clock', 'a square mirror']),
    ('a triangular sign and a circular table', ['a triangular sign', 'a circular table']),
    ('an oval rug and a rectangular window', ['an oval rug', 'a rectangular window']),
    ('a square box and a round ball', ['a square box', 'a round ball']),
    ('a spherical lamp and a cubic stool', ['a spherical lamp', 'a cubic stool']),
    ('a rectangular book and a round coin', ['a rectangular book', 'a round coin']),
    ('a heart-shaped balloon and a star-shaped cookie', ['a heart-shaped balloon', 'a star-shaped cookie']),
    ('a cylindrical vase and a conical hat', ['a cylindrical vase', 'a conical hat']),
    ('a wooden table and a metallic chair', ['a wooden table', 'a metallic chair']),
    ('a fluffy towel and a glass bottle', ['a fluffy towel', 'a glass bottle']),
    ('a leather bag and a rubber ball', ['a leather bag', 'a rubber ball']),
    ('a plastic bottle and a ceramic bowl', ['a plastic bottle', 'a ceramic bowl']),
    ('a furry rabbit and a smooth stone', ['a furry rabbit', 'a smooth stone']),
    ('a fabric sofa and a wooden floor', ['a fabric sofa', 'a wooden floor']),
    ('a metallic spoon and a paper napkin', ['a metallic spoon', 'a paper napkin']),
    ('a woolen scarf and a leather glove', ['a woolen scarf', 'a leather glove']),
    ('a dog on the left of a cat', ['a dog', 'a cat']),
    ('a cat on the right of a bench', ['a cat', 'a bench']),
    ('a lamp next to a bed', ['a lamp', 'a bed']),
    ('a bird above a tree', ['a bird', 'a tree']),
    ('a car behind a bus', ['a car', 'a bus']),
    ('a ball under a table', ['a ball', 'a table']),
    ('a cup on top of a book', ['a cup', 'a book']),
    ('a girl in front of a house', ['a girl', 'a house']),
    ('a horse near a river', ['a horse', 'a river']),
    ('a vase beside a window', ['a vase', 'a window']),
    ('a man holding an umbrella', ['a man', 'an umbrella']),
    ('a woman wearing a hat', ['a woman', 'a hat']),
    ('a boy riding a bicycle', ['a boy', 'a bicycle']),
    ('a girl eating an apple', ['a girl', 'an apple']),
    ('a child playing with a puppy', ['a child', 'a puppy']),
    ('a chef carrying a cake', ['a chef', 'a cake']),
    ('a dog sitting on a sofa', ['a dog', 'a sofa']),
    ('a cat looking at a fish', ['a cat', 'a fish']),
    ('three blue cups on a metallic tray', ['a blue cup', 'a metallic tray']),
    ('two red apples and a green pear', ['a red apple', 'a green pear']),
    ('a tall tree and a short bush', ['a tall tree', 'a short bush']),
    ('a big elephant and a small mouse', ['a big elephant', 'a small mouse']),
    ('a cup of coffee and a slice of cake', ['a cup of coffee', 'a slice of cake']),
    ('a pair of shoes next to a basket', ['a pair of shoes', 'a basket']),
    ('an old man and a young woman', ['an old man', 'a young woman']),
    ('a red car is parked next to a yellow bus', ['a red car', 'a yellow bus']),
]


@pytest.mark.parametrize("prompt,objects", EXPECTED)
def test_objects_of_a_prompt(prompt, objects):
    assert object_phrases(prompt) == objects


def test_the_sample_file_is_these_prompts():
    from pathlib import Path

    from srum.rollout.sources import read_prompt_file

    items = read_prompt_file(Path(__file__).parent.parent / "data" / "t2i_compbench_sample.txt")
    assert [(it.prompt, list(it.objects)) for it in items] == EXPECTED and len(EXPECTED) >= 50


def test_singular_and_edge_cases():
    assert [singular(w) for w in ("cups", "glasses", "berries", "boxes", "people", "bus", "grass")] == \
        ["cup", "glass", "berry", "box", "person", "bus", "grass"]
    assert object_phrases("on the left of") == ["on the left of"]  # nothing to keep: the prompt itself
    assert object_phrases("The Red Apple") == ["a red apple"]


@pytest.mark.parametrize("prompt, read", [
    ("a bird on the left of a lamp", (["a bird", "a lamp"], [(0, "to the left of", 1)])),
    ("A red car on the top of a wooden table.", (["a red car", "a wooden table"], [(0, "above", 1)])),
    ("a dog on the bottom of a bench", (["a dog", "a bench"], [(0, "below", 1)])),
    ("two cats to the right of a sofa", (["a cat", "a sofa"], [(0, "to the right of", 1)])),
    ("a cup left of a plate", (["a cup", "a plate"], [(0, "to the left of", 1)])),
    ("a man next to a cow", None),  # no direction
    ("a cat above a dog and a bird", None),  # a side of two objects
    ("a bird on the left of a lamp on the top of a table", None),  # two directions
    ("above a table", None),  # a side of no object
])
def test_spatial_relation_of_a_free_text_prompt(prompt, read):
    assert spatial_relation(prompt) == read
    if read:  # the same phrases the judge asks each region about, or the reading would find no object
        assert read[0] == object_phrases(prompt)
