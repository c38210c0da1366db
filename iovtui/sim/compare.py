"""Three techniques side by side, live: one :class:`CompareDriver` runs a
Simulation per technique (device emulation, virtio, SR-IOV) from the same
preset and seed, keeps them at the same virtual time in step with the wall
clock, and publishes frozen :class:`CompareFrame` snapshots at a bounded rate
(never per event).  While paused it awaits an ``asyncio.Event``: nothing spins.

It reuses :class:`~iovtui.sim.driver.Driver` for everything that is not about
one simulation: the speed table and ``faster``/``slower``, ``pause``/``resume``/
``toggle`` (the wake event), subscribers, ``publish``, ``start``/``stop``.

Clock: all running simulations share one virtual clock ``t_ns``.  A tick
advances it in chunks; every chunk runs each simulation up to the same
instant (``Engine.run_until``), so after any ``advance`` every simulation that
is not complete stands at exactly ``t_ns``.  A tick stops early (at a chunk
boundary, still in step) when its wall-clock or event budget is spent, so at
high speeds the three fall behind the wall clock together instead of drifting
apart.  Chunking never changes a run: events are ordered by (time, seq) alone.

Step (decision): a step advances all three to the time of the earliest next
event among them and runs every event due at that instant in each of them,
so the columns interleave exactly as they would in real time and one step
is usually one event in one column.  A simulation that is complete stays at
the time it completed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from .driver import CHECKPOINTS_KEPT, DEFAULT_SPEED_INDEX, Driver
from .preset import Preset
from .trace import RingSink, Trace
from .vmm import HOST_PROFILES, HostProfile
from .world import Simulation

__all__ = ["CompareDriver", "CompareFrame", "CompareColumn", "COMPARE_TECHNIQUES", "COMPARE_VARIANTS",
           "HOST_CHOICES", "compare_cases", "with_host_profile", "RING_VARIANTS", "ring_preset"]

COMPARE_TECHNIQUES = ("emulation", "virtio", "sriov")

#: the variants ``iovtui compare`` (and ``iovtui bench``) run, under each host
#: profile: (label, technique, preset overrides)
COMPARE_VARIANTS = (
    ("emulation", "emulation", {}),
    ("virtio", "virtio", {"virtio": {"vhost": False}}),
    ("virtio+vhost", "virtio", {"virtio": {"vhost": True}}),
    ("sriov", "sriov", {}),
)
#: ``compare --virtio-rings``: the virtio variants with the split and with the packed
#: ring, each counting the distinct 64-byte lines of ring memory it writes
RINGS = ("split", "packed")
RING_VARIANTS = tuple((f"{label} {ring}", tech, {"virtio": {**opts["virtio"], "ring": ring}})
                      for label, tech, opts in COMPARE_VARIANTS if tech == "virtio" for ring in RINGS)


def ring_preset(preset: Preset, ring: str, opts: dict | None = None) -> Preset:
    """``preset`` with virtio's ``ring`` and ring-line counting on (and ``opts``).
    A queue size the split ring cannot take (packed allows any) becomes the
    power of two at or below it, at most 1,024 (QEMU's virtio-net), on the
    split side, which the queue_size shows."""
    v = {**(opts or {}), "ring": ring, "count_ring_lines": True}
    qs = preset.virtio["queue_size"]
    if ring == "split" and (qs & (qs - 1) or qs > 1024):
        v["queue_size"] = min(1024, 1 << (qs.bit_length() - 1))
    return preset.with_options(virtio=v)


#: ``compare --host``: the preset's own [host], one profile for every
#: technique, or every variant under each of the three profiles
HOST_CHOICES = ("all", "preset", *HOST_PROFILES)


def with_host_profile(preset: Preset, profile: str) -> Preset:
    """``preset`` on host ``profile`` (``none`` | ``apicv`` | ``apicv+pi``);
    x2APIC stays as the preset has it."""
    return preset.with_options(host=dict(HOST_PROFILES[profile]))


def compare_cases(preset: Preset, host: str = "all", rings: bool = False) -> list[tuple[str, str, Preset]]:
    """(variant label, technique, preset) for each run ``compare`` makes, the
    variants of one host profile together (``rings``: RING_VARIANTS)."""
    from .paths import available

    if host not in HOST_CHOICES:
        raise ValueError(f"host must be one of {', '.join(HOST_CHOICES)}")
    bases = ([preset] if host == "preset" else
             [with_host_profile(preset, h) for h in (HOST_PROFILES if host == "all" else (host,))])
    built = available()
    if rings:
        return [(label, tech, ring_preset(base, opts["virtio"]["ring"], opts["virtio"]))
                for base in bases for label, tech, opts in RING_VARIANTS if tech in built]
    return [(label, tech, base.with_options(**opts) if opts else base)
            for base in bases for label, tech, opts in COMPARE_VARIANTS if tech in built]


@dataclass(frozen=True)
class CompareColumn:
    """One technique's state, frozen at one instant."""

    technique: str
    label: str                    # Technique.label(), e.g. "virtio (vhost off, event idx on)"
    stages: tuple[str, ...]
    stage: int                    # the path stage of the last trace event (0: none yet)
    summary: dict[str, Any]       # Simulation.summary() (treat as read-only)
    narration: str                # the last narrated event's message ("" before any)
    narration_t: int | None       # its virtual time
    last_kind: str                # its kind ("exit", "deliver", ...; "" before any)
    complete: bool
    t_ns: int                     # this simulation's clock (== the frame's unless complete)
    events_run: int


@dataclass(frozen=True)
class CompareFrame:
    """Everything the compare view draws, frozen at one instant."""

    seq: int
    t_ns: int
    running: bool
    speed: float
    preset: str
    seed: int
    host: str                     # the host profile in a few words (HostProfile.label())
    columns: tuple[CompareColumn, ...]
    complete: bool
    events_run: int


class _Run:
    """One technique's simulation with a one-event trace sink (the narration
    line needs only the newest event; the sink keeps nothing else)."""

    __slots__ = ("technique", "trace", "sink", "sim", "ring")

    def __init__(self, preset: Preset, technique: str, seed: int, packets: int | None,
                 ring: str | None = None) -> None:
        self.technique = technique
        self.ring = ring                          # virtio-rings mode: "split" | "packed"
        self.trace = Trace()
        self.sink = RingSink(maxlen=1)
        self.trace.add_sink(self.sink)
        self.sim = Simulation(preset, technique, seed=seed, packets=packets, trace=self.trace)

    @property
    def done(self) -> bool:
        eng = self.sim.engine
        return eng.halted or self.sim.complete

    def column(self) -> CompareColumn:
        sim = self.sim
        t = sim.technique
        last = self.sink.events[-1] if self.sink.events else None
        return CompareColumn(
            technique=t.name,
            label=t.label() if self.ring != "split" else t.label()[:-1] + ", split ring)",
            stages=tuple(t.stages),
            stage=last.stage if last is not None else 0,
            summary=sim.summary(),
            narration=last.msg if last is not None else "",
            narration_t=last.t if last is not None else None,
            last_kind=last.kind if last is not None else "",
            complete=sim.complete,
            t_ns=sim.engine.now,
            events_run=sim.engine.events_run,
        )


class CompareDriver(Driver):
    """Runs the three techniques on the same preset and seed, in one virtual
    time, in step with the wall clock.  The preset's own settings apply
    (vhost, event idx, the [host] profile, ITR, ...)."""

    #: a tick spends at most this share of its frame period running the model
    TICK_SHARE = 0.5

    def __init__(self, preset: Preset, seed: int = 1, packets: int | None = None,
                 techniques: tuple[str, ...] = COMPARE_TECHNIQUES,
                 speed_index: int = DEFAULT_SPEED_INDEX, max_fps: float = 30.0,
                 max_events_per_tick: int = 30000, rings: bool = False) -> None:
        from .paths import available

        #: virtio with the split ring beside virtio with the packed ring (compare --virtio-rings)
        self.rings = rings
        self.preset = preset
        self.seed = seed
        self.packets = packets
        built = available()
        self.techniques = tuple(t for t in techniques if t in built)
        super().__init__(self._make_runs, speed_index=speed_index, max_fps=max_fps,
                         max_events_per_tick=max_events_per_tick)

    # -- the simulations -----------------------------------------------------------
    def _make_runs(self, _trace: Trace | None = None) -> list[_Run]:
        if self.rings:
            return [_Run(ring_preset(self.preset, r), "virtio", self.seed, self.packets, r) for r in RINGS]
        return [_Run(self.preset, t, self.seed, self.packets) for t in self.techniques]

    def _new(self, make_sim) -> None:  # Driver calls this from __init__ and restart
        self._make_sim = make_sim
        self.runs: list[_Run] = self._make_runs()
        self.t_ns = 0
        #: t_ns at the start of each step (for step_back)
        self._marks: list[int] = []

    @property
    def sims(self) -> list[Simulation]:
        return [r.sim for r in self.runs]

    @property
    def complete(self) -> bool:
        return all(r.done for r in self.runs)

    def advance(self, dt_ns: int, deadline: float | None = None, chunks: int = 8) -> int:
        """Advance the shared clock by ``dt_ns`` (every simulation that is not
        complete runs to the same instant).  With a wall-clock ``deadline``
        (``time.monotonic()``) or more than ``max_events_per_tick`` events it
        stops early at a chunk boundary, all still in step.  Returns the
        number of events run."""
        target = self.t_ns + max(0, int(dt_ns))
        chunk = max(1000, (target - self.t_ns + chunks - 1) // chunks)
        n = 0
        while self.t_ns < target:
            t = min(target, self.t_ns + chunk)
            for r in self.runs:
                if not r.done:
                    n += r.sim.engine.run_until(t)
            self.t_ns = t
            if deadline is not None and time.monotonic() >= deadline:
                break
            if n >= self.max_events_per_tick:
                break
        return n

    def next_time(self) -> int | None:
        """The time of the earliest next event among the running simulations."""
        times = [r.sim.engine.next_time() for r in self.runs if not r.done]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    # -- control -------------------------------------------------------------------
    def step(self) -> CompareFrame:  # type: ignore[override]
        """Pause, advance all three to the earliest next event among them
        (running every event due at that instant in each), publish."""
        self.running = False
        self._wake.clear()
        self._marks.append(self.t_ns)
        t = self.next_time()
        if t is not None:
            t = max(t, self.t_ns)
            for r in self.runs:
                if not r.done:
                    r.sim.engine.run_until(t)
            self.t_ns = t
        return self.publish()

    def step_back(self) -> CompareFrame:  # type: ignore[override]
        """Undo the last step by deterministic replay from the seed."""
        self.running = False
        self._wake.clear()
        target = self._marks.pop() if self._marks else self.t_ns
        marks = self._marks
        ck = self._checkpoint_at(target)
        if ck is None:
            self._new(self._make_sim)
        else:                                  # the newest checkpoint before it (see Driver)
            self.t_ns, self.runs = ck[0], copy.deepcopy(ck[1])
        self._marks = marks
        self.advance(target - self.t_ns)
        return self.publish()

    def _maybe_checkpoint(self) -> None:
        n = sum(r.sim.engine.events_run for r in self.runs)
        last = self._checkpoints[-1][2] if self._checkpoints else 0
        if n - last >= self.checkpoint_every:
            t_ns, runs = copy.deepcopy((self.t_ns, self.runs))
            self._checkpoints.append((t_ns, runs, n))
            del self._checkpoints[:-CHECKPOINTS_KEPT]

    # -- frames --------------------------------------------------------------------
    def frame(self) -> CompareFrame:  # type: ignore[override]
        cols = tuple(r.column() for r in self.runs)
        return CompareFrame(
            seq=self.frames_published,
            t_ns=self.t_ns,
            running=self.running,
            speed=self.speed,
            preset=self.preset.name,
            seed=self.seed,
            host=HostProfile.from_preset(self.preset.host).label(),
            columns=cols,
            complete=all(c.complete for c in cols),
            events_run=sum(c.events_run for c in cols),
        )

    # -- the loop (Driver._loop) ----------------------------------------------------
    def _finished(self) -> bool:
        return self.complete

    def _tick(self, wall_s: float, now: float) -> None:
        self.advance(int(wall_s * self.speed), deadline=now + self.TICK_SHARE / self.max_fps)

