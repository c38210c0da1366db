"""The app, driven with Pilot as a user would drive it."""
import os
import re
import pytest

from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app
from iovtui.ui.screens import HelpScreen, HexScreen


def app(tech="virtio", paused=True, preset="steady-stream"):
    return create_app(load_preset(preset), tech, seed=1, start_paused=paused)


async def test_space_pauses_and_runs():
    a = app(paused=False)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        assert a.driver.running
        await pilot.press("space")
        assert not a.driver.running
        t = a.driver.sim.engine.now
        await pilot.pause(0.3)
        assert a.driver.sim.engine.now == t
        await pilot.press("space")
        await pilot.pause(0.3)
        assert a.driver.running and a.driver.sim.engine.now > t


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_panes_do_not_jump_while_running(size):
    """Narrations of one line and of two alternate from frame to frame; the
    bars only grow, so the panes below move at most once, not every frame."""
    a = app(paused=False, tech="emulation")
    async with a.run_test(size=size) as pilot:
        regions, lines = [], set()
        for _ in range(40):
            await pilot.pause(0.05)
            regions.append(a.query_one("#main").region)
            lines.add(len(a.w_narration.text.wrap(a.console, a.w_narration.size.width)))
        changes = sum(1 for x, y in zip(regions, regions[1:]) if x != y)
        assert changes <= 1, regions
        await pilot.resize_terminal(size[0] + 30, size[1])   # a new width fits the bars again
        await pilot.pause(0.2)
        assert a.w_narration.size.height <= 2


async def test_every_exit_reaches_the_log_even_when_frames_are_skipped():
    """The app draws only the newest frame; the exits of frames it skipped
    (a tick and a pause published between two redraws) are still logged."""
    a = app("sriov")
    async with a.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.1)
        for _ in range(5):
            for _ in range(12):                  # twelve frames published between two redraws
                a.driver.sim.engine.run(max_events=7)
                a.driver.publish()
            await pilot.pause(0.05)
        exits = [e.seq for e in a.driver.sink.events if e.kind == "exit"]
        assert len(exits) > 10 and list(a.w_exits.seqs) == exits[-len(a.w_exits.seqs):]
        assert list(a.w_exits.seqs)[-1] == exits[-1]


async def test_a_wrapped_narration_continues_under_its_message():
    a = app("sriov")
    async with a.run_test(size=(80, 24)) as pilot:
        for _ in range(40):
            await pilot.press("n")
            await pilot.pause(0.02)
            lines = a.w_narration.render().plain.split("\n")
            if len(lines) > 1:
                break
        assert len(lines) > 1
        head = re.match(r"^ \S [\d,.]+ \S+  (\[\d+/\d+\] )?", lines[0]).end()
        assert all(line.startswith(" " * head) and line[head] != " " for line in lines[1:]), lines
        assert all(len(line) <= 80 for line in lines)


async def test_n_steps_and_narrates():
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        before = a.driver.sim.engine.events_run
        await pilot.press("n")
        await pilot.pause(0.1)
        first = str(a.w_narration.text)
        await pilot.press("n")
        await pilot.pause(0.1)
        assert a.driver.sim.engine.events_run > before
        assert str(a.w_narration.text) != first and str(a.w_narration.text).strip()


async def test_plus_minus_change_speed():
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        s = a.driver.speed
        await pilot.press("plus")
        assert a.driver.speed > s
        await pilot.press("minus", "minus")
        assert a.driver.speed < s


@pytest.mark.parametrize("key,tech", [("1", "emulation"), ("2", "virtio"), ("3", "sriov")])
async def test_technique_keys_keep_preset_and_seed(key, tech):
    a = app("virtio" if tech != "virtio" else "sriov")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press(key)
        await pilot.pause(0.1)
        assert a.driver.sim.technique.name == tech
        assert a.driver.sim.seed == 1 and a.driver.sim.preset.name == "steady-stream"
        assert tech.split()[0][:3].lower() in str(a.w_header.text).lower() or "SR-IOV" in str(a.w_header.text)


async def test_toggles_apply_or_explain():
    a = app("virtio")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("v")
        await pilot.pause(0.1)
        assert a.driver.sim.technique.opts["vhost"] is False and "vhost off" in str(a.w_header.text)   # vhost-net is the default
        await pilot.press("e")
        assert a.driver.sim.technique.opts["event_idx"] is False
        await pilot.press("1", "v")
        await pilot.pause(0.1)
        assert "vhost applies to virtio" in str(a.w_narration.text)
        await pilot.press("3", "a")              # the host profile applies to every technique
        await pilot.pause(0.1)
        assert a.driver.sim.host.profile == "apicv" and "host: APICv · xAPIC" in str(a.w_header.text)


