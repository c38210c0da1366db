import io

from iovtui.sim.engine import Engine, Resource
from iovtui.sim.trace import JsonlSink, Trace

from conftest import make_preset, run_cli, sim_for


def test_fifo_on_ties_and_time_order():
    e = Engine(1)
    out = []
    e.at(20, out.append, "c")
    e.at(10, out.append, "a")
    e.at(10, out.append, "b")
    e.at(5, out.append, "first")
    while e.step():
        pass
    assert out == ["first", "a", "b", "c"]
    assert e.now == 20 and e.step() is False


def test_run_until_stops_at_the_boundary():
    e = Engine(1)
    out = []
    for t in (1, 5, 9):
        e.at(t, out.append, t)
    e.run_until(5)
    assert out == [1, 5] and e.now == 5
    e.run_until(100)
    assert out == [1, 5, 9] and e.now == 100


def test_resource_queues_work():
    r = Resource("cpu")
    assert r.reserve(0, 10) == 10
    assert r.reserve(5, 10) == 20      # waits for the first job
    assert r.reserve(50, 1) == 51
    assert r.busy_ns == 21


def trace_bytes(preset, technique, seed):
    buf = io.StringIO()
    tr = Trace()
    tr.add_sink(JsonlSink(buf, {"seed": seed}))
    sim_for(preset, technique, packets=300, seed=seed, trace=tr).run()
    return buf.getvalue()


def test_same_seed_same_trace_byte_for_byte():
    p = make_preset(traffic={"pattern": "poisson", "rate": "2 Gb/s", "sizes": "imix", "direction": "both"})
    for tech in ("emulation", "virtio", "sriov"):
        a = trace_bytes(p, tech, 7)
        assert a == trace_bytes(p, tech, 7)
        assert len(a.splitlines()) > 300
        assert a != trace_bytes(p, tech, 8)      # randomness really comes from the seed


def test_cli_trace_is_deterministic(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_cli("run", "--packets", "200", "--trace", str(a), check_rc=0)
    run_cli("run", "--packets", "200", "--trace", str(b), check_rc=0)
    assert a.read_bytes() == b.read_bytes()
    head = a.read_text().splitlines()[0]
    assert '"format":"iovtui-trace"' in head and '"seed":1' in head and '"technique":"virtio"' in head


# -- steps taken in place (Engine.go_on) --------------------------------------------------
def _events(tr_sink):
    return [(e.t, e.seq, e.kind, e.vm, e.stage, e.msg) for e in tr_sink.events]


def _line_rate_runs():
    from iovtui.sim.preset import load_preset

    base = load_preset("line-rate")
    yield "emulation", base
    yield "virtio", base.with_options(virtio={"vhost": False})
    yield "virtio", base.with_options(virtio={"vhost": True})
    yield "sriov", base
    yield "sriov", make_preset(traffic={"direction": "both", "pattern": "burst", "sizes": "imix"},
                               vm=[{"name": f"vm{i}", "mac": f"52:54:00:00:00:0{i + 1}"} for i in range(3)])
    # round costs: a poll's next step often falls on the very instant of a pending event
    # (which must run first: it was scheduled first)
    ties = make_preset(traffic={"rate": "1000000 pps", "sizes": 64},
                       costs={"guest_rx_ns": 800, "nic_pkt_ns": 0, "pcie_dma_ns": 0, "copy_fixed_ns": 0,
                              "copy_ns_per_kb": 0, "vhost_pkt_ns": 500, "host_stack_ns": 0})
    for tech in ("emulation", "virtio", "sriov"):
        yield tech, ties


def test_a_run_takes_the_same_steps_whether_run_or_stepped():
    """A NAPI poll or a backend run goes on in place when its next step is
    due before anything else (Engine.go_on): the trace, the summary and the
    number of events run are those of the same run taken one step at a time
    (the app's n and b, and step back's replay, count on it)."""
    from iovtui.sim.trace import ListSink

    for tech, preset in _line_rate_runs():
        runs = []
        for how in ("run", "step", "chunks"):
            tr, sink = Trace(), ListSink()
            tr.add_sink(sink)
            s = sim_for(preset, tech, packets=400, seed=3, trace=tr)
            if how == "run":
                s.run()
            elif how == "step":
                while not s.engine.halted and s.engine.step():
                    pass
            else:
                # (run_until does not stop where the run completes: it may go on a little)
                while not s.engine.halted and s.engine.pending:
                    s.engine.run_until(s.engine.now + 7_000)
            summary = s.summary()
            summary.pop("virtual_time_ns")
            runs.append((_events(sink), summary, s.engine.events_run))
        assert len(runs[0][0]) > 2000, tech
        assert runs[0] == runs[1], f"{tech}: run() and step() differ"
        assert runs[2][0][:len(runs[0][0])] == runs[0][0], f"{tech}: run_until() differs"


def test_until_stops_every_step_taken_in_place_at_that_instant():
    """``run --until``: no step goes on in place past the given time, so the
    summary is the state of the run stepped up to that instant."""
    for tech, preset in _line_rate_runs():
        for until in range(20_011, 400_000, 15_013):
            a = sim_for(preset, tech, packets=5000, seed=2)
            a.run(until_ns=until)
            b = sim_for(preset, tech, packets=5000, seed=2)
            while b.engine.next_time() is not None and b.engine.next_time() <= until and not b.engine.halted:
                b.engine.step()
            b.engine.now = until
            assert a.summary() == b.summary(), (tech, until)
            assert a.engine.events_run == b.engine.events_run
            assert bytes(a.vms[0].mem.ram[:1 << 20]) == bytes(b.vms[0].mem.ram[:1 << 20])
