import json

import pytest

from srum.io import InputError
from srum.rollout.sources import (
    CompWorldSource,
    FileSource,
    item,
    prompt_source,
    read_prompt_file,
)
from srum.world import training_spec


def test_compworld_source_is_the_training_stream():
    got = CompWorldSource(4).take(10, 3)
    assert [it.prompt for it in got] == [training_spec(4, i).prompt for i in (10, 11, 12)]
    assert all(it.spec is not None for it in got) and isinstance(prompt_source("compworld", 0), CompWorldSource)


def test_jsonl_and_json_files_cycle(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a red square"}\n{"prompt": "two blue circles"}\n')
    assert [s.prompt for s in FileSource(f).take(1, 3)] == ["two blue circles", "a red square", "two blue circles"]
    g = tmp_path / "p.json"
    g.write_text(json.dumps(["a red square", {"prompt": "a green circle"}]))
    assert [s.prompt for s in FileSource(g).take(0, 2)] == ["a red square", "a green circle"]


def test_free_text_prompts_keep_their_objects_and_have_no_scene(tmp_path):
    t = tmp_path / "compbench.txt"
    t.write_text("a red apple and a green leaf\n\n# a comment\na wooden table to the left of a cat\n")
    items = read_prompt_file(t)
    assert [it.objects for it in items] == [("a red apple", "a green leaf"), ("a wooden table", "a cat")]
    assert all(it.spec is None and it.category == "free" for it in items)
    j = tmp_path / "p.jsonl"
    j.write_text(json.dumps({"prompt": "a fluffy towel", "category": "texture", "objects": ["a towel"]}) + "\n")
    assert read_prompt_file(j)[0] == item("a fluffy towel", "texture", ["a towel"])
    # a CompWorld prompt keeps its exact scene, and the oracle applies
    cw = item("two blue circles above a green triangle")
    assert cw.spec is not None and cw.category == "complex" and cw.objects == ("a blue circle", "a green triangle")


def test_bad_prompt_files_name_the_place(tmp_path):
    g = tmp_path / "p.json"
    g.write_text(json.dumps(["a red square", 7]))
    with pytest.raises(InputError, match="item 1"):
        FileSource(g)
    g.write_text("[1,\n")
    with pytest.raises(InputError, match="p.json:2: not valid JSON"):
        FileSource(g)
    with pytest.raises(InputError, match="no such"):
        FileSource(tmp_path / "missing.json")
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a cat", "objects": []}\n')
    with pytest.raises(InputError, match="p.jsonl:1: 'objects' must be a non-empty list"):
        read_prompt_file(j)
    j.write_text('{"prompt": "a red square", "category": "spatial"}\n')
    with pytest.raises(InputError, match="does not match the CompWorld prompt"):
        read_prompt_file(j)
    j.write_text('{"prompt": "a cat", "colour": "red"}\n')
    with pytest.raises(InputError, match="unknown field 'colour'"):
        read_prompt_file(j)
    with pytest.raises(InputError, match="are .txt"):
        read_prompt_file(tmp_path / "p.csv") if (tmp_path / "p.csv").write_text("x") else None
