import asyncio
import dataclasses

import pytest

from iovtui.sim.driver import Driver
from iovtui.sim.preset import load_preset
from iovtui.sim.world import Simulation


def make_driver(tech="virtio"):
    p = load_preset("steady-stream")
    return Driver(lambda trace: Simulation(p, tech, seed=3, packets=10**6, trace=trace))


async def test_frames_are_frozen_and_carry_views():
    d = make_driver()
    f = d.publish()
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.t_ns = 5
    assert f.rings and f.rings[0].columns == ("idx", "addr", "len", "flags", "next")
    assert f.iommu.idle_reason and f.nic.idle_reason          # virtio: the host owns the NIC
    assert f.stages and f.seed == 3


async def test_pause_publishes_nothing_and_time_stands_still():
    d = make_driver()
    frames = []
    d.subscribe(frames.append)
    d.resume()
    d.start()
    await asyncio.sleep(0.3)
    assert len(frames) > 3 and d.sim.engine.now > 0
    d.pause()
    n, t = len(frames), d.sim.engine.now
    await asyncio.sleep(0.3)
    assert len(frames) == n and d.sim.engine.now == t       # nothing spins while paused
    d.resume()
    await asyncio.sleep(0.2)
    assert d.sim.engine.now > t
    await d.stop()


async def test_at_most_30_frames_a_second():
    d = make_driver()
    frames = []
    d.subscribe(frames.append)
    d.resume()
    d.start()
    await asyncio.sleep(1.0)
    await d.stop()
    assert 5 <= len(frames) <= 33


async def test_step_runs_one_narrated_event():
    d = make_driver()
    before = d.sim.engine.events_run
    ev = d.step()
    assert ev is not None and ev.msg
    assert d.sim.engine.events_run > before and not d.running


async def test_speed_and_restart():
    d = make_driver()
    s = d.speed
    d.faster()
    assert d.speed > s
    d.slower(); d.slower()
    assert d.speed < s
    d.step()
    p = load_preset("steady-stream")
    d.restart(lambda trace: Simulation(p, "sriov", seed=3, packets=10, trace=trace))
    assert d.sim.technique.name == "sriov" and d.sim.seed == 3 and d.sim.engine.events_run == 0


def state(d):
    f = d.frame()
    return (f.t_ns, f.events_run, f.summary["packets"], f.summary["exits"], f.rings,
            [bytes(vm.mem.ram[0x100000:0x200000]) for vm in d.sim.vms], f.last_event.msg if f.last_event else "",
            f.step_pos)


@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
async def test_each_step_narrates_exactly_the_next_event_of_the_run(tech):
    """n never skips: the narrated events are the run's trace, one per step,
    even where one action does several things at one instant (SR-IOV's VF
    fetches the descriptor, the IOMMU translates, the NIC writes the frame)."""
    from iovtui.sim.trace import ListSink, Trace
    p = load_preset("steady-stream")
    tr = Trace()
    sink = ListSink()
    tr.add_sink(sink)
    ref = Simulation(p, tech, seed=3, packets=10**6, trace=tr)
    skip = len(sink.events)                  # set-up, before the first step
    while len(sink.events) < skip + 60:
        ref.engine.step()
    d = make_driver(tech)
    narrated = [d.step() for _ in range(60)]
    assert [(e.t, e.kind, e.msg) for e in narrated] == [(e.t, e.kind, e.msg) for e in sink.events[skip:skip + 60]]
    # the first received frame's stages come up in the receive flow's order, none skipped
    # (virtio narrates the batch publish and the signal as their own events: a longer window)
    first = [e.stage for e in narrated if e.stage][:12 if tech == "virtio" else 8]
    stages = sorted(set(first))
    assert stages == list(range(2, 7)), first
    assert first.index(3) < first.index(4) < first.index(5) < first.index(6)


async def test_several_events_at_one_instant_are_numbered_and_the_panes_wait():
    d = make_driver("sriov")
    frames = []
    d.subscribe(frames.append)
    d.step()                                 # ② the switch picks the VF
    ev = d.step()                            # ③ the VF fetches the descriptor and issues the DMA write
    assert ev.stage == 3 and frames[-1].step_pos == (1, 3)
    assert [e.kind for e in frames[-1].events] == ["dma"]      # the frame's events wait for their step
    ev = d.step()
    assert ev.stage == 4 and frames[-1].step_pos == (2, 3) and [e.kind for e in frames[-1].events] == ["iommu"]
    d.step_back()
    f = frames[-1]
    assert f.last_event.stage == 3 and f.step_pos == (1, 3) and f.events[-1].kind == "dma"
    assert all(e.kind != "iommu" or e.t < f.last_event.t for e in f.events)
    d.resume()                               # running shows everything at once
    assert frames[-1].step_pos == (0, 0) and frames[-1].last_event.stage == 5


@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
async def test_step_back_replays_to_identical_states(tech):
    d = make_driver(tech)
    seen = []
    for _ in range(25):
        d.step()
        seen.append(state(d))
    for i in range(24, 19, -1):
        d.step_back()
        assert state(d) == seen[i - 1]
    for i in range(20, 25):
        d.step()
        assert state(d) == seen[i]


@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
async def test_step_back_from_a_checkpoint_is_the_same_as_from_the_start(tech):
    """A long run steps back from the newest checkpoint (a deep copy of the
    run), not from the seed: the states and the run's continuation are the
    ones a replay from the start gives."""
    d = make_driver(tech)
    d.checkpoint_every = 3000
    d.follow(True)
    for _ in range(4):                      # as the running loop does: run a tick, maybe checkpoint
        d.sim.engine.run(max_events=2000)
        d._maybe_checkpoint()
    assert [c[0] for c in d._checkpoints] == [4000, 8000]
    seen = []
    for _ in range(12):
        d.step()
        seen.append(state(d) + (d.follower.view(),))
    for i in range(11, 6, -1):
        d.step_back()
        assert state(d) + (d.follower.view(),) == seen[i - 1]
    assert d.sim.engine.events_run > 8000   # restored from the newest checkpoint, then replayed to the mark
    for i in range(7, 12):
        d.step()
        assert state(d) + (d.follower.view(),) == seen[i]
    # the same as a replay from the seed
    d._checkpoints = []
    d.step_back()
    assert state(d) + (d.follower.view(),) == seen[10]


async def test_checkpoints_are_bounded():
    d = make_driver("virtio")
    d.checkpoint_every = 500
    for _ in range(10):
        d.sim.engine.run(max_events=500)
        d._maybe_checkpoint()
    assert len(d._checkpoints) == 2 and d._checkpoints[-1][0] == 5000
    d.restart()
    assert d._checkpoints == []
