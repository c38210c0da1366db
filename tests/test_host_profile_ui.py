"""The host profile in the app: the header names it, `a` cycles it (no APICv →
APICv → APICv + VT-d posted interrupts) on the same workload, and the next
run's exits change accordingly."""
import pytest

from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app
from iovtui.ui.screens import HelpScreen


def app(tech="virtio", preset="steady-stream"):
    return create_app(load_preset(preset), tech, seed=1, start_paused=True)


def header(a):
    return a.w_header.render().plain


async def run_some(a, pilot, events=4000):
    """Run the (paused) app's simulation a while and let the frame reach the panes."""
    a.driver.sim.engine.run(max_events=events)
    a.driver.publish()
    await pilot.pause(0.1)


def help_text(screen):
    """The help screen's text as a wide terminal shows it (its key table too)."""
    import io

    from rich.console import Console

    con = Console(width=300, file=io.StringIO(), record=True)
    for w in screen.query("Static"):
        con.print(w.content)
    return con.export_text()


def exit_log(a):
    return [line.plain for line in a.w_exits.lines]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_header_always_shows_the_host_profile(size):
    a = app()
    async with a.run_test(size=size) as pilot:
        await pilot.pause(0.1)
        assert "host: no APICv · xAPIC" in header(a)
    a = app("sriov", preset="modern-host")
    async with a.run_test(size=size) as pilot:
        await pilot.pause(0.1)
        assert "host: APICv + VT-d PI · x2APIC" in header(a)


async def test_a_cycles_the_host_profile_and_the_next_run_shows_it():
    a = app("virtio")
    async with a.run_test(size=(120, 40)) as pilot:
        await run_some(a, pilot)
        log = exit_log(a)
        assert any("APIC_ACCESS 44" in line for line in log)           # the EOI, xAPIC without APICv
        await pilot.press("a")
        await pilot.pause(0.1)
        assert "host: APICv · xAPIC" in header(a)
        sim = a.driver.sim
        assert sim.engine.events_run == 0 and sim.preset.name == "steady-stream" and sim.seed == 1
        assert sim.technique.name == "virtio"
        await run_some(a, pilot)
        log = exit_log(a)
        assert a.driver.sim.metrics.delivered > 0
        assert not any("APIC_ACCESS" in line or "EXTERNAL_INTERRUPT" in line for line in log), log[-5:]
        await pilot.press("a")
        await pilot.pause(0.1)
        assert "host: APICv + VT-d PI · xAPIC" in header(a)
        # VT-d PI only changes SR-IOV: the notice says so on virtio
        assert "only SR-IOV" in str(a.w_narration.text)
        await pilot.press("a")
        await pilot.pause(0.1)
        assert "host: no APICv · xAPIC" in header(a) and a.driver.sim.host.profile == "none"


async def test_under_apicv_only_emulations_level_eoi_exits():
    a = app("emulation")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("a")
        await pilot.pause(0.1)
        await run_some(a, pilot, 20000)
        log = exit_log(a)
        assert any("EOI_INDUCED 45" in line for line in log)
        assert not any("APIC_ACCESS" in line for line in log)


async def test_vtd_posted_interrupts_take_sriovs_host_interrupt_away():
    a = app("sriov")
    async with a.run_test(size=(120, 40)) as pilot:
        await run_some(a, pilot)
        assert a._applied.summary["interrupts"]["host"] > 0
        assert any("APIC_ACCESS 44" in line for line in exit_log(a))
        await pilot.press("a", "a")
        await pilot.pause(0.1)
        assert "host: APICv + VT-d PI" in header(a) and "only SR-IOV" not in str(a.w_narration.text)
        await run_some(a, pilot)
        s = a._applied.summary
        assert s["packets"]["delivered"] > 0 and s["interrupts"]["host"] == 0 and s["interrupts"]["posted"] > 0
        assert not any("EXTERNAL_INTERRUPT" in line or "APIC_ACCESS" in line for line in exit_log(a))


async def test_i_is_the_same_key_and_help_footer_and_palette_know_a():
    a = app("virtio")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("i")
        await pilot.pause(0.1)
        assert a.driver.sim.host.profile == "apicv"
        from textual.widgets._footer import FooterKey
        assert "a" in {k.key for k in a.w_footer.query(FooterKey)}
        cmds = {c.title: c for c in a.get_system_commands(a.screen)}
        cmd = next(c for t, c in cmds.items() if t.startswith("Host profile"))
        cmd.callback()
        await pilot.pause(0.1)
        assert a.driver.sim.host.profile == "apicv+pi"
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert isinstance(a.screen, HelpScreen)
        assert "no APICv → APICv → APICv + VT-d posted interrupts" in help_text(a.screen)
    a = app("virtio")
    async with a.run_test(size=(80, 24)) as pilot:       # no room in the footer: the key still works
        await pilot.pause(0.1)
        await pilot.press("a")
        await pilot.pause(0.1)
        assert a.driver.sim.host.profile == "apicv" and "APICv · xAPIC" in header(a)
