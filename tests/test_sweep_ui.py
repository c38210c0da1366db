"""The app's sweep view (S, or the palette's "Sweep load…"), with Pilot.

Small sweeps (few rates, few packets) so the file runs quickly; figures
are not pinned, only what the screen says and that it keeps working.
"""
import asyncio
import multiprocessing
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app
from iovtui.ui.palette import OKABE_ITO

LEGEND = ("o device emulation (e1000)", "x virtio", "+ SR-IOV")


@pytest.fixture(autouse=True)
def small_sweeps(monkeypatch):
    import iovtui.ui.screens.sweep as sw

    monkeypatch.setattr(sw, "APP_PACKETS", 120)
    monkeypatch.setattr(sw, "APP_RATES", (500.0, 20_000.0, 1_000_000.0))


def screen_text(a) -> str:
    """What the screen shows: the screenshot's text runs in order (a line's
    differently styled runs are consecutive), each line on its own."""
    import html

    svg = a.export_screenshot()
    lines: dict[str, list[str]] = {}
    for line, run in re.findall(r'<text [^>]*clip-path="url\(#terminal-\d+-line-(\d+)\)"[^>]*>([^<]*)</text>', svg):
        lines.setdefault(line, []).append(html.unescape(run).replace("\xa0", " "))
    return "\n".join("".join(runs) for _n, runs in sorted(lines.items(), key=lambda kv: int(kv[0])))


async def until(pilot, cond, seconds=60.0):
    for _ in range(int(seconds / 0.1)):
        if cond():
            return True
        await pilot.pause(0.1)
    return cond()


async def test_S_opens_the_curves_switches_measure_and_escape_returns():
    a = create_app(load_preset("steady-stream"), "virtio", seed=1)
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("S")
        scr = a.screen
        assert type(scr).__name__ == "SweepScreen"
        t0 = a.driver.sim.engine.now
        assert await until(pilot, lambda: scr.finished or scr.error)
        assert scr.error is None and scr.done == scr.total == 9
        await pilot.pause(0.2)
        txt = screen_text(a)
        for s in (*LEGEND, "Sweep · steady-stream · VM exits per packet", "offered load (packets/s, log scale)",
                  "✓ 9 points", "this preset (", "m next", "esc closes", "1k", "100k"):
            assert s in txt, s
        assert a.driver.sim.engine.now > t0           # the main run went on behind the sweep
        await pilot.press("m")
        await pilot.pause(0.2)
        assert "Sweep · steady-stream · interrupts per packet" in screen_text(a)
        await pilot.press("3")
        await pilot.pause(0.2)
        assert "host CPU per packet (µs)" in screen_text(a)
        await pilot.press("M")
        await pilot.pause(0.2)
        assert "Sweep · steady-stream · interrupts per packet" in screen_text(a)
        await pilot.press("6")
        await pilot.pause(0.2)
        assert "throughput (Gb/s)" in screen_text(a)
        await pilot.press("n")                        # a main-view key: does nothing to the run here
        await pilot.pause(0.1)
        assert a.driver.running
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert a.screen is a.screen_stack[0]
        applied = a.frames_applied
        await pilot.pause(0.5)
        assert a.frames_applied > applied             # the main view still updates


async def test_the_palette_opens_it_and_offers_its_commands():
    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        assert "Sweep load…" in {c.title for c in a.get_system_commands(a.screen)}
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"Sweep load")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.3)
        scr = a.screen
        assert type(scr).__name__ == "SweepScreen"
        cmds = {c.title for c in a.get_system_commands(scr)}
        assert {"Sweep: next measure", "Close the sweep view"} <= cmds and "Sweep load…" not in cmds
        assert await until(pilot, lambda: scr.finished or scr.error)
        txt = screen_text(a)
        assert all(s in txt for s in LEGEND)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert a.screen is a.screen_stack[0]


