"""Seeded fuzz: thousands of random keys (the app's bindings, its help list,
the palette's and the modals' keys), random resizes between 40×12 and
200×50, modals opened and closed; the app must stay alive and quit on q
with status 0.  A failing seed replays exactly: the same keys in the same
order (the run itself is deterministic from its seed)."""

from __future__ import annotations

import asyncio
import random

import pytest
from textual.events import Key, Resize
from textual.geometry import Size

from iovtui.sim.preset import load_preset
from iovtui.ui.app import IovApp, create_app
from iovtui.ui.screens import CompareScreen, HelpScreen, HexScreen, PresetScreen, TooSmallScreen

#: keys that end the app: pressed only at the end
QUIT = {"q", "ctrl+c"}
#: a chunk of keys is pressed at once (as a paste would), then the app is let settle
CHUNK = 16
#: no chunk may take this long: the app is hung (a layout loop, say), not slow
HANG_S = 30.0


def _keys() -> list[str]:
    keys: set[str] = set()
    for screen in (IovApp, CompareScreen, HelpScreen, HexScreen, PresetScreen, TooSmallScreen):
        for b in screen.BINDINGS:
            keys.update(k.strip() for k in b.key.split(","))
    for label, _what in IovApp.KEY_HELP:           # the help list names keys too ("1 / 2 / 3", "arrows")
        for k in label.replace("/", " ").split():
            if k == "arrows":
                keys.update(("left", "right", "up", "down"))
            elif k in ("+", "-", "?"):
                keys.add({"+": "plus", "-": "minus", "?": "question_mark"}[k])
            else:
                keys.add(k)
    keys.update(("ctrl+p", "escape", "escape", "pagedown", "pageup", "home", "end", "enter", "x", "z"))
    return sorted(keys - QUIT)


KEYS = _keys()
#: the keys that open a modal or a screen, and the one that closes it, are weighted up
OPENERS = ["p", "question_mark", "c", "enter", "ctrl+p", "g"]


def _events(seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    out: list[tuple] = []
    while len(out) < n:
        r = rng.random()
        if r < 0.06:
            out.append(("resize", rng.randint(40, 200), rng.randint(12, 50)))
        elif r < 0.16:
            out.append(("key", rng.choice(OPENERS)))
        elif r < 0.26:
            out.append(("key", "escape"))
        else:
            out.append(("key", rng.choice(KEYS)))
    return out


async def _fuzz(seed: int, n: int, technique: str) -> None:
    a = create_app(load_preset("steady-stream"), technique, seed=seed, start_paused=seed % 2 == 0)
    events = _events(seed, n)
    async with a.run_test(size=(120, 40), notifications=True) as pilot:
        driver = a._driver

        async def settle() -> None:
            # every screen has handled what it was sent (a hung app, a layout loop say, fails here)
            await asyncio.wait_for(pilot.pause(0.002), HANG_S)

        i = 0
        while i < len(events):
            ev = events[i]
            if ev[0] == "resize":
                size = Size(ev[1], ev[2])
                a.post_message(Resize(size, size))        # as the terminal reports a new size
                i += 1
            else:
                for _ in range(CHUNK):                    # a few keys at once, as typed fast or pasted
                    if i >= len(events) or events[i][0] != "key":
                        break
                    key = events[i][1]
                    driver.send_message(Key(key, key if len(key) == 1 else None))
                    i += 1
            await settle()
            assert a.is_running, f"seed {seed}: the app ended at event {i} of {n} ({ev})"
        await asyncio.wait_for(pilot.pause(0.2), HANG_S)
        assert a.is_running, f"seed {seed}: the app ended after the last event"
        # q quits from every screen except a modal that takes it (help, hex view) or the
        # palette's input: escape out of those first, as a user would
        await asyncio.wait_for(pilot.resize_terminal(120, 40), HANG_S)
        for _ in range(8):
            if a.screen is a.screen_stack[0] or not a.is_running:
                break
            await asyncio.wait_for(pilot.press("escape"), HANG_S)
            await pilot.pause(0.05)
        await asyncio.wait_for(pilot.press("q"), HANG_S)
        await pilot.pause(0.1)
    assert not a.is_running
    assert a.return_code in (0, None), a.return_code


@pytest.mark.parametrize("seed,technique", [(1, "virtio"), (2, "emulation"), (3, "sriov")])
async def test_random_keys_and_resizes_leave_the_app_alive_and_q_quits(seed, technique, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                # (w saves captures into the current directory)
    await _fuzz(seed, 700, technique)          # 2,100 events in all, about a minute on 2 cores
