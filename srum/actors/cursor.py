"""What the controller tracks of the data: which batches are learned (the cursor a checkpoint records) and each
batch in flight."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


class Cursor:
    """Which batches (by index) are learned, so that a checkpoint records exactly those and a resumed run makes
    every other one: every index below `frontier` is learned, `ahead` holds the learned ones above it (streaming
    learns out of order), `retry` the ones to make again (lost with an actor, or dropped as stale)."""

    def __init__(self, prompts_per_step: int, frontier: int = 0, ahead=()):
        self.pps, self.frontier, self.ahead, self.next, self.retry = prompts_per_step, frontier, set(ahead), frontier, deque()

    @classmethod
    def from_state(cls, state: dict | None, prompts_per_step: int) -> Cursor:
        if not state:
            return cls(prompts_per_step)
        return cls(prompts_per_step, state["data_position"] // prompts_per_step, state.get("learned_ahead", []))

    def issue(self) -> int:
        if self.retry:
            return self.retry.popleft()
        while self.next in self.ahead:
            self.next += 1
        self.next += 1
        return self.next - 1

    def give_back(self, index: int) -> None:
        self.retry.append(index)

    def learned(self, index: int) -> None:
        self.ahead.add(index)
        while self.frontier in self.ahead:
            self.ahead.remove(self.frontier)
            self.frontier += 1

    def state(self) -> dict:
        """What a checkpoint records: data_position in prompts (as the local engine counts), learned batches above it."""
        return {"data_position": self.frontier * self.pps, "learned_ahead": sorted(self.ahead)}


@dataclass
class Batch:
    index: int  # data position in batches: prompts index * prompts_per_step onwards, seed (seed, index)
    version: int  # the policy version it was generated with
    rollouts: object = None  # ObjectRef
    judgements: object = None  # ObjectRef
    meta: dict = field(default_factory=dict)
