"""The judge's reading of a prompt's spatial relations: the model grounds each named object in a proposed region
(its own yes/no recognition of the region's crop), and the relation is read off where those regions stand.

A tiny judge asked "is there a red square above a blue circle?" about the whole image answers by the objects and
not by where they are (foundation.md at tag archive/wordings-2026-12: on clean renders the prompt's P(yes) beats its reversal's 44 %
of the time). It does recognise which region shows which object, so the relation is read the way T2I-CompBench
scores spatial prompts (a detector's boxes, then their centres compared): here the boxes are the judge's region
proposals and the detector is the model itself.

    score = + min recognition (2 P(yes) - 1) of the best assignment of recognised regions to the named objects
              under which every relation holds;
          = - that of the best assignment of recognised regions if none holds: the objects are there, misplaced;
          = None if the prompt names no relation or some named object is recognised in no region (the region
            scores already judge a missing object).
The relations come from CompWorld's grammar or, for a free-text prompt, `rollout.phrases.spatial_relation` (one
object, a direction, one object); with `reward.proposer: detector:DIR` the regions are a detector's boxes.
"""

from __future__ import annotations

import itertools

from ..world.render import relation_holds
from .proposals import Box


def centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def relation_score(objects: list[str], relations: list[tuple[int, str, int]], boxes: list[Box],
                   p_yes: dict[tuple[int, str], float], match: float, margin: float) -> float | None:
    """objects: the phrase of each named object (by index); relations: (i, relation, j) over those indices;
    p_yes[(region index, phrase)]: the model's P(yes) that the region shows the phrase; match: the P(yes) from which
    a region shows an object; margin: how far apart (px) two centres must be along a relation's axis."""
    if not relations:
        return None
    candidates = [[k for k in range(len(boxes)) if p_yes.get((k, ph), 0.0) >= match] for ph in objects]
    held, failed = [], []
    for assign in itertools.product(*candidates):
        if len(set(assign)) < len(assign):  # one region plays one object
            continue
        confidence = min(2 * p_yes[(k, ph)] - 1 for k, ph in zip(assign, objects))
        holds = all(relation_holds(centre(boxes[assign[i]]), rel, centre(boxes[assign[j]]), margin) for i, rel, j in relations)
        (held if holds else failed).append(confidence)
    if held:
        return max(held)
    return -max(failed) if failed else None