async def test_escape_stops_the_work_and_its_processes(monkeypatch):
    import iovtui.ui.screens.sweep as sw

    monkeypatch.setattr(sw, "APP_PACKETS", 2_000_000)      # minutes of work: escape must end it
    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("S")
        scr = a.screen
        assert await until(pilot, lambda: len(multiprocessing.active_children()) >= scr.jobs)
        await pilot.pause(0.5)
        assert "computing ▕" in screen_text(a) and "0/9 points" in screen_text(a)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert a.screen is a.screen_stack[0]
        assert await until(pilot, lambda: not multiprocessing.active_children(), 30)
        assert scr.done == 0


def _fills(svg: str) -> set[str]:
    """Every colour the screenshot paints: backgrounds (fill="…") and text (the CSS rules' fill: …)."""
    return {m.lower() for m in re.findall(r'fill(?:="|:\s*)(#[0-9a-fA-F]{6})', svg)}


def _grey(c: str) -> bool:
    r, g, b = (int(c[i:i + 2], 16) for i in (1, 3, 5))
    return max(r, g, b) - min(r, g, b) <= 2


async def test_no_color_keeps_the_markers_and_legend(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("S")
        scr = a.screen
        assert await until(pilot, lambda: scr.finished or scr.error)
        await pilot.pause(0.2)
        svg = a.export_screenshot()
        txt = screen_text(a)
    chrome = {"#ff5f57", "#febc2e", "#28c840", "#c5c8c6"}
    colours = {c for c in _fills(svg) if c not in chrome}
    assert colours and all(_grey(c) for c in colours), sorted(c for c in colours if not _grey(c))
    assert all(s in txt for s in LEGEND)
    # every technique's marker is drawn on the chart itself, not only in the legend
    plot = txt.split("Sweep · steady-stream")[1].split("device emulation (e1000)")[0]
    for m in ("o", "x", "+"):
        assert plot.count(m) > 3, m


async def test_colour_blind_palette_draws_the_curves_in_okabe_ito():
    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True, palette="colorblind")
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("S")
        scr = a.screen
        assert await until(pilot, lambda: scr.finished or scr.error)
        await pilot.pause(0.2)
        svg = a.export_screenshot()
        assert all(s in screen_text(a) for s in LEGEND)
    okabe = {c.lower() for c in OKABE_ITO.values()}
    saturated = {c for c in _fills(svg) if not _grey(c)} - {"#ff5f57", "#febc2e", "#28c840"}
    assert len(saturated & okabe) >= 3                 # three techniques, three Okabe–Ito colours


async def test_small_windows():
    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(60, 16)) as pilot:           # the app's smallest: the chart still reads
        await pilot.press("S")
        scr = a.screen
        assert await until(pilot, lambda: scr.finished or scr.error)
        await pilot.pause(0.2)
        txt = " ".join(screen_text(a).split())              # (the legend wraps)
        assert "VM exits per packet" in txt and "1k" in txt and "100k" in txt
        assert all(s in txt for s in LEGEND)
        await pilot.resize_terminal(50, 12)                 # below it: the app's cover names the minimum
        await pilot.pause(0.4)
        assert "iovtui needs at least 60×16" in " ".join(screen_text(a).split())
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.4)
        assert a.screen is scr
        txt = screen_text(a)
        assert "offered load (packets/s, log scale)" in txt and all(s in txt for s in LEGEND)


async def test_a_ping_pong_preset_says_why_it_has_no_curves():
    a = create_app(load_preset("pingpong"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("S")
        scr = a.screen
        assert await until(pilot, lambda: scr.finished or scr.error)
        await pilot.pause(0.2)
        txt = " ".join(screen_text(a).split())
        assert "✗ preset 'pingpong' is ping-pong traffic" in txt and "open-loop preset" in txt
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert a.screen is a.screen_stack[0]


def test_start_up_does_not_load_the_sweep():
    code = ("import sys, iovtui.ui.app, iovtui.cli; "
            "bad = [m for m in ('textual_plotext', 'plotext', 'pygal', 'iovtui.ui.screens.sweep', "
            "'iovtui.sim.sweep', 'iovtui.sweepout') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)
