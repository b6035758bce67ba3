import json

import pytest

from srum.io import InputError
from srum.rollout.sources import CompWorldSource, FileSource, prompt_source
from srum.world import training_spec


def test_compworld_source_is_the_training_stream():
    assert CompWorldSource(4).take(10, 3) == [training_spec(4, i) for i in (10, 11, 12)]
    assert isinstance(prompt_source("compworld", 0), CompWorldSource)


def test_jsonl_and_json_files_cycle(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a red square"}\n{"prompt": "two blue circles"}\n')
    assert [s.prompt for s in FileSource(f).take(1, 3)] == ["two blue circles", "a red square", "two blue circles"]
    g = tmp_path / "p.json"
    g.write_text(json.dumps(["a red square", {"prompt": "a green circle"}]))
    assert [s.prompt for s in FileSource(g).take(0, 2)] == ["a red square", "a green circle"]


def test_bad_prompt_files_name_the_place(tmp_path):
    g = tmp_path / "p.json"
    g.write_text(json.dumps(["a red square", "a red hexagon"]))
    with pytest.raises(InputError, match="item 1"):
        FileSource(g)
    g.write_text("[1,\n")
    with pytest.raises(InputError, match="p.json:2: not valid JSON"):
        FileSource(g)
    with pytest.raises(InputError, match="no such"):
        FileSource(tmp_path / "missing.json")
