"""Issue 16, "What a newcomer sees": transmit has its own path, times and
numbers agree, the narration can be read, and the small things."""
import re
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets._footer import FooterKey

from iovtui.sim.paths import available
from iovtui.sim.preset import load_preset
from iovtui.sim.world import Simulation
from iovtui.ui import app as app_mod
from iovtui.ui.app import create_app
from iovtui.ui.panes.common import fmt_t
from iovtui.ui.panes.stats import StatsBar

from conftest import listed_sim

PRESETS = sorted(p.stem for p in (Path(__file__).parent.parent / "presets").glob("*.toml"))


def make(preset="steady-stream", tech="virtio", paused=True, **kw):
    return create_app(load_preset(preset), tech, seed=1, start_paused=paused, **kw)


def trace_of(preset, tech, packets=40, events=20000, **opts):
    sim, sink = listed_sim(preset, tech, packets, **opts)
    tr = sim.engine.trace
    setup = len(sink.events)
    clock = []                                    # the engine's clock when each later event was emitted
    tr.add_sink(lambda ev: clock.append((ev.seq, ev.t, sim.engine.now)))
    sim.engine.run(max_events=events)
    return sim, sink.events, setup, clock


# -- 13: transmit is a first-class path ------------------------------------------------------

@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
def test_tx_events_are_numbered_on_the_techniques_tx_path(tech):
    """On tx-stream every TX record in the trace carries a stage of the TX
    path strip (it was 0: the strip lit nothing, or an RX stage)."""
    sim, evs, _setup, _clock = trace_of("tx-stream", tech)
    tx = [e for e in evs if e.data.get("queue") == "tx"]
    assert tx and all(1 <= e.stage <= len(sim.technique.tx_stages) for e in tx), \
        [(e.seq, e.kind, e.stage, e.msg) for e in tx if not 1 <= e.stage <= 6][:5]
    wire = [e for e in evs if e.kind == "deliver"]
    assert wire and all(e.stage == sim.technique.tx_wire_stage > 0 for e in wire)
    # the RX stage numbers are as they were: the set-up posts RX buffers at stage 1
    assert evs[0].stage == 1 and evs[0].data.get("queue") == "rx"


@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
async def test_tx_stream_shows_the_tx_path_and_opens_on_the_tx_ring(tech):
    a = make("tx-stream", tech)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        assert a.w_ring.ring().name == "tx"                  # where the traffic is, not the idle RX ring
        for _ in range(12):
            await pilot.press("n")
            await pilot.pause(0.02)
        strip = a.w_path.text.plain
        tx_stages = a.driver.sim.technique.tx_stages
        assert strip.startswith(" TX path") and all(s in strip for s in tx_stages), strip
        ev = a.driver._last_event
        if ev.stage:
            assert f"{'⓪①②③④⑤⑥'[ev.stage]} {tx_stages[ev.stage - 1]} ◀" in strip


async def test_rx_presets_keep_the_rx_path_and_ring():
    a = make("steady-stream", "virtio")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        await pilot.pause(0.05)
        assert a.w_path.text.plain.startswith(" RX path") and a.w_ring.ring().name == "rx"


def test_both_directions_follow_the_narrated_event():
    from iovtui.sim.driver import Driver
    p = load_preset("steady-stream").with_options(traffic={"direction": "both"})
    d = Driver(lambda tr: Simulation(p, "virtio", seed=1, packets=200, trace=tr))
    seen = set()
    for _ in range(400):
        ev = d.step()
        f = d.frame()
        q = ev.data.get("queue") if ev is not None else None
        if q in ("rx", "tx"):
            assert f.path_dir == q
            assert f.stages == (d.sim.technique.tx_stages if q == "tx" else d.sim.technique.stages)
            seen.add(q)
    assert seen == {"rx", "tx"}


# -- 14: time and numbers agree ----------------------------------------------------------------

@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
def test_trace_time_never_goes_back_nor_runs_ahead_of_the_clock(tech):
    """seq 3 at t = 900 then seq 4 at t = 0 (virtio's set-up kick was stamped
    with the kick exit's end): every record's t is ≤ the engine's clock when
    it is emitted and non-decreasing in seq; a later time is a data field."""
    for preset in PRESETS:
        _sim, evs, _setup, clock = trace_of(preset, tech, packets=30, events=8000)
        ts = [e.t for e in evs]
        back = [(evs[i].seq, ts[i - 1], ts[i]) for i in range(1, len(ts)) if ts[i] < ts[i - 1]]
        assert not back, (preset, back[:3])
        ahead = [(s, t, now) for s, t, now in clock if t > now]
        assert not ahead, (preset, ahead[:3])
        assert all(e.t == 0 for e in evs[:_setup])                 # the set-up is at t = 0