async def test_help_opens_and_closes():
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(a.screen, HelpScreen)
        await pilot.pause(0.05)
        text = "\n".join(str(w.render()) for w in a.screen.query("Static"))
        assert "What the model simplifies" in text and "executes HLT" in text and "[k/n]" in text
        assert "no HLT exits and an interrupt kicks" not in text          # the old mechanics are gone
        await pilot.press("escape")
        assert not isinstance(a.screen, HelpScreen)


async def test_enter_opens_a_hex_view_of_real_bytes():
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(30):
            await pilot.press("n")
        await pilot.press("enter")
        assert isinstance(a.screen, HexScreen)
        assert "desc[0]" in " ".join(n[2] for n in a.screen.notes)
        await pilot.press("escape")
        # move the cursor to the first RX buffer page and look at the frame
        mem = a.driver.sim.vms[0].mem
        for _ in range(20):
            if mem.role_at(a.w_ram.selected_gpa()) == "rx_buf":
                break
            await pilot.press("right")
        await pilot.press("enter")
        notes = " ".join(n[2] for n in a.screen.notes)
        assert "virtio_net_hdr" in notes and "Ethernet destination 52:54:00:00:00:01" in notes


@pytest.mark.parametrize("tech,preset,field", [
    ("virtio", "packed-ring", "packed desc"), ("virtio", "steady-stream", "desc["),
    ("emulation", "steady-stream", "desc["), ("sriov", "steady-stream", "rx desc["),
])
async def test_enter_on_the_ring_pane_opens_the_marked_descriptors_bytes(tech, preset, field):
    """enter in the Ring pane: the hex view of the page that holds the marked
    (last touched) descriptor, its fields listed first, for every ring kind."""
    a = app(tech=tech, preset=preset)
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(40):
            await pilot.press("n")
        await pilot.press("tab")
        assert a.active_pane == "ring"
        ring = a.w_ring.ring()
        row = max(ring.active, 0)
        desc = ring.base_gpa + 16 * row
        await pilot.press("enter")
        assert isinstance(a.screen, HexScreen)
        assert f"descriptor {row} at 0x{desc:x}" in a.screen.title_text
        assert a.screen.base == desc & ~0xFFF
        off, n, label = a.screen.notes[0]
        assert off <= desc - a.screen.base < off + 16 and field in label and f"[{row}]" in label
        mem = a.driver.sim.vms[0].mem
        assert a.screen.data == mem.read(a.screen.base, 4096)


async def test_tab_cycles_panes_and_compact_mode_shows_one():
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        assert a.compact
        visible = [p for p in a.panes.values() if p.display and p.region.area]
        assert [p.id for p in visible] == ["ram"]
        await pilot.press("tab")
        await pilot.pause(0.1)
        assert a.active_pane == "ring"
        visible = [p for p in a.panes.values() if p.region.area]
        assert [p.id for p in visible] == ["ring"]
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.2)
        assert not a.compact and all(p.region.area for p in a.panes.values())


async def test_resize_storm_with_a_modal_open():
    a = app(paused=False)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        for w, h in [(80, 24), (40, 12), (200, 50), (60, 20), (100, 30), (120, 40)]:
            await pilot.resize_terminal(w, h)
            await pilot.pause(0.05)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert a.frames_applied > 0 and not a.compact


async def test_idle_panes_say_why():
    a = app("virtio")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        assert "host owns" in a._applied.iommu.idle_reason
        await pilot.press("3")
        await pilot.pause(0.1)
        assert not a._applied.iommu.idle_reason and a._applied.iommu.rows


async def test_exit_log_is_bounded():
    a = app("emulation", preset="line-rate")
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(150):
            a.driver.sim.engine.run(max_events=300)
            a.driver.publish()
            await pilot.pause(0.035)
            if len(a.w_exits.lines) == 500:
                break
        exits = a.driver.sim.metrics.exits_total
        assert exits > 600
        assert len(a.w_exits.lines) == a.w_exits.lines.maxlen == 500      # bounded, newest kept
        last = a.w_exits.lines[-1].plain
        assert "EPT_MISCONFIG 49" in last or "APIC_ACCESS 44" in last or "EXTERNAL_INTERRUPT 1" in last
        assert not any("APIC_WRITE" in line.plain for line in a.w_exits.lines)     # never an EOI's reason


async def test_quit():
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
    assert a.return_code in (0, None)


