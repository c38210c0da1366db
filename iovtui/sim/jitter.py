"""Per-action cost jitter (``[costs] jitter``): the variability real hosts have.

A real host never spends exactly the same time on the same work twice: cache
misses, a TLB refill, another interrupt, the scheduler.  The spread is
right-skewed: there is a floor (the work itself) and a tail.  Each cost ``c``
the model spends on a vCPU or a host thread is drawn as a *shifted
exponential* around it::

    c × (1 − j + E),   E ~ Exp(mean j)

so it is never below ``(1 − j)·c``, its mean is ``c`` (the figures' averages
do not move) and its standard deviation is ``j·c``: ``j`` is the coefficient of
variation.  The draw is one ``getrandbits`` of the engine's one seeded
``random.Random`` (the same seed gives the same run byte for byte) indexing a
table of the distribution's quantiles, which costs next to nothing.

``j = 0`` turns it off: no draw at all and every figure exactly as the cost
table says.  Hardware (the wire, a VF's DMA engine) is not jittered.
"""

from __future__ import annotations

import math
import random

from .engine import Resource

__all__ = ["Jitter", "JitteredResource"]

_BITS = 12
_N = 1 << _BITS


class Jitter:
    """The run's cost jitter: ``draw(ns)`` is ``ns`` of work as the host spends
    it this time.  It holds the generator itself, not a closure or its bound
    ``getrandbits`` (which ``copy.deepcopy`` would not copy), so that a deep
    copy of the run (the driver's checkpoints) draws from the copy's."""

    __slots__ = ("spread", "table", "rng")

    def __init__(self, rng: random.Random, spread: float) -> None:
        self.spread = spread
        #: the shifted exponential's quantiles at the middle of each of _N equal slices
        self.table = tuple(1.0 - spread + spread * -math.log(1.0 - (k + 0.5) / _N) for k in range(_N))
        self.rng = rng

    def draw(self, ns: int) -> int:
        return int(ns * self.table[self.rng.getrandbits(_BITS)]) if ns > 0 else ns


class JitteredResource(Resource):
    """A :class:`Resource` (vCPU, host thread) whose every reservation is
    jittered: what queues behind it sees the real, varying time."""

    __slots__ = ("_table", "_rng")

    def __init__(self, name: str, jitter: Jitter) -> None:
        super().__init__(name)
        self._table = jitter.table
        self._rng = jitter.rng

    def reserve(self, now: int, duration: int) -> int:
        if duration > 0:
            duration = int(duration * self._table[self._rng.getrandbits(_BITS)])
        start = self.busy_until if self.busy_until > now else now
        end = start + duration
        self.busy_until = end
        self.busy_ns += duration
        return end