def _log_times(a):
    out = []
    for line in a.w_exits.lines:
        m = re.match(r"^\s*([\d,.]+) (µs|ms|s) ", line.plain)
        v = float(m.group(1).replace(",", ""))
        out.append(v * {"µs": 1e3, "ms": 1e6, "s": 1e9}[m.group(2)])
    return out


@pytest.mark.parametrize("preset,tech", [("tx-stream", "emulation"), ("multi-tenant", "virtio"),
                                         ("multi-tenant", "emulation")])
async def test_paused_exit_log_has_no_row_after_the_clock_and_is_in_time_order(preset, tech):
    a = make(preset, tech)
    async with a.run_test(size=(200, 60)) as pilot:
        for _ in range(60):
            await pilot.press("n")
            await pilot.pause(0.01)
            now = a.driver.sim.engine.now
            times = _log_times(a)
            assert all(t <= now + 50 for t in times), (now, times[-3:])    # (shown to 0.1 µs)
            assert times == sorted(times), times
            narr = re.match(r"^ \S ([\d,.]+) (µs|ms)", a.w_narration.text.plain)
            if narr:
                v = float(narr.group(1).replace(",", "")) * (1e3 if narr.group(2) == "µs" else 1e6)
                assert v <= now + 50, (a.w_narration.text.plain, now)
        assert len(a.w_exits.lines) > 5


async def test_the_first_kick_follows_one_rule_in_summary_kvm_stat_and_log():
    """The set-up's kick (virtio posts its RX buffers and kicks) is not
    counted: the JSON summary leaves it out, kvm_stat leaves it out and says
    so, and the exit log shows it marked "set-up, not counted"."""
    a = make("steady-stream", "virtio")
    async with a.run_test(size=(160, 50)) as pilot:
        await pilot.press("n")
        await pilot.pause(0.1)
        sim = a.driver.sim
        assert sim.summary()["exits"]["by_reason"] == {}
        assert sim.summary()["exits"]["setup_not_counted"] == 1       # the JSON says the rule too
        first = a.w_exits.lines[0].plain
        assert "EPT_MISCONFIG" in first and "set-up, not counted" in first, first
        await pilot.press("k")
        await pilot.pause(0.05)
        rows = a.w_exits.kvm_stat_rows()
        assert all(n == sim.summary()["exits"]["by_reason"][name[9:-1]] for name, n, _p, _r in rows)
        shown = "\n".join(s.text for s in a.w_exits._build())
        assert "+ 1 set-up exit not counted" in shown, shown


def test_times_switch_to_seconds_and_use_separators():
    assert fmt_t(1_442_423_000) == "1.442423 s"
    assert fmt_t(144_242_300) == "144.242 ms"
    assert fmt_t(1_302_500) == "1,302.5 µs"


def test_trace_numbers_with_units_have_thousands_separators():
    bad = re.compile(r"(?<![\w#.,])\d{4,}(\.\d+)? ?(µs|ns|ms|B)\b")
    for tech in available():
        for preset in ("tx-stream", "steady-stream", "pingpong"):
            _sim, evs, _s, _c = trace_of(preset, tech, packets=20, events=4000)
            hits = [e.msg for e in evs if bad.search(e.msg)]
            assert not hits, hits[:3]


async def test_stats_bar_before_the_first_packet_and_on_one_line():
    a = make("steady-stream", "sriov")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.05)
        f = a._applied
        assert f.summary["packets"]["delivered"] == 0
        text = StatsBar.build(f, 120).plain
        assert "p50 – p99 –" in text and "0.000 µs" not in text.replace("t = 0.000 µs", ""), text
        for _ in range(40):
            await pilot.press("n")
        await pilot.pause(0.05)
        for w in (60, 80, 100, 120, 200):
            text = StatsBar.build(a._latest, w)
            assert "\n" not in text.plain and text.cell_len <= w and "t = " in text.plain, (w, text.plain)