async def test_m_focuses_the_next_vm():
    a = app(preset="multi-tenant")
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(40):
            await pilot.press("n")
        await pilot.press("m")
        await pilot.pause(0.1)
        assert a.w_ram.vm_index == 1 and a.w_ring.ring().vm == "vm1"
        assert a.w_ram.render_line(0).text.startswith(" vm1 ")


async def test_p_picks_a_preset_and_restarts_deterministically():
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("p")
        from iovtui.ui.screens import PresetScreen
        assert isinstance(a.screen, PresetScreen)
        names = [n for n, _, _ in a.screen.presets]
        assert "rogue-dma" in names and all(d for _, d, _ in a.screen.presets)
        ol = a.screen.query_one("#preset-list")
        ol.highlighted = names.index("multi-tenant")
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert not isinstance(a.screen, PresetScreen)
        assert a.driver.sim.preset.name == "multi-tenant" and len(a.driver.sim.vms) == 4
        assert a.driver.sim.seed == 1 and a.driver.sim.engine.events_run == 0
        assert "multi-tenant" in str(a.w_header.text)


async def test_k_switches_the_exit_log_to_a_kvm_stat_view():
    a = app("emulation", preset="steady-stream")
    async with a.run_test(size=(120, 40)) as pilot:
        a.driver.sim.engine.run(max_events=300)
        a.driver.publish()
        await pilot.pause(0.04)
        await pilot.press("k")
        await pilot.pause(0.04)
        assert all(r[3] is None for r in a.w_exits.kvm_stat_rows())    # one frame says no rate yet
        assert "–" in "".join(a.w_exits.render_line(y).text for y in range(3))
        await pilot.press("k")
        for _ in range(6):
            a.driver.sim.engine.run(max_events=300)
            a.driver.publish()
            await pilot.pause(0.04)
        await pilot.press("k")
        await pilot.pause(0.05)
        rows = a.w_exits.kvm_stat_rows()
        by = a._applied.summary["exits"]["by_reason"]
        assert rows[0][0] == "kvm_exit(EPT_MISCONFIG)" and rows[0][1] == by["EPT_MISCONFIG"]
        assert abs(sum(r[2] for r in rows) - 100) < 0.01
        assert rows[0][3] > 0                          # a current rate, per second of virtual time
        text = "".join(a.w_exits.render_line(y).text for y in range(3))
        assert "CurAvg/s" in text and "EPT_MISCONFIG" in text and "kvm_exit(" in text
        await pilot.resize_terminal(200, 50)
        await pilot.pause(0.1)
        text = "".join(a.w_exits.render_line(y).text for y in range(3))
        assert "CurAvg/s" in text and "kvm_exit(EPT_MISCONFIG)" in text
        await pilot.press("k")
        assert not a.w_exits.aggregate


async def test_kvm_stat_current_rate_is_steady_on_a_steady_stream():
    """steady-stream under virtio: one interrupt per packet, so one EOI
    (APIC_ACCESS, xAPIC without APICv) per packet, and its CurAvg/s stays
    near that rate from frame to frame."""
    a = app("virtio", preset="steady-stream")
    async with a.run_test(size=(120, 40)) as pilot:
        rates = []
        for _ in range(60):
            a.driver.sim.engine.run_until(a.driver.sim.engine.now + 30_000)   # 30 µs of virtual time a frame
            a.driver.publish()
            await pilot.pause(0.01)
            rates.append(dict((r[0], r[3]) for r in a.w_exits.kvm_stat_rows()).get("kvm_exit(APIC_ACCESS)", 0))
        s = a._applied.summary
        true_rate = s["exits"]["by_reason"]["APIC_ACCESS"] / (s["virtual_time_ns"] / 1e9)
        late = rates[35:]
        assert max(late) < 1.15 * true_rate and min(late) > 0.85 * true_rate, (true_rate, late)


async def test_b_steps_back():
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(10):
            await pilot.press("n")
        await pilot.pause(0.05)
        runs = a.driver.sim.engine.events_run
        narr = str(a.w_narration.text)
        await pilot.press("n")
        await pilot.press("b")
        await pilot.pause(0.05)
        assert a.driver.sim.engine.events_run == runs and str(a.w_narration.text) == narr


async def test_only_the_latest_frame_is_applied_once_per_tick():
    """Frames are stored by the subscriber and applied by a 1/30 s timer:
    fifty frames published between two ticks cost one redraw, of the newest."""
    from iovtui.ui.app import MAX_FPS
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        assert MAX_FPS <= 30 and abs(a._timer._interval - 1 / MAX_FPS) < 1e-9
        n0 = a.frames_applied
        for _ in range(50):
            a.driver.sim.engine.run(max_events=5)
            a.driver.publish()
        assert a.frames_applied == n0          # publishing never redraws by itself
        newest = a._latest
        a._apply_latest()
        a._apply_latest()
        assert a.frames_applied == n0 + 1 and a._applied is newest


