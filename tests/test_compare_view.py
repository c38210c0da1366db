"""The compare view: the CompareDriver headless, then the screen with Pilot."""
import asyncio
import dataclasses

import pytest

from iovtui.sim.compare import COMPARE_TECHNIQUES, CompareDriver
from iovtui.sim.preset import load_preset
from iovtui.sim.vmm import EXIT_REASONS
from iovtui.ui.app import create_app
from iovtui.ui.screens import CompareScreen
from iovtui.ui.screens.compare import column_width, layout_grid


def driver(packets=10**6, seed=1, preset=None, **kw):
    return CompareDriver(preset or load_preset("steady-stream"), seed=seed, packets=packets, **kw)


# -- the driver, headless ------------------------------------------------------------------------
def test_three_columns_at_the_same_virtual_time():
    d = driver()
    d.advance(2_000_000)
    f = d.publish()
    assert [c.technique for c in f.columns] == list(COMPARE_TECHNIQUES)
    assert f.t_ns == 2_000_000
    assert all(c.t_ns == f.t_ns for c in f.columns)
    assert all(c.summary["packets"]["offered"] > 0 for c in f.columns)
    for c, sim in zip(f.columns, d.sims):
        assert c.label == sim.technique.label() and c.stages == tuple(sim.technique.stages)
        assert c.narration and 0 <= c.stage <= len(c.stages)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.t_ns = 1


def test_the_orderings_fall_out_of_the_model():
    d = driver()
    d.advance(100_000_000)                     # ~410 frames at 50 Mb/s
    cols = {c.technique: c.summary for c in d.publish().columns}
    assert all(s["packets"]["delivered"] > 300 for s in cols.values())
    assert cols["emulation"]["exits"]["per_packet"] > cols["virtio"]["exits"]["per_packet"]
    copies = [cols[t]["copies_per_packet"] for t in ("emulation", "virtio", "sriov")]
    assert copies[0] == pytest.approx(2, abs=0.05) and copies[1] == pytest.approx(1, abs=0.05) and copies[2] == 0


def test_the_presets_own_settings_apply():
    p = load_preset("steady-stream").with_options(virtio={"vhost": True},
                                                  host={"apicv": True, "vtd_posted_interrupts": True})
    d = driver(preset=p)
    f = d.frame()
    assert "vhost on" in f.columns[1].label and f.host == "host: APICv + VT-d PI · xAPIC"
    d.advance(5_000_000)
    cols = {c.technique: c.summary for c in d.publish().columns}
    assert cols["sriov"]["interrupts"]["host"] == 0 and cols["sriov"]["interrupts"]["posted"] > 0
    assert "APIC_ACCESS" not in cols["virtio"]["exits"]["by_reason"]
    assert cols["emulation"]["exits"]["by_reason"].get("EOI_INDUCED", 0) > 0
    old = driver()
    assert old.frame().host == "host: no APICv · xAPIC"


async def test_a_cycles_the_host_profile_of_all_three():
    a = app(paused=True)
    async with a.run_test(size=(160, 45)) as pilot:
        await pilot.press("c")
        await pilot.pause(0.2)
        scr = a.screen
        assert "host: no APICv · xAPIC" in scr.w_header.render().plain
        scr.driver.pause()
        scr.driver.advance(3_000_000)
        scr.driver.publish()
        await pilot.pause(0.1)
        before = {c.technique: c.summary["exits"]["by_reason"] for c in scr.driver.frame().columns}
        assert all("APIC_ACCESS" in by for by in before.values())
        await pilot.press("a")
        await pilot.pause(0.2)
        assert "host: APICv · xAPIC" in scr.w_header.render().plain
        assert scr.driver.t_ns < 3_000_000                        # restarted
        scr.driver.pause()
        scr.driver.advance(3_000_000 - scr.driver.t_ns)
        after = {c.technique: c.summary["exits"]["by_reason"] for c in scr.driver.publish().columns}
        assert not any("APIC_ACCESS" in by for by in after.values())
        assert [t for t, by in after.items() if "EOI_INDUCED" in by] == ["emulation"]
        await pilot.press("a")
        await pilot.pause(0.2)
        assert "host: APICv + VT-d PI · xAPIC" in scr.w_header.render().plain
        await pilot.press("a")
        await pilot.pause(0.2)
        assert "host: no APICv · xAPIC" in scr.w_header.render().plain
        assert a.driver.sim.host.profile == "none"               # the main view keeps its own
        cmds = {c.title for c in a.get_system_commands(scr)}
        assert any(t.startswith("Compare: next host profile") for t in cmds)


async def test_pausing_publishes_nothing_and_time_stands_still():
    d = driver()
    frames = []
    d.subscribe(frames.append)
    d.resume()
    d.start()
    await asyncio.sleep(0.3)
    assert frames and d.t_ns > 0
    d.pause()
    n, t = len(frames), d.t_ns
    await asyncio.sleep(0.3)
    assert len(frames) == n and d.t_ns == t and not frames[-1].running
    assert all(sim.engine.now == t for sim in d.sims)
    d.resume()
    await asyncio.sleep(0.2)
    assert d.t_ns > t
    await d.stop()