# -- 15: the narration can be read -------------------------------------------------------------

async def test_running_narration_stays_up_long_enough_to_read(monkeypatch):
    import time as real_time
    import types
    clock = [1000.0]
    # the app's own clock only (asyncio and Textual keep the real one)
    monkeypatch.setattr(app_mod, "time", types.SimpleNamespace(monotonic=lambda: clock[0], sleep=real_time.sleep))
    a = make("steady-stream", "virtio")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.05)
        d = a.driver
        d.running = True                    # running (the loop stays asleep: frames come from here)
        seen = []
        for _ in range(20):
            d.sim.engine.run(max_events=30)
            d.publish()
            a._apply_latest()
            seen.append(a.w_narration.text.plain)
            clock[0] += 0.1                 # 30 ms frames: 20 of them in 2 s of wall clock
        assert len(set(seen)) <= 2, set(seen)
        clock[0] += app_mod.NARRATION_HOLD_S
        d.sim.engine.run(max_events=30)
        d.publish()
        a._apply_latest()
        assert a.w_narration.text.plain != seen[-1]
        d.running = False


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (60, 16)])
async def test_header_says_how_to_pause_until_the_user_does(size):
    a = make("steady-stream", "virtio", paused=False)
    async with a.run_test(size=size) as pilot:
        await pilot.pause(0.2)
        assert "space pauses, n steps" in a.w_header.render().plain
        await pilot.press("space")
        await pilot.pause(0.1)
        assert "n steps" not in a.w_header.render().plain
        await pilot.press("space")
        await pilot.pause(0.1)
        assert "n steps" not in a.w_header.render().plain


# -- 17: small things --------------------------------------------------------------------------

async def test_a_notice_does_not_outstay_the_next_key():
    a = make("steady-stream", "virtio")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("m")
        await pilot.pause(0.1)
        assert "this preset has one VM" in a.w_narration.text.plain
        await pilot.press("r")
        await pilot.pause(0.1)
        assert "one VM" not in a.w_narration.text.plain


def _footer(a):
    return [(k.key_display, k.description, k.region) for k in a.query(FooterKey) if k.display]


@pytest.mark.parametrize("size", [(60, 16), (80, 24), (120, 40)])
async def test_footer_names_the_technique_keys_and_is_never_cut(size):
    a = make("steady-stream", "virtio")
    async with a.run_test(size=size) as pilot:
        await pilot.pause(0.2)
        keys = _footer(a)
        for _ in range(40):      # a recomposed footer (the width decides its keys) is laid out a moment later
            if keys and all(r.width > 0 for _k, _d, r in keys):
                break
            await pilot.pause(0.05)
            keys = _footer(a)
        assert ("1–3", "technique") in [(k, d) for k, d, _r in keys], keys
        assert "q" in [k for k, _d, _r in keys]
        assert all(r.width > 0 and r.right <= size[0] for _k, _d, r in keys), keys


async def test_replay_says_it_is_a_replay(tmp_path, monkeypatch):
    from iovtui import cli
    trace = tmp_path / "t.jsonl"
    assert cli.main(["run", "--preset", "steady-stream", "--packets", "5", "--trace", str(trace)]) == 0
    opened = {}
    monkeypatch.setattr(app_mod.IovApp, "run", lambda self: opened.setdefault("app", self))
    monkeypatch.setattr(cli, "_check_terminal_size", lambda: None)
    cli.main(["replay", str(trace)])
    a = opened["app"]
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.05)
        assert "replay" in a.w_header.render().plain
    b = make()
    async with b.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.05)
        assert "replay" not in b.w_header.render().plain


async def test_iotlb_line_never_wraps_inside_a_number():
    a = make("iotlb-thrash", "sriov")
    async with a.run_test(size=(120, 40)) as pilot:
        a.driver.sim.engine.run(max_events=20000)
        a.driver.publish()
        await pilot.pause(0.1)
        group = a.w_iommu.render()
        assert "%" in "".join(str(getattr(r, "plain", "")) for r in group.renderables)
        for w in range(30, 110):
            c = Console(width=w, record=False)
            lines = ["".join(s.text for s in line) for line in c.render_lines(group, c.options.update(width=w))]
            for x, y in zip(lines, lines[1:]):
                assert not (re.search(r"\d\s*$", x) and y.lstrip().startswith("%")), (w, x, y)
