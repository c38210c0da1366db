"""The asyncio driver: runs a Simulation at a chosen speed, pauses, single
steps, and publishes frozen :class:`Frame` snapshots to subscribers at a
bounded rate (never per event).  While paused it awaits an ``asyncio.Event``:
nothing spins.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .follow import Follower, FollowView
from .memory import Region
from .trace import RingSink, Trace, TraceEvent
from .views import RingView, TableView
from .world import Simulation

if TYPE_CHECKING:                  # (sim.quiz loads with predict mode's first question: not at start-up)
    from .quiz import Question, Quiz, Reveal

__all__ = ["Driver", "rerun", "Frame", "MemoryView", "SPEEDS", "DEFAULT_SPEED_INDEX", "speed_label"]

#: virtual nanoseconds per wall-clock second; the default is 1 µs per wall ms
SPEEDS = (1e3, 1e4, 1e5, 3e5, 1e6, 3e6, 1e7, 1e8, 1e9)
DEFAULT_SPEED_INDEX = 4


def speed_label(ns_per_s: float) -> str:
    """``×1`` is 1 µs of virtual time per wall-clock millisecond."""
    x = ns_per_s / 1e6
    return f"×{x:g}"


@dataclass(frozen=True)
class MemoryView:
    vm: str
    size: int
    hpa_base: int
    regions: tuple[Region, ...]
    #: (gpa, length, who) written since the previous frame (DMA / copies)
    fresh_writes: tuple[tuple[int, int, str], ...]


@dataclass(frozen=True)
class Frame:
    """Everything the UI draws, frozen at one instant."""

    seq: int
    t_ns: int
    running: bool
    speed: float
    technique: str
    label: str
    host: str                          # the host profile in a few words (HostProfile.label())
    preset: str
    seed: int
    stages: tuple[str, ...]
    stage: int                         # the path stage the last event belongs to (0: none)
    summary: dict[str, Any]            # Metrics.summary() (treat as read-only)
    events: tuple[TraceEvent, ...]     # new since the previous frame (at most EVENTS_PER_FRAME)
    last_event: TraceEvent | None      # the most recent event (narration line)
    rings: tuple[RingView, ...]
    memory: tuple[MemoryView, ...]
    iommu: TableView
    nic: TableView
    complete: bool
    events_run: int
    follow: FollowView | None = None   # the followed packet (``f``), if any
    predict: bool = False              # predict-then-reveal mode is on
    question: Question | None = None   # asked and not answered yet (the state shown is *before* it)
    reveal: Reveal | None = None       # the last answered question
    score: tuple[int, int] = (0, 0)    # (right, asked)
    #: (k, n): the narrated event is the k-th of n that one engine action
    #: emitted at the same instant (n steps through them); (0, 0) otherwise
    step_pos: tuple[int, int] = (0, 0)
    #: events with a seq up to this one were emitted by the drivers' set-up:
    #: their exits are not counted in the summary (one rule for every view)
    setup_seq: int = 0
    setup_exits: int = 0               # how many exits the set-up took (not counted)
    #: the traffic's direction: "rx", "tx" or "both" (the preset's traffic.direction)
    direction: str = "rx"
    #: the direction of the narrated event's path ("rx" / "tx"): which stage table it numbers
    path_dir: str = "rx"


EVENTS_PER_FRAME = 200

#: step back replays from the newest checkpoint at or before its target: a
#: deep copy of the run taken every CHECKPOINT_EVERY engine actions while it
#: runs (the copy's continuation is the same run, event for event), the newest
#: CHECKPOINTS_KEPT kept, so ``b`` costs at most about that many actions
CHECKPOINT_EVERY = 100_000
CHECKPOINTS_KEPT = 2


class Driver:
    """Runs one :class:`Simulation` in virtual time, in step with the wall clock."""

    def __init__(self, make_sim: Callable[[Trace], Simulation], speed_index: int = DEFAULT_SPEED_INDEX,
                 max_fps: float = 30.0, max_events_per_tick: int = 20000,
                 checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self._make_sim = make_sim
        self.checkpoint_every = checkpoint_every
        #: (events_run, deep copy of the run) for step back, oldest first
        self._checkpoints: list[tuple[int, Any]] = []
        self.speed_index = speed_index
        self.max_fps = max_fps
        self.max_events_per_tick = max_events_per_tick
        self.subscribers: list[Callable[[Frame], None]] = []
        self.running = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.frames_published = 0
        #: the VM (by index) whose rings the frames carry, plus the followed
        #: packet's; None: every VM's (building 2 × 126 ring views per frame
        #: costs tens of ms, and the app shows one VM's ring at a time)
        self.view_vm: int | None = None
        self.follower = Follower()
        self.predict = False
        self._quiz: Quiz | None = None
        self.question: Question | None = None
        self.reveal: Reveal | None = None
        self._new(make_sim)

    # -- the simulation ------------------------------------------------------------
    def _new(self, make_sim: Callable[[Trace], Simulation]) -> None:
        self._make_sim = make_sim
        self.trace = Trace()
        self.sink = RingSink(maxlen=2000)
        self.trace.add_sink(self.sink)
        self.follower.reset()
        self.trace.add_sink(self.follower)
        self.sim = make_sim(self.trace)
        #: the events the drivers' set-up emitted (ring set-up, the first tail
        #: write or kick): the counters (summary, kvm_stat) leave them out, and
        #: the exit log marks them so (Metrics.reset_setup)
        self.setup_seq = self.sink.total
        self.setup_exits = sum(1 for e in self.sink.events if e.kind == "exit")
        self._path_dir = "rx"
        self.question = None
        self._seen_events = 0
        self._write_serial = {vm.name: vm.mem.write_serial for vm in self.sim.vms}
        self._last_event: TraceEvent | None = None
        #: one entry per step taken (for step_back): (events_run at its start,
        #: events its action emitted) for a step that ran the engine, or None
        #: for a step that only narrated the next event of that action
        self._marks: list[tuple[int, int] | None] = []
        #: the newest events of the last stepped action not narrated yet: one
        #: action can do several things at one instant (QEMU pops, copies and
        #: signals), and ``n`` explains them one at a time
        self._held = 0
        self._action_events = 0
        self._pre_follow: Follower | None = None

    def restart(self, make_sim: Callable[[Trace], Simulation] | None = None) -> None:
        """A new run (another technique, preset or seed); keeps speed, pause
        state, the predict score, and follows the next packet if following."""
        following = self.follower.armed
        self._checkpoints = []
        self._new(make_sim or self._make_sim)
        if following:
            self.follower.arm()
        self.reveal = None
        self.publish()

    # -- follow a packet ---------------------------------------------------------------
    def follow(self, on: bool | None = None) -> bool:
        """Follow the next packet to appear (or stop following).  Returns
        whether a packet is followed now."""
        on = (not self.follower.armed) if on is None else on
        if on:
            self.follower.arm()
        else:
            self.follower.stop()
        self._pre_follow = None          # (a snapshot from before this is of the old packet)
        self.publish()
        return on

    # -- predict-then-reveal -------------------------------------------------------------
    @property
    def quiz(self) -> Quiz:
        """The predict mode's questions and score, made when first needed
        (its own seeded generator: the same questions whenever that is)."""
        if self._quiz is None:
            from .quiz import Quiz
            self._quiz = Quiz()
        return self._quiz

    def set_predict(self, on: bool | None = None) -> bool:
        self.predict = (not self.predict) if on is None else on
        if not self.predict:
            self.question = None
        self.publish()
        return self.predict

    def _run_action(self, ask: bool) -> bool:
        """Run one engine action; in predict mode, if it raises a question,
        rewind to just before it and pose the question.  Returns False when
        the run stopped (nothing left, or a question is posed)."""
        eng = self.sim.engine
        before_n, before_total = eng.events_run, self.sink.total
        if not eng.step():
            return False
        if ask and self.predict:
            new = self.sink.total - before_total
            ring = self.sink.events
            evs = [ring[-i] for i in range(min(new, len(ring)), 0, -1)]
            q = self.quiz.consider(evs, self.sim) if evs else None
            if q is not None:
                # back to just before the action; what was shown stays shown
                # (the replayed run emits the same events up to here)
                seen, last = self._seen_events, self._last_event
                self._replay_to(before_n)
                self._seen_events, self._last_event = seen, last
                self.question = q
                self.running = False
                self._wake.clear()
                return False
        return True

    def answer(self, key: str | None) -> Reveal | None:
        """Grade the learner's answer (``None`` skips the question, ungraded),
        then run the action it was about and publish the state after it."""
        q = self.question
        if q is None:
            return None
        self.reveal = self.quiz.grade(q, key) if key is not None else None
        self.question = None
        start, before = self.sim.engine.events_run, self.sink.total
        self._run_action(ask=False)
        # the reveal is about the whole action: all it did is shown at once
        self._held, self._action_events = 0, self.sink.total - before
        self._marks.append((start, self._action_events))
        self.publish()
        return self.reveal

    # -- speed -------------------------------------------------------------------
    @property
    def speed(self) -> float:
        return SPEEDS[self.speed_index]

    def faster(self) -> None:
        self.speed_index = min(self.speed_index + 1, len(SPEEDS) - 1)
        self.publish()

    def slower(self) -> None:
        self.speed_index = max(self.speed_index - 1, 0)
        self.publish()

    # -- control -----------------------------------------------------------------
    def pause(self) -> None:
        self.running = False
        self._wake.clear()
        self.publish()

    def resume(self) -> None:
        if self.question is not None:          # answer it first
            return
        self._held = self._action_events = 0   # running shows everything
        self.running = True
        self._wake.set()
        self.publish()

    def toggle(self) -> None:
        if self.running:
            self.pause()
        else:
            self.resume()

    def step(self) -> TraceEvent | None:
        """Pause and narrate the next trace event: the next one the last
        action emitted if it emitted several, else run engine actions until
        one emits an event.  Publish; return the narrated event."""
        self.running = False
        self._wake.clear()
        if self.question is not None:          # answer it first
            self.publish()
            return self._last_event
        if self._held:
            self._held -= 1
            self._marks.append(None)
            self.publish()
            return self._last_event
        start = self.sim.engine.events_run
        sink = self.sink
        before = sink.total
        # the follower as it was before the action, so that while the
        # action's events are narrated one by one it shows only those
        self._pre_follow = copy.deepcopy(self.follower) if self.follower.armed else None
        for _ in range(1000):
            if not self._run_action(ask=True):
                break
            if sink.total > before:
                break
        if self.sink is sink:
            self._hold(sink.total - before)
        else:                                  # rewound: a question is posed
            self._held = self._action_events = 0
        self._marks.append((start, self._action_events))
        self.publish()
        return self._last_event

    def seek_event(self, seq: int) -> TraceEvent | None:
        """Pause on the trace event numbered ``seq`` (as in a ``--trace``
        file of the same run): run to the action that emits it and narrate
        it, the rest of that action's events held for the next steps."""
        self.running = False
        self._wake.clear()
        eng, sink = self.sim.engine, self.sink
        start, before = eng.events_run, 0          # (seq within the set-up's events)
        while sink.total < seq:
            start, before = eng.events_run, sink.total
            if not eng.step():
                break
        if sink.total >= seq:
            self._action_events = sink.total - before
            self._held = sink.total - seq
            if eng.events_run > start:
                self._marks.append((start, self._action_events))
                self._marks.extend([None] * (self._action_events - self._held - 1))
        self.resend_history()
        self.publish()
        return self._last_event

    def resend_history(self) -> None:
        """The next frame carries the most recent events already shown (up to
        EVENTS_PER_FRAME), for a subscriber that starts late or starts over."""
        self._seen_events = max(0, self.sink.total - self._held - EVENTS_PER_FRAME)

    def _hold(self, emitted: int) -> None:
        """The last action emitted ``emitted`` events: narrate the first now
        and hold the rest back for the next steps."""
        self._action_events = emitted
        self._held = max(0, min(emitted, len(self.sink.events)) - 1)

    def step_back(self) -> TraceEvent | None:
        """Undo the last step by deterministic replay: a new run from the same
        preset and seed, advanced to exactly where that step began (or one
        event back if no step was taken).  Same seed, same events: the state
        is identical to the one seen before."""
        self.running = False
        self._wake.clear()
        mark = self._marks.pop() if self._marks else (max(0, self.sim.engine.events_run - 1), 0)
        if mark is None:                       # back one event within the same action
            self._held += 1
            self.resend_history()
        else:
            self._replay_to(mark[0])
            self._restore_hold()
        self.publish()
        return self._last_event

    def _restore_hold(self) -> None:
        """After a replay to the start of a step: the step before it ended on
        the last event of its action; remember how many that action emitted."""
        last = next((m for m in reversed(self._marks) if m is not None), None)
        self._held = 0
        self._action_events = last[1] if last is not None else 0

    def _replay_to(self, target: int) -> None:
        """Back to the state after exactly ``target`` engine actions, the same
        state as when the run was there: the newest checkpoint at or before
        it (or a new run from the same preset and seed), advanced to it."""
        marks = self._marks
        ck = self._checkpoint_at(target)
        if ck is None:
            self._new(self._make_sim)
        else:
            self._restore(ck[1])
        self._marks = marks
        self._held = self._action_events = 0
        self._pre_follow = None
        eng = self.sim.engine
        follower = self.follower
        while eng.events_run < target:
            if eng.events_run == target - 1 and follower.armed:   # before the step's action (see step)
                self._pre_follow = copy.deepcopy(follower)
            if not eng.step():
                break
        self.resend_history()

    # -- checkpoints (step back without replaying the whole run) -------------------------
    def _checkpoint_at(self, target):
        """The newest checkpoint whose first field (where it was taken) is at
        or before ``target``, or None."""
        return next((c for c in reversed(self._checkpoints) if c[0] <= target), None)

    def _maybe_checkpoint(self) -> None:
        n = self.sim.engine.events_run
        last = self._checkpoints[-1][0] if self._checkpoints else 0
        if n - last >= self.checkpoint_every:
            # one deep copy of everything the run's future depends on: the
            # simulation (engine heap, RNG, guest RAM, devices) and the trace
            # with its sinks, so the sinks' history comes back with it
            self._checkpoints.append((n, copy.deepcopy((self.trace, self.sink, self.follower, self.sim))))
            del self._checkpoints[:-CHECKPOINTS_KEPT]

    def _restore(self, bundle: Any) -> None:
        trace, sink, follower, sim = copy.deepcopy(bundle)   # the checkpoint stays as it was
        follower.same_arming_as(self.follower)
        self.trace, self.sink, self.follower, self.sim = trace, sink, follower, sim
        self.question = None
        self._seen_events = 0
        self._write_serial = {vm.name: vm.mem.write_serial for vm in sim.vms}
        self._last_event = None

    # -- frames ------------------------------------------------------------------
    def subscribe(self, cb: Callable[[Frame], None]) -> None:
        self.subscribers.append(cb)

    def frame(self) -> Frame:
        sim = self.sim
        sink = self.sink
        held = self._held
        shown = sink.total - held              # the events narrated so far
        new = shown - self._seen_events
        self._seen_events = shown
        if new > 0:
            ring = list(sink.events)
            if held:
                ring = ring[:-held]
            evs = tuple(ring[-min(new, EVENTS_PER_FRAME, len(ring)):])
        else:
            evs = ()
        if evs:
            self._last_event = evs[-1]
        mem_views = []
        for vm in sim.vms:
            mem = vm.mem
            since = self._write_serial.get(vm.name, 0)
            fresh = tuple((g, n, who) for (_s, g, n, who) in mem.writes_since(since)) if mem.write_serial > since else ()
            self._write_serial[vm.name] = mem.write_serial
            mem_views.append(MemoryView(vm.name, mem.size, mem.hpa_base, tuple(mem.regions), fresh))
        t = sim.technique
        last = self._last_event
        direction = sim.preset.traffic["direction"]
        path_dir = direction
        if direction == "both":
            # follow the narrated event's direction (an event without one keeps the last)
            q = last.data.get("queue") if last is not None else None
            if q in ("rx", "tx"):
                self._path_dir = q
            path_dir = self._path_dir
        tx = path_dir == "tx" and bool(t.tx_stages)
        fv = self._follow_view()
        return Frame(
            seq=self.frames_published,
            t_ns=sim.engine.now,
            running=self.running,
            speed=self.speed,
            technique=t.name,
            label=t.label(),
            host=sim.host.label(),
            preset=sim.preset.name,
            seed=sim.seed,
            stages=t.tx_stages if tx else t.stages,
            stage=last.stage if last is not None else 0,
            summary=sim.summary(),
            events=evs,
            last_event=last,
            rings=tuple(t.ring_views(self._ring_vms(fv))),
            memory=tuple(mem_views),
            iommu=t.iommu_view(),
            nic=t.nic_view(),
            complete=sim.complete,
            events_run=sim.engine.events_run,
            follow=fv,
            predict=self.predict,
            question=self.question,
            reveal=self.reveal,
            score=self._quiz.score if self._quiz is not None else (0, 0),
            step_pos=((self._action_events - held, self._action_events)
                      if self._action_events > 1 and not self.running else (0, 0)),
            setup_seq=self.setup_seq,
            setup_exits=self.setup_exits,
            direction=direction,
            path_dir="tx" if tx else "rx",
        )

    def _ring_vms(self, fv: FollowView | None) -> set[str] | None:
        i, vms = self.view_vm, self.sim.vms
        if i is None:
            return None
        names = {vms[i].name} if 0 <= i < len(vms) else set()
        if fv is not None and fv.vm:
            names.add(fv.vm)
        return names

    def _follow_view(self) -> FollowView | None:
        """The followed packet as of the narrated event: while an action's
        events are narrated one at a time, a copy of the follower from before
        the action is fed only those shown so far."""
        held, pre = self._held, self._pre_follow
        if not held or pre is None or not self.follower.armed:
            return self.follower.view()
        n = self._action_events
        ring = list(self.sink.events)
        if n > len(ring):
            return self.follower.view()
        f = copy.deepcopy(pre)
        for ev in ring[len(ring) - n:len(ring) - held]:
            f(ev)
        return f.view()

    def publish(self) -> Frame:
        f = self.frame()
        self.frames_published += 1
        for cb in list(self.subscribers):
            cb(f)
        return f

    # -- a capture of the run so far ("Save capture") ---------------------------------
    def capture_point(self) -> tuple[Callable[[Trace], Simulation], int]:
        """What a capture of the run so far needs: the run's factory and the
        engine actions it has run.  :func:`rerun` with them gives the same
        run (seeded, deterministic: step back relies on it too) with a
        capture attached from its first frame, without touching this one."""
        return self._make_sim, self.sim.engine.events_run

    # -- the loop ----------------------------------------------------------------
    def start(self) -> asyncio.Task:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        period = 1.0 / self.max_fps
        while True:
            if not self.running:
                await self._wake.wait()  # paused: sleep until resumed
                continue
            last = time.monotonic()
            await asyncio.sleep(period)
            if not self.running:
                continue
            now = time.monotonic()
            if self._finished():
                self.running = False
                self._wake.clear()
                self.publish()
                continue
            self._tick(now - last, now)
            self._maybe_checkpoint()
            self.publish()

    def _finished(self) -> bool:
        eng = self.sim.engine
        return eng.halted or not eng.pending

    def _tick(self, wall_s: float, now: float) -> None:
        """Advance virtual time by ``wall_s`` of wall clock at the speed
        (``now``: the wall clock, ``time.monotonic()``)."""
        eng = self.sim.engine
        target = eng.now + int(wall_s * self.speed)
        if self.predict:
            self._run_predicting(target)
        else:
            eng.run_until(target, max_events=self.max_events_per_tick)

    def _run_predicting(self, target: int) -> None:
        """Like ``run_until`` but one action at a time, stopping before any
        action a question is asked about."""
        eng = self.sim.engine
        for _ in range(self.max_events_per_tick):
            t = eng.next_time()
            if t is None or t > target:
                break
            if not self._run_action(ask=True):
                return
        else:
            return                        # the budget ran out: the clock stays at the last action
        if target > eng.now:
            eng.now = target


def rerun(make_sim: Callable[[Trace], Simulation], events: int,
          attach: Callable[[Simulation], Any]) -> Simulation:
    """Run ``make_sim``'s run again, headless (no trace sinks), up to
    ``events`` engine actions, with ``attach(sim)`` called before the first
    (a capture sink): the frames are those of the run the driver showed.
    Safe in a worker thread: the new simulation shares no state with it."""
    sim = make_sim(Trace())
    attach(sim)
    eng = sim.engine
    left = events - eng.events_run
    if left > 0:
        eng.run(max_events=left)
        while eng.events_run < events and eng.step():   # past a halt, as the driver steps
            pass
    return sim
