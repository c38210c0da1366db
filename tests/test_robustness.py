"""Ctrl-C in every mode, NO_COLOR, the light theme, the colour-blind palette
and presenter mode."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from textual.color import Color

from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app
from iovtui.ui.palette import OKABE_ITO, Look

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# -- Ctrl-C ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["run", "--preset", "line-rate", "--technique", "virtio", "--packets", "10000000"],
    ["compare", "--preset", "line-rate", "--packets", "10000000"],
])
def test_ctrl_c_stops_a_headless_run_with_one_line(argv, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "iovtui", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ENV, cwd=tmp_path, text=True)
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130
    assert err.strip() == "iovtui: interrupted" and "Traceback" not in err


def _run_in_pty(keys: list[str], size=(24, 80), timeout: float = 25.0, term: str = "xterm-256color",
                quit_with: bytes = b"\x03", signal_to_send: int | None = None) -> tuple[int, bytes]:
    """Start the app in a real pseudo-terminal, type ``keys`` (each after a
    short pause), then Ctrl-C (or ``quit_with``, or send ``signal_to_send``);
    return the exit status and everything it wrote."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the app on the pty
        # (COLUMNS and LINES, set during a test run, would override the pty's size)
        env = {k: v for k, v in ENV.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = term
        os.execve(sys.executable, [sys.executable, "-m", "iovtui", "--preset", "steady-stream"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    out = bytearray()

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r, _w, _x = select.select([fd], [], [], 0.05)
            if r:
                try:
                    out.extend(os.read(fd, 65536))
                except OSError:
                    return

    deadline = time.monotonic() + timeout
    status = None
    try:
        while b"steady-stream" not in out and time.monotonic() < deadline:
            drain(0.2)
        assert b"steady-stream" in out, "the app never drew its header"
        for k in keys:
            os.write(fd, k.encode())
            drain(0.8)
        if signal_to_send is not None:
            os.kill(pid, signal_to_send)
        else:
            os.write(fd, quit_with)               # Ctrl-C, as a terminal in raw mode sends it (or q)
        while time.monotonic() < deadline:
            drain(0.1)
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
        if status is None:
            raise AssertionError(f"the app did not exit on {quit_with!r}" if signal_to_send is None
                                 else f"the app did not exit on signal {signal_to_send}")
        drain(0.2)
    finally:
        if status is None:                        # (a hung app must not outlive the test)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), bytes(out)


@pytest.mark.parametrize("keys", [[], ["?"], ["c"], ["p"], ["g", "n", "n", "n", "n"], ["f", "space"]],
                         ids=["main", "help", "compare", "presets", "predict", "follow-running"])
def test_ctrl_c_in_every_mode_exits_cleanly_and_restores_the_terminal(keys):
    code, out = _run_in_pty(keys)
    assert code == 0
    tail = out[-400:]
    assert b"\x1b[?1049l" in tail                 # left the alternate screen
    assert b"\x1b[?25h" in tail                   # the cursor is back
    assert b"Traceback" not in out


@pytest.mark.parametrize("term", ["dumb", "unknown"])
def test_a_dumb_terminal_draws_and_quits_on_q(term):
    # (Rich takes TERM=dumb for an 80×25 console; the real size came second and
    # the screen laid itself out for both sizes in turn, for ever: blank, 100 % CPU)
    code, out = _run_in_pty(["n"], size=(30, 100), term=term, quit_with=b"q")
    assert code == 0
    assert b"Guest RAM" in out and b"Traceback" not in out
    assert b"\x1b[?1049l" in out[-400:]


@pytest.mark.parametrize("keys", [[], ["c"], ["p"]], ids=["main", "compare", "presets"])
def test_sigterm_exits_as_ctrl_c_does_and_restores_the_terminal(keys):
    code, out = _run_in_pty(keys, signal_to_send=signal.SIGTERM)
    assert code == 0                              # ctrl+c's status (the app handles SIGTERM as it)
    tail = out[-400:]
    assert b"\x1b[?1049l" in tail                 # left the alternate screen
    assert b"\x1b[?25h" in tail                   # the cursor is back
    assert b"\x1b[?1000l" in tail                 # mouse tracking off
    assert b"Traceback" not in out


# -- NO_COLOR ------------------------------------------------------------------------------------

def _fills(svg: str) -> set[str]:
    return {m.lower() for m in re.findall(r'fill="(#[0-9a-fA-F]{6})"', svg)}


def _grey(hexcolour: str) -> bool:
    r, g, b = (int(hexcolour[i:i + 2], 16) for i in (1, 3, 5))
    return max(r, g, b) - min(r, g, b) <= 2


async def test_no_color_draws_no_colour_and_keeps_the_glyphs(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    a = create_app(load_preset("steady-stream"), "sriov", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(12):
            await pilot.press("n")
        await pilot.pause()
        svg = a.export_screenshot()
        # a buffer page just written (by the NIC's DMA) is marked by a glyph, not only by its colour
        for _ in range(40):
            grid = "".join(a.w_ram.render_line(y).text for y in range(1, 12))
            if "▓" in grid:
                break
            await pilot.press("n")
            await pilot.pause()
    assert "▓" in grid
    assert a.no_color
    chrome = {"#ff5f57", "#febc2e", "#28c840", "#c5c8c6"}     # the SVG's window buttons and title
    colours = {c for c in _fills(svg) if c not in chrome}
    assert colours and all(_grey(c) for c in colours), sorted(c for c in colours if not _grey(c))
    # the states still read: paused glyph, stage mark, kvm glyph, owners
    for glyph in ("‖ paused", "◀", "⌂ kvm", "● device", "▓", "just written"):
        assert glyph in svg.replace("&#160;", " ")


# -- the look: light theme, colour-blind palette, presenter ------------------------------------

def _ui_colours() -> set[str]:
    """Every colour literal the UI draws with."""
    found: set[str] = set()
    for f in (ROOT / "iovtui" / "ui").rglob("*.py"):
        if f.name == "palette.py":
            continue
        found |= set(re.findall(r"#[0-9a-fA-F]{6}\b", f.read_text()))
        found |= set(re.findall(r"\bgrey\d{2}\b", f.read_text()))
    return found


def _luminance(c: RichColor) -> float:
    t = c.get_truecolor()
    def ch(v):
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return 0.2126 * ch(t.red) + 0.7152 * ch(t.green) + 0.0722 * ch(t.blue)


def _contrast(a: RichColor, b: RichColor) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _restyled(look: Look, colour: str, ground: str) -> tuple[RichColor, RichColor]:
    seg = look.apply([Segment("x", Style(color=colour))], Color.parse(ground))[0]
    return seg.style.color, seg.style.bgcolor or RichColor.parse(ground)


def test_light_theme_keeps_every_ui_colour_readable():
    light = Look(theme="light")
    ground = "#e0e0e0"                               # a light pane background
    colours = _ui_colours()
    assert len(colours) > 10
    for c in colours:
        fg, bg = _restyled(light, c, ground)
        assert _contrast(fg, bg) >= 3.0, (c, fg)
    # a dark band the panes set (the active ring row) becomes light, its text dark
    seg = light.apply([Segment("x", Style(color="white", bgcolor="#3a3a3a"))], Color.parse(ground))[0]
    assert _luminance(seg.style.bgcolor) > 0.4 and _contrast(seg.style.color, seg.style.bgcolor) >= 4.5


def test_colourblind_palette_uses_okabe_ito_and_separates_ok_from_bad():
    cb = Look(palette="colorblind")
    okabe = {RichColor.parse(v).get_truecolor() for v in OKABE_ITO.values()}
    ok, _ = _restyled(cb, "#87d787", "#000000")        # kvm / running green
    bad, _ = _restyled(cb, "#ff875f", "#000000")       # drops / userspace red-orange
    assert ok.get_truecolor() in okabe and bad.get_truecolor() in okabe
    assert ok.get_truecolor() != bad.get_truecolor()
    grey, _ = _restyled(cb, "grey62", "#000000")
    assert grey == RichColor.parse("grey62")           # greys stay


def test_presenter_contrast_on_dark():
    pres = Look(contrast=True)
    for c in _ui_colours():
        seg = pres.apply([Segment("x", Style(color=c))], Color.parse("#1e1e1e"))[0]
        assert seg.style.bold
        assert _contrast(seg.style.color, RichColor.parse("#1e1e1e")) >= 4.5, c


async def test_presenter_mode_shows_one_pane_at_a_time_even_when_wide():
    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True, presenter=True)
    async with a.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        assert a.compact
        shown = [pid for pid, p in a.panes.items() if p.display and p.region.area]
        assert shown == ["ram"]
        await pilot.press("tab")
        await pilot.pause()
        assert [pid for pid, p in a.panes.items() if p.region.area] == ["ring"]
        a.set_presenter(False)
        await pilot.pause()
        assert not a.compact and all(p.region.area for p in a.panes.values())


async def test_t_switches_theme_and_the_look_follows():
    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        assert a.theme == "textual-dark" and a.look.theme == "dark"
        await pilot.press("t")
        await pilot.pause()
        assert a.theme == "textual-light" and a.look.theme == "light"
        svg = a.export_screenshot()
    # the panes' own (line-API) background is light too
    lum = [_luminance(RichColor.parse(c)) for c in _fills(svg)]
    assert sum(1 for x in lum if x > 0.5) > sum(1 for x in lum if x < 0.1)


def _text_on_ground(svg: str) -> list[tuple[str, str, str]]:
    """Each run of visible text in a Textual SVG screenshot with its colour and
    the colour of the cell behind it: (text, fg, bg)."""
    fill = dict(re.findall(r"\.(terminal-\d+-r\d+) \{ fill: (#[0-9a-f]{6})", svg))
    ground = {(x, round(float(y) + 18.5, 1)): c
              for c, x, y in re.findall(r'<rect fill="(#[0-9a-f]{6})" x="([0-9.]+)" y="([0-9.]+)"', svg)}
    out = []
    for cls, x, y, text in re.findall(r'<text class="(terminal-\d+-r\d+)" x="([0-9.]+)" y="([0-9.]+)"[^>]*>([^<]*)<',
                                      svg):
        text = text.replace("&#160;", " ").strip()
        if text and cls in fill and (x, round(float(y), 1)) in ground:
            out.append((text, fill[cls], ground[(x, round(float(y), 1))]))
    return out


@pytest.mark.parametrize("technique, look, least", [
    ("emulation", {"theme": "light"}, 3.0), ("virtio", {"theme": "light"}, 3.0), ("sriov", {"theme": "light"}, 3.0),
    ("sriov", {"palette": "colorblind"}, 3.0), ("virtio", {"theme": "light", "palette": "colorblind"}, 3.0),
    ("sriov", {"presenter": True}, 4.5), ("emulation", {"presenter": True, "theme": "light"}, 4.5)])
async def test_every_word_on_screen_is_readable(technique, look, least):
    """Not just the colour literals: everything drawn, including text the
    panes leave unstyled (an exit's wrapped cause), stands out from the cell
    behind it — light theme and colour-blind palette ≥ 3:1, presenter ≥ 4.5:1."""
    a = create_app(load_preset("steady-stream"), technique, start_paused=True, **look)
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(60):
            await pilot.press("n")
        await pilot.pause()
        runs = _text_on_ground(a.export_screenshot())
    assert len(runs) > 100
    bad = [(t, fg, bg) for t, fg, bg in runs if _contrast(RichColor.parse(fg), RichColor.parse(bg)) < least]
    assert not bad, bad[:5]


def test_bad_look_options_are_one_line_and_exit_2():
    r = subprocess.run([sys.executable, "-m", "iovtui", "--theme", "blue"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "dark" in r.stderr and "light" in r.stderr


# -- tiny terminals and resize storms ------------------------------------------------------------

def test_launch_in_a_tiny_terminal_is_one_line_and_exit_2():
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 12, 40, 0, 0))
    env = {k: v for k, v in ENV.items() if k != "TEXTUAL_DRIVER"}
    p = subprocess.Popen([sys.executable, "-m", "iovtui"], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                         env=env, text=True)
    try:
        _out, err = p.communicate(timeout=30)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "40×12" in lines[0] and "60×16" in lines[0] and "iovtui run" in lines[0]


async def test_shrinking_below_the_minimum_says_so_and_growing_brings_the_panes_back():
    a = create_app(load_preset("steady-stream"), "sriov")
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        await pilot.resize_terminal(40, 12)
        await pilot.pause(0.1)
        msg = a.w_too_small
        assert msg.display and msg.region.area
        text = str(msg.render())
        assert "40×12" in text and "60×16" in text
        assert not any(p.region.area for p in a.panes.values()) and not a.w_header.region.area
        before = a.driver.sim.engine.events_run
        await pilot.pause(0.3)
        assert a.driver.sim.engine.events_run > before          # the run goes on meanwhile
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.1)
        assert not msg.region.area and a.w_header.region.area
        assert [pid for pid, p in a.panes.items() if p.region.area] == ["ram"]


@pytest.mark.parametrize("kind", ["help", "compare"])
async def test_shrinking_with_a_screen_open_says_so_over_it_and_growing_returns_to_it(kind):
    from iovtui.ui.screens import TooSmallScreen
    keys, screen_type = _opener(kind)
    a = create_app(load_preset("steady-stream"), "sriov", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        for k in keys:
            await pilot.press(k)
        await pilot.pause(0.05)
        await pilot.resize_terminal(50, 14)
        await pilot.pause(0.1)
        assert isinstance(a.screen, TooSmallScreen)
        text = str(a.screen.query_one("#too-small-msg").render())
        assert "50×14" in text and "60×16" in text
        await pilot.press("c")                   # keys behind it do nothing
        await pilot.pause(0.05)
        assert isinstance(a.screen, TooSmallScreen)
        await pilot.resize_terminal(100, 30)
        await pilot.pause(0.1)
        assert isinstance(a.screen, screen_type)


def _storm_sizes(n: int = 24) -> list[tuple[int, int]]:
    import random
    rng = random.Random(8)
    sizes = [(rng.randint(40, 220), rng.randint(12, 60)) for _ in range(n - 4)]
    return sizes + [(40, 12), (80, 24), (41, 13), (120, 40)]


def _opener(kind: str):
    """Keys (or a call) that open one modal or full screen."""
    from iovtui.ui.screens import CompareScreen, HelpScreen, HexScreen, PresetScreen, QuestionScreen
    return {"help": (["question_mark"], HelpScreen), "hex": (["enter"], HexScreen),
            "presets": (["p"], PresetScreen), "compare": (["c"], CompareScreen),
            "question": (["g"] + ["n"] * 12, QuestionScreen)}[kind]


@pytest.mark.parametrize("kind", ["help", "hex", "presets", "compare", "question"])
async def test_resize_storm_down_to_40x12_with_each_screen_open(kind):
    keys, screen_type = _opener(kind)
    # running under help and compare (frames arrive mid-storm); paused under the others
    a = create_app(load_preset("steady-stream"), "sriov", start_paused=kind not in ("help", "compare"))
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.05)
        for k in keys:
            await pilot.press(k)
            if isinstance(a.screen, screen_type):
                break
        await pilot.pause(0.05)
        assert isinstance(a.screen, screen_type)
        for w, h in _storm_sizes():
            await pilot.resize_terminal(w, h)
            await pilot.pause(0.01)
        await pilot.pause(0.1)
        assert isinstance(a.screen, screen_type)          # still open, still drawn
        assert a.screen.region.size == (120, 40)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(a.screen, screen_type)
        applied = a.frames_applied
        await pilot.press("n")
        await pilot.pause(0.1)
        assert a.frames_applied > applied and all(p.region.area for p in a.panes.values())
        assert a.w_header.region.area and not a.w_too_small.region.area


# -- crashes found by random keys and resizes ----------------------------------------------------

async def test_ctrl_p_again_under_the_too_small_cover_keeps_the_one_palette():
    from textual.command import CommandPalette

    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.resize_terminal(50, 12)           # the "too small" cover comes over the palette
        await pilot.pause(0.3)
        assert "iovtui needs at least" in str(a.screen.query_one("#too-small-msg").render())
        await pilot.press("ctrl+p")                   # (was DuplicateIds: '--command-palette')
        await pilot.pause()
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.3)
        assert isinstance(a.screen, CommandPalette)   # the palette the user opened, back as it was
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert sum(isinstance(s, CommandPalette) for s in a.screen_stack) == 1
        await pilot.press("escape")
        await pilot.pause()
        assert a.screen is a.screen_stack[0]


async def test_page_down_typed_straight_after_ctrl_p_is_harmless():
    import asyncio

    from textual import events
    from textual.command import CommandList

    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        # a paste: ctrl+p and page-downs queued at once, while the palette fills (was KeyError: 0)
        a.post_message(events.Key("ctrl+p", None))
        for _ in range(20):
            await asyncio.sleep(0)
            a.post_message(events.Key("pagedown", None))
            a.post_message(events.Key("pageup", None))
        await pilot.pause(0.2)
        commands = a.screen.query_one(CommandList)
        assert commands.option_count > 10
        before = commands.highlighted
        await pilot.press("pagedown")                 # once the list is on screen the key works
        await pilot.pause()
        assert commands.highlighted is not None and commands.highlighted > (before or 0)


@pytest.mark.parametrize("keys", [["enter", "enter"], ["enter", "escape"], ["down", "enter", "p"]])
async def test_a_preset_choice_arriving_after_the_picker_closed_is_ignored(keys):
    from textual import events

    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("p")
        await pilot.pause()
        for k in keys:                                # queued at once: the selection arrives last
            a.post_message(events.Key(k, None))
        await pilot.pause(0.3)                        # (was ScreenStackError: Can't pop screen)
        assert a.screen is a.screen_stack[0]
        await pilot.press("n")                        # the main view still answers
        await pilot.pause()


async def test_one_toast_at_a_time():
    from textual.widgets._toast import Toast

    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("c")
        await pilot.pause(0.3)
        await pilot.press(*"1pe2vm3kf")               # main-view keys in the compare view: a notice each
        await pilot.pause(0.3)
        toasts = list(a.screen.query(Toast))
        assert len(toasts) == 1, [str(t.render()) for t in toasts]
        assert "acts on the main view" in str(toasts[0].render())


@pytest.mark.parametrize("keys", [["ctrl+p", "t", "escape"], ["ctrl+p", "down", "enter", "enter"],
                                  ["ctrl+p", "enter", "escape"], ["ctrl+p", "s", "enter", "escape"]])
async def test_keys_queued_in_the_palette_as_it_closes_are_harmless(keys):
    # (found by the fuzz test: the palette's search went on after it closed, NoMatches
    # "CommandList"; a selection arriving once it had gone popped the main view, ScreenStackError)
    import asyncio

    from textual import events

    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        for _ in range(5):
            for k in keys:
                a.post_message(events.Key(k, k if len(k) == 1 else None))
                await asyncio.sleep(0)
            await pilot.pause(0.4)
            while a.screen is not a.screen_stack[0]:
                await pilot.press("escape")
        assert a.is_running


async def test_the_too_small_cover_takes_a_new_size_before_it_is_drawn():
    """A resize storm can ask the cover for a new message before Textual has
    composed it (it raised NoMatches: '#too-small-msg'); the message it shows
    is the newest one."""
    from iovtui.ui.screens.toosmall import TooSmallScreen

    a = create_app(load_preset("steady-stream"), "sriov", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        cover = TooSmallScreen("iovtui needs at least 60×16 (this is 50×12)")
        a.push_screen(cover)
        cover.update("iovtui needs at least 60×16 (this is 40×12)")     # not composed yet
        await pilot.pause(0.1)
        assert "40×12" in str(cover.query_one("#too-small-msg").render())
