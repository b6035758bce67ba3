"""The object-store transport: one put per version into Ray's object store (the learner's return value); a worker's
`ray.get` maps it zero-copy on its node and Ray moves it between nodes. Works on any cluster; costs two round trips
through the raylet per version, which dominate for small models (~8 ms for 10 MB)."""

from __future__ import annotations

from .published import Published


class ObjectStore:
    name = "object_store"

    def __init__(self, learner):
        import ray

        self.learner = learner
        self.dtype = ray.get(learner.weights_dtype.remote())  # the flat buffer's: bf16 travels as its raw int16 bits

    def publish(self, version: int, epoch: int, in_use: set[int], generators: dict) -> Published:
        """Not awaited: generators block on the weights only when they need them."""
        return Published(version, ref=[self.learner.weights.remote()], epoch=epoch, dtype=self.dtype)

    def stale(self, generators: dict) -> bool:
        return False

    def close(self) -> None:
        pass
