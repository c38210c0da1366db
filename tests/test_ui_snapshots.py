"""Snapshots (pytest-textual-snapshot) of each technique, paused after a few steps."""
import pytest

from iovtui.sim.paths import available
from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@pytest.mark.parametrize("tech", available())
def test_snapshot(snap_compare, tech, size):
    async def steps(pilot):
        for _ in range(40):
            await pilot.press("n")
        await pilot.pause(0.1)

    app = create_app(load_preset("steady-stream"), tech, seed=1, start_paused=True)
    assert snap_compare(app, terminal_size=size, run_before=steps)