async def test_paused_and_unchanged_does_no_redraw_work(monkeypatch):
    from iovtui.ui.panes import GuestRamPane, RingPane
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        builds = []
        for cls in (GuestRamPane, RingPane):
            orig = cls._build
            monkeypatch.setattr(cls, "_build", lambda self, orig=orig: builds.append(1) or orig(self))
        n = a.frames_applied
        await pilot.pause(0.3)
        assert a.frames_applied == n and not builds
        assert not a._timer._active.is_set()   # the refresh timer itself is paused
        await pilot.press("n")
        await pilot.pause(0.1)
        assert a.frames_applied == n + 1


async def test_a_technique_not_built_gives_a_notice(monkeypatch):
    import iovtui.ui.app as ui_app
    monkeypatch.setattr(ui_app, "available", lambda: ("virtio",))
    a = app("virtio")
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("1")
        await pilot.pause(0.1)
        assert a.driver.sim.technique.name == "virtio"
        assert "emulation is not built" in str(a.w_narration.text)


async def test_hex_view_shows_the_live_bytes_and_survives_resizing():
    import struct
    a = app()
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(30):
            await pilot.press("n")
        await pilot.press("enter")
        scr = a.screen
        assert isinstance(scr, HexScreen)
        gpa = a.w_ram.selected_gpa()
        assert bytes(scr.data) == bytes(a.driver.sim.vms[0].mem.read(gpa, 4096))
        addr, ln, _fl, _nx = struct.unpack_from("<QIHH", scr.data, 0)
        assert f"desc[0] addr 0x{addr:x} len {ln} flags" in scr.notes[0][2]
        for w, h in [(80, 24), (50, 16), (200, 50), (80, 24)]:
            await pilot.resize_terminal(w, h)
            await pilot.pause(0.05)
        assert a.screen is scr
        dump = str(scr.query_one("#hex-dump").render())
        assert f"{gpa:08x}  " in dump and f"{gpa + 8:08x}  " in dump   # 8 bytes a row at 80 columns
        await pilot.press("escape")
        assert not isinstance(a.screen, HexScreen)


@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
async def test_nothing_is_cut_off_at_80x24(tech):
    from iovtui.sim.paths import available
    if tech not in available():
        pytest.skip(f"{tech} not built")
    a = app(tech)
    async with a.run_test(size=(80, 24)) as pilot:
        for _ in range(12):
            await pilot.press("n")
        await pilot.pause(0.1)
        f = a._applied
        header = a.w_header.render().plain
        assert "paused" in header and f"seed {f.seed}" in header and "×" in header
        assert all(line.rstrip() == line.rstrip()[:80].rstrip() for line in header.splitlines())
        for stage in f.stages:                     # every stage, whole, on the path strip
            assert stage in a.w_path.text.plain
        assert a.w_path.region.height == len(a.w_path.text.plain.splitlines())
        assert f.last_event.msg in a.w_narration.text.plain
        assert a.w_narration.region.height >= len(a.w_narration.text.wrap(a.console, a.w_narration.size.width))
        from textual.widgets._footer import FooterKey
        keys = list(a.w_footer.query(FooterKey))
        assert {"space", "n", "q", "question_mark"} <= {k.key for k in keys}
        assert all(k.region.width and k.region.right <= 80 for k in keys)   # every footer key is on screen


async def test_a_notice_stays_readable_while_running():
    a = app("virtio", paused=False)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        await pilot.press("e")                  # event idx off: fine; then the host profile's notice
        await pilot.press("a")
        await pilot.pause(0.3)                  # several frames later, still there
        assert a.driver.running and a.frames_applied > 1
        assert "host: APICv · xAPIC — restarted" in str(a.w_narration.text)
        await pilot.press("n")                  # a step's explanation replaces it
        await pilot.pause(0.1)
        assert "restarted" not in str(a.w_narration.text)


async def test_help_numbers_both_paths_for_every_technique():
    from iovtui.sim.paths import stage_table

    a = app()
    async with a.run_test(size=(160, 60)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        from rich.console import Console

        con = Console(width=400, record=True, file=open(os.devnull, "w"))
        for w in a.screen.query("Static"):
            con.print(w.content)
        text = con.export_text()
        assert "The receive path, step by step" in text and "The transmit path, step by step" in text
        for _name, stages in stage_table(tx=True) + stage_table():
            assert all(label in text for label in stages), stages