def test_a_step_advances_all_three_to_the_earliest_next_event():
    d = driver()
    d.advance(10_000)
    t, runs = d.t_ns, [s.engine.events_run for s in d.sims]
    nxt = d.next_time()
    f = d.step()
    assert not f.running and f.t_ns == nxt > t
    assert all(c.t_ns == f.t_ns for c in f.columns)
    assert sum(c.events_run for c in f.columns) > sum(runs)
    d.step()
    back = d.step_back()
    assert back.t_ns == f.t_ns and [c.events_run for c in back.columns] == [c.events_run for c in f.columns]


def test_step_back_from_a_checkpoint_gives_the_same_frames():
    d = driver()
    d.checkpoint_every = 2000
    for _ in range(60):
        d.advance(1_000_000)
        d._maybe_checkpoint()
        if len(d._checkpoints) == 2 and d._checkpoints[1][0] == d.t_ns:
            break
    assert len(d._checkpoints) == 2 and d._checkpoints[0][0] < d._checkpoints[1][0] == d.t_ns
    seen = [_strip_seq(d.step()) for _ in range(6)]
    for i in range(5, 0, -1):
        assert _strip_seq(d.step_back()) == seen[i - 1]
    assert [_strip_seq(d.step()) for _ in range(5)] == seen[1:]


def _strip_seq(f):
    return dataclasses.replace(f, seq=0)


def test_the_same_seed_gives_identical_frames():
    frames = []
    for _ in range(2):
        d = driver(seed=7)
        d.advance(1_500_000)
        for _ in range(5):
            d.step()
        frames.append(_strip_seq(d.publish()))
    assert frames[0] == frames[1]
    other = driver(seed=8)
    other.advance(1_500_000)
    assert _strip_seq(other.publish()).columns != frames[0].columns


def test_advancing_in_chunks_does_not_change_the_run():
    a, b = driver(), driver()
    a.advance(3_000_000)
    for _ in range(30):
        b.advance(100_000)
    assert _strip_seq(a.publish()) == _strip_seq(b.publish())


def test_a_complete_run_stops():
    d = driver(packets=20)
    d.advance(50_000_000)
    f = d.publish()
    assert f.complete and all(c.complete for c in f.columns)
    assert all(c.summary["packets"]["delivered"] + c.summary["packets"]["dropped"] == 20 for c in f.columns)


# -- the screen, with Pilot ---------------------------------------------------------------------------
def app(tech="virtio", paused=True):
    return create_app(load_preset("steady-stream"), tech, seed=1, start_paused=paused)


def column_texts(scr):
    """Each column's text, read back from the rendered grid."""
    grid = scr.w_grid
    lines = grid.lines()
    n = len(grid.frame.columns)
    c = column_width(grid.size.width, n)
    cols = []
    for i in range(n):
        x = 1 + i * (c + 3)
        cols.append([ln[x:x + c] for ln in lines])
    return cols


def squash(s):
    return "".join(s.split())


async def test_c_opens_the_compare_view_and_pauses_the_main_run():
    a = app(paused=False)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("c")
        await pilot.pause(0.3)
        scr = a.screen
        assert isinstance(scr, CompareScreen)
        assert not a.driver.running and scr.driver.running
        text = "\n".join(scr.w_grid.lines())
        for word in ("emulation", "virtio", "SR-IOV", "exits/packet", "exits total", "copies/packet",
                     "Gb/s", "latency p50", "latency p99", "IOTLB hit rate", "delivered/offered", "dropped"):
            assert word in text, word
        assert [c.technique for c in scr.w_grid.frame.columns] == list(COMPARE_TECHNIQUES)
        assert "compare" in scr.w_header.render().plain and "seed 1" in scr.w_header.render().plain


