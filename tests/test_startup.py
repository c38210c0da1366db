"""Start-up (issue 15 point 5): what the first screen update a terminal gets
already shows.  (How long it takes is `iovtui bench`'s first-frame case.)"""
import pytest

from iovtui.bench import _FULL, _Screen
from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app


async def _first_updates(app, size, n=1):
    """The text on a terminal of ``size`` after each of the first ``n``
    screen updates Textual sends it."""
    screen = _Screen(*size)
    shots: list[str] = []
    display = app._display

    def shown(scr, update):
        display(scr, update)
        if update is not None and hasattr(update, "render_segments") and len(shots) < n:
            screen.apply(update)
            shots.append("\n".join("".join(r) for r in screen.rows))

    app._display = shown
    async with app.run_test(size=size) as pilot:
        for _ in range(100):
            if len(shots) >= n:
                break
            await pilot.pause(0.02)
    return shots


@pytest.mark.parametrize("size", [(120, 40), (200, 50)])
async def test_the_first_update_a_terminal_gets_is_the_full_frame(size):
    """Every pane's title, the stats line with the run's figures and the
    footer's keys are on the very first update: nothing is drawn half and
    completed a refresh later (a bare Textual Footer shows its keys only then)."""
    app = create_app(load_preset("steady-stream"), "virtio")
    (first,) = await _first_updates(app, size)
    for word in _FULL["iovtui"]:
        assert word in first, (word, first)
    assert "vm0 · 16 MiB" in first               # the Guest RAM pane shows the run's VM
    assert "▶ running" in first and "paused" not in first     # the state it is in from then on
    assert "pkts " in first and "exits/pkt" in first


async def test_the_first_update_at_80x24_is_the_tabbed_layout_with_every_key():
    app = create_app(load_preset("steady-stream"), "virtio")
    (first,) = await _first_updates(app, (80, 24))
    assert "tab: next pane" in first and "╭─ Guest RAM" in first
    for key in ("1–3 technique", "space pause", "n step", "p presets", "c compare", "? help", "q quit"):
        assert key in first, (key, first)
