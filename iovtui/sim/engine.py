"""Discrete-event core on a virtual nanosecond clock.

A heap of ``(time, seq, action, args)``: ``seq`` is a global counter, so two
events at the same virtual time run in the order they were scheduled (FIFO on
ties) and the action itself is never compared.  One seeded ``random.Random``
belongs to the run; nothing else in the model may draw randomness, which is
what makes the same preset and seed give the same trace byte for byte.

An action that loops (a NAPI poll, a backend's run) may take its next step
in place instead of scheduling it, when that step is what the heap would pop
next anyway: its time is before every pending event (a tie goes to the
pending one, which was scheduled first) and not past ``horizon``, the virtual
time the current ``run`` may reach (``-1`` in :meth:`Engine.step`, which runs
exactly one step).  The step then counts in ``events_run`` as if popped
(:meth:`Engine.go_on`), so a run takes the same steps in the same order and
emits the same events whatever the way it is run (``step``, ``run_until``,
``run``): a replay to ``events_run == N`` reaches the same state.
"""

from __future__ import annotations

import heapq
import random
from typing import Any, Callable

from .trace import Trace

__all__ = ["Engine", "Resource"]

_heappush = heapq.heappush   # (bound once: ``at`` runs a few times per packet)


class Engine:
    """The clock, the event heap and the run's random number generator."""

    __slots__ = ("now", "_heap", "_seq", "rng", "seed", "trace", "events_run", "halted", "horizon")

    def __init__(self, seed: int = 1, trace: Trace | None = None) -> None:
        self.now: int = 0
        self._heap: list[tuple[int, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.seed = seed
        self.rng = random.Random(seed)
        self.trace = trace if trace is not None else Trace()
        self.events_run = 0
        #: set by the model when the run is complete; ``run`` stops there
        self.halted = False
        #: how far (virtual ns) the running action may go on in place (see go_on)
        self.horizon = -1

    # -- scheduling -------------------------------------------------------
    def at(self, t: int, action: Callable[..., Any], *args: Any) -> None:
        """Run ``action(*args)`` at virtual time ``t`` (ns, never in the past)."""
        if t < self.now:
            t = self.now
        seq = self._seq = self._seq + 1
        _heappush(self._heap, (t, seq, action, args))

    def after(self, delay: int, action: Callable[..., Any], *args: Any) -> None:
        """Run ``action(*args)`` ``delay`` ns from now."""
        seq = self._seq = self._seq + 1
        _heappush(self._heap, (self.now + (delay if delay > 0 else 0), seq, action, args))

    def reserve_seq(self) -> int:
        """A place in the FIFO order of events, as ``at`` would give one now,
        for an event the model holds back and may :meth:`push` later (one
        that is known to do nothing while some state lasts)."""
        self._seq += 1
        return self._seq

    def push(self, t: int, seq: int, action: Callable[..., Any], *args: Any) -> None:
        """Schedule ``action(*args)`` at ``t`` in the place ``seq`` (from
        :meth:`reserve_seq`) holds: it runs where it would have, had it been
        scheduled when the place was taken."""
        heapq.heappush(self._heap, (t, seq, action, args))

    def go_on(self, t: int) -> bool:
        """May the running action take its next step, due at ``t``, in place?

        Yes when that step is the one the heap would pop next (``t`` before
        every pending event) within this run's ``horizon``, and the run is not
        complete: then the clock moves to ``t`` and the step counts as an
        event run, exactly as if it had been scheduled and popped."""
        heap = self._heap
        if t <= self.horizon and not self.halted and (not heap or t < heap[0][0]):
            self.now = t
            self.events_run += 1
            return True
        return False

    # -- running ----------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Run exactly one event.  Returns False when nothing is left."""
        if not self._heap:
            return False
        t, _seq, action, args = heapq.heappop(self._heap)
        self.now = t
        self.events_run += 1
        action(*args)
        return True

    def run_until(self, t_end: int, max_events: int | None = None) -> int:
        """Run every event with time <= ``t_end``; the clock ends at ``t_end``.

        Returns the number of events run (steps taken in place included).
        With ``max_events`` (a budget of actions popped) it stops early (and
        the clock stays at the last event run).
        """
        heap = self._heap
        pop = heapq.heappop
        n = 0
        first = self.events_run
        self.horizon = t_end
        try:
            while heap and heap[0][0] <= t_end:
                if max_events is not None and n >= max_events:
                    self.events_run += n
                    return self.events_run - first
                t, _seq, action, args = pop(heap)
                self.now = t
                action(*args)
                n += 1
        finally:
            self.horizon = -1
        self.events_run += n
        if t_end > self.now:
            self.now = t_end
        return self.events_run - first

    def run(self, stop: Callable[[], bool] | None = None, max_events: int | None = None,
            until: int | None = None) -> int:
        """Run until the heap is empty, ``stop()`` is true, or ``max_events``.

        With ``until`` (ns) it also stops before the first event later than
        that virtual time, and the clock ends at ``until`` unless the run
        was complete (``halted``) before it: whichever comes first."""
        heap = self._heap
        pop = heapq.heappop
        n = 0
        first = self.events_run
        if stop is None and max_events is None:
            # the plain run (headless) and ``--until``: the hottest loop in the model
            horizon = until if until is not None else 1 << 62
            self.horizon = horizon
            try:
                while heap and not self.halted and heap[0][0] <= horizon:
                    t, _seq, action, args = pop(heap)
                    self.now = t
                    action(*args)
                    n += 1
            finally:
                self.horizon = -1
            self.events_run += n
            if until is not None and not self.halted and until > self.now:
                self.now = until
            return self.events_run - first
        if until is not None:
            stop_before = stop

            def stop() -> bool:
                return (not heap or heap[0][0] > until) or (stop_before is not None and stop_before())
        # with stop() or max_events, steps are counted one by one (each is one
        # event, as in Engine.step): no action goes on in place
        self.horizon = -1
        try:
            while heap and not self.halted:
                if stop is not None and stop():
                    break
                if max_events is not None and n >= max_events:
                    break
                t, _seq, action, args = pop(heap)
                self.now = t
                action(*args)
                n += 1
        finally:
            self.horizon = -1
        self.events_run += n
        if until is not None and not self.halted and until > self.now and (not heap or heap[0][0] > until):
            self.now = until
        return self.events_run - first


class Resource:
    """A single server that does one piece of work at a time (a vCPU, a host
    thread, the wire).  ``reserve`` queues work FIFO and says when it ends, so
    a busy resource delays what comes after it: queueing falls out of this.
    """

    __slots__ = ("name", "busy_until", "busy_ns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy_until = 0
        self.busy_ns = 0

    def reserve(self, now: int, duration: int) -> int:
        start = self.busy_until if self.busy_until > now else now
        end = start + duration
        self.busy_until = end
        self.busy_ns += duration
        return end

    def idle_at(self, now: int) -> bool:
        return self.busy_until <= now