async def test_the_main_views_keys_do_nothing_inside():
    a = app(paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("c")
        await pilot.pause(0.2)
        for key in ("g", "f", "k", "1", "3", "e", "v", "i"):
            await pilot.press(key)
        await pilot.pause(0.1)
        assert isinstance(a.screen, CompareScreen)
        assert not a.driver.predict and not a.driver.follower.armed and not a.w_exits.aggregate
        assert a.technique == "virtio"


async def test_space_n_and_plus_work_inside():
    a = app(paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("c")
        await pilot.pause(0.2)
        scr = a.screen
        d = scr.driver
        assert d.running
        await pilot.press("space")
        assert not d.running
        t = d.t_ns
        await pilot.pause(0.2)
        assert d.t_ns == t
        n = scr.frames_applied
        await pilot.pause(0.2)
        assert scr.frames_applied == n and not scr._timer._active.is_set()   # paused: no redraw work
        await pilot.press("n")
        await pilot.pause(0.1)
        assert d.t_ns > t and not d.running
        assert "paused" in scr.w_header.render().plain
        s = d.speed
        await pilot.press("plus")
        assert d.speed > s
        await pilot.press("minus", "minus")
        assert d.speed < s
        await pilot.press("1")                   # a main-view key acts on nothing here
        await pilot.pause(0.05)
        assert a.screen is scr and a.driver.sim.technique.name == "virtio"
        await pilot.press("space")
        await pilot.pause(0.2)
        assert d.running and d.t_ns > t


@pytest.mark.parametrize("was_running", [True, False])
@pytest.mark.parametrize("key", ["escape", "c"])
async def test_closing_returns_to_the_main_view_as_it_was(was_running, key):
    a = app(paused=not was_running)
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        await pilot.press("c")
        await pilot.pause(0.2)
        scr = a.screen
        assert isinstance(scr, CompareScreen)
        t = a.driver.sim.engine.now
        await pilot.pause(0.2)
        assert a.driver.sim.engine.now == t           # the main run waits while compare is open
        await pilot.press(key)
        await pilot.pause(0.2)
        assert a.screen is a.screen_stack[0] and not isinstance(a.screen, CompareScreen)
        assert a.driver.running == was_running
        assert scr.driver._task is None or scr.driver._task.done()   # the compare run stopped
        assert not scr.driver.running


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)])
async def test_nothing_is_cut_off(size):
    w, h = size
    a = app()
    async with a.run_test(size=size) as pilot:
        await pilot.press("c")
        await pilot.pause(0.3)
        scr = a.screen
        await pilot.press("space")
        for _ in range(40):
            await pilot.press("n")
        await pilot.pause(0.2)
        f = scr._applied
        assert f is scr.w_grid.frame and not f.running
        header = scr.w_header.render().plain
        assert "paused" in header and "seed 1" in header and "×" in header and "t = " in header
        assert all(len(line) <= w for line in header.splitlines())
        # the whole layout fits the grid's height: no line beyond the last is drawn
        strips, level = layout_grid(f, scr.w_grid.size.width, scr.w_grid.size.height)
        assert len(strips) == scr.w_grid.size.height
        assert scr.w_grid.region.bottom <= h - 1                  # above the footer
        for col, lines in zip(f.columns, column_texts(scr)):
            text = " ".join(lines)
            flat = squash(text)
            assert col.narration and squash(col.narration) in flat      # the whole narration line
            head = col.label.split(" (")[0]
            assert head in text
            if 0 < col.stage <= len(col.stages):
                assert squash(col.stages[col.stage - 1]) in flat and "◀" in text
            ex = col.summary["exits"]
            assert f"{ex['per_packet']:.2f}" in text and f"{ex['total']:,}" in text
            top = sorted(ex["by_reason"].items(), key=lambda kv: -kv[1])[:1]
            for name, _n in top:                                           # the reason and its vmx number
                assert f"{name} {EXIT_REASONS[name]}" in text
            for word in ("exits/packet", "irq", "copies", "Gb/s", "p50", "p99", "IOTLB hit rate"):
                assert word in text, (word, size)
            assert f"{col.summary['packets']['delivered']:,}/{col.summary['packets']['offered']:,}" in text
            if col.technique != "sriov":
                assert "IOTLB hit rate" in text and "–" in text
        from textual.widgets._footer import FooterKey
        keys = list(scr.w_footer.query(FooterKey))
        assert {"space", "n", "escape"} <= {k.key for k in keys}
        assert all(k.region.width and k.region.right <= w for k in keys)


async def test_a_resize_storm_while_open():
    a = app(paused=False)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("c")
        scr = a.screen
        for size in [(80, 24), (60, 20), (200, 50), (80, 24)]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.05)
        assert a.screen is scr and scr.w_grid.lines()
        await pilot.press("question_mark")
        await pilot.pause(0.05)
        await pilot.press("escape")
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert a.screen is a.screen_stack[0] and a.driver.running


async def test_the_command_palette_offers_what_the_open_screen_can_do():
    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        main = {c.title for c in a.get_system_commands(a.screen)}
        assert "Step one event" in main and "Technique: SR-IOV" in main and "Theme: light ⇄ dark" in main
        await pilot.press("c")
        await pilot.pause()
        scr = a.screen
        assert isinstance(scr, CompareScreen)
        await pilot.press("space")                    # pause the compare run
        await pilot.pause()
        cmds = {c.title: c for c in a.get_system_commands(scr)}
        assert "Step one event" not in cmds and "Technique: SR-IOV" not in cmds   # they would act on the hidden run
        assert "Theme: light ⇄ dark" in cmds
        t = scr.driver.t_ns
        main_t = a.driver.sim.engine.now
        cmds["Compare: step one instant"].callback()
        await pilot.pause()
        assert scr.driver.t_ns > t and a.driver.sim.engine.now == main_t
        cmds["Close the compare view"].callback()
        await pilot.pause()
        assert not isinstance(a.screen, CompareScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        helpcmds = {c.title for c in a.get_system_commands(a.screen)}
        assert "Step one event" not in helpcmds and "Presenter mode on" in helpcmds
