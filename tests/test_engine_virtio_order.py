"""virtio's steps that go on in place (Engine.go_on: the backend's stretches,
the IRQ handler into NAPI, the NAPI poll) while the generator's arrivals keep
coming at line rate: what a user sees must be what the run taken one event at
a time shows, and the trace must never change what runs."""
import json

import pytest

from iovtui.sim.preset import load_preset
from iovtui.sim.trace import ListSink, Trace

from conftest import run_cli, sim_for

CASES = [(p, t) for p in ("line-rate", "steady-stream", "bursty-web", "multi-tenant", "small-packets")
         for t in ("virtio", "emulation", "sriov")]


@pytest.mark.parametrize("preset,tech", CASES)
def test_run_json_is_the_same_with_and_without_trace(preset, tech, tmp_path):
    """``iovtui run --json`` gives the same figures whether the trace is
    written or not (the trace never changes what runs, or in which order)."""
    args = ("run", "--preset", preset, "--technique", tech, "--packets", "1200", "--json")
    plain = run_cli(*args, check_rc=0).stdout
    traced = run_cli(*args, "--trace", str(tmp_path / "t.jsonl"), check_rc=0).stdout
    assert json.loads(plain) == json.loads(traced)
    assert (tmp_path / "t.jsonl").stat().st_size > 0


def _stepped(sim):
    """The run one event at a time (Engine.step: nothing goes on in place,
    nothing runs nested)."""
    while not sim.engine.halted and sim.engine.step():
        pass


def _runs(preset, tech, packets, seed=1):
    out = []
    for how in ("run", "step"):
        tr, sink = Trace(), ListSink()
        tr.add_sink(sink)
        s = sim_for(preset, tech, packets=packets, seed=seed, trace=tr)
        if how == "run":
            s.run()
        else:
            _stepped(s)
        out.append((s.summary(), [(e.t, e.kind, e.vm, e.stage, e.msg, sorted(e.data.items())) for e in sink.events], s.engine.events_run,
                    bytes(s.vms[0].mem.ram[:1 << 20])))
    return out


@pytest.mark.parametrize("name,opts", [
    ("line-rate", {}),                                  # vhost: an arrival due before nearly every step
    ("line-rate", {"virtio": {"vhost": False}}),        # QEMU's backend falls behind: the tap fills
    ("multi-tenant", {}),                               # several VMs' taps
    ("bursty-web", {"costs": {"jitter": 0}}),
])
def test_virtio_run_is_the_run_taken_event_by_event(name, opts):
    """The summary, every trace record (in order), the number of events run
    and guest RAM are those of the same run stepped one event at a time."""
    p = load_preset(name)
    if opts:
        p = p.with_options(**opts)
    (a, ta, na, ra), (b, tb, nb, rb) = _runs(p, "virtio", 1500)
    assert len(ta) > 3000
    assert ta == tb
    assert a == b
    assert na == nb
    assert ra == rb


def test_nested_arrivals_cannot_change_the_drops():
    """line-rate with QEMU's userspace backend: it cannot keep up, the tap
    reaches its 1,000 frames and drops.  Steps that go on in place never
    move an arrival past a pop or a pop past an arrival: every arrival sees
    the tap exactly as full as in the run stepped one event at a time, so the
    same frames are dropped, for the same reason, at the same instants."""
    p = load_preset("line-rate").with_options(virtio={"vhost": False})
    runs = []
    for how in ("run", "step"):
        tr, sink = Trace(), ListSink()
        tr.add_sink(sink)
        s = sim_for(p, "virtio", packets=4000, trace=tr)
        s.run() if how == "run" else _stepped(s)
        drops = [(e.t, e.data.get("pkt"), e.data.get("reason")) for e in sink.events if e.kind == "drop"]
        runs.append((s.summary()["packets"], s.metrics.drops_by_reason, drops))
    (pa, ra, da), (pb, rb, db) = runs
    assert any("tap queue full" in r for r in ra), ra       # the case the test is about
    assert pa["dropped"] > 100
    assert (pa, ra, da) == (pb, rb, db)
