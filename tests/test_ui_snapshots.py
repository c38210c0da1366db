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


def test_snapshot_dense_host_scrolled_to_vm60(snap_compare):
    """63 VMs on one port, VM 60 selected (m): the NIC and IOMMU panes show its
    rows, how many are above and below, and the NIC summary row."""
    from pathlib import Path

    async def steps(pilot):
        for _ in range(30):
            await pilot.press("n")
        for _ in range(60):
            await pilot.press("m")
        await pilot.pause(0.1)

    many = Path(__file__).resolve().parent / "data" / "many-vms.toml"
    app = create_app(load_preset(str(many)), "sriov", seed=1, start_paused=True)
    assert snap_compare(app, terminal_size=(160, 45), run_before=steps)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_snapshot_full_host_scrolled_to_vm100(snap_compare, size):
    """126 VMs on two ports, VM 100 selected (m, a hundred times): the NIC and
    IOMMU panes keep its rows in view and say how many are above and below
    (at 80×24 the NIC pane is its tab)."""
    from pathlib import Path

    async def steps(pilot):
        for _ in range(20):
            await pilot.press("n")
        for _ in range(100):
            await pilot.press("m")
        if size[0] < 100:
            for _ in range(4):             # tabs: Guest RAM → Ring → Exits → IOMMU → NIC VFs
                await pilot.press("tab")
        await pilot.pause(0.1)

    full = Path(__file__).resolve().parent / "data" / "full-host.toml"
    app = create_app(load_preset(str(full)), "sriov", seed=1, start_paused=True)
    assert snap_compare(app, terminal_size=size, run_before=steps)
