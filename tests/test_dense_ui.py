"""A dense host on screen (issue 15 point 3): 63 VMs on one SR-IOV port.

The NIC and IOMMU panes show every function a user can reach: the selected
VM's rows are brought into view, a line says how many rows are above and
below, the focused pane scrolls; `m` and the palette's "Jump to VM…" select
any VM, and Guest RAM and the descriptor ring follow it.  Everything here is
read from the screen (the panes' lines), as a user reads it."""
import json
import re

import pytest

from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app

from conftest import ROOT, run_cli

MANY = ROOT / "tests" / "data" / "many-vms.toml"
STATUS = re.compile(r"rows ([\d,]+)–([\d,]+) of ([\d,]+) · ↑ ([\d,]+) more · ↓ ([\d,]+) more")


def num(s: str) -> int:
    return int(s.replace(",", ""))


def app(preset=MANY, tech="sriov", packets=None):
    return create_app(load_preset(str(preset)), tech, seed=1, start_paused=True, packets=packets)


def lines(pane) -> list[str]:
    return [pane.render_line(y).text for y in range(pane.size.height)]


def window(pane) -> tuple[list[str], tuple[int, int, int, int, int]]:
    """The table rows on screen (their first cell) and the status line's numbers."""
    ls = lines(pane)
    status = next((STATUS.search(x) for x in ls if STATUS.search(x)), None)
    assert status is not None, ls
    a, b, n, up, down = (num(g) for g in status.groups())
    head = next(i for i, x in enumerate(ls) if x.split()[:2] in (["fn", "RID"], ["RID", "device"]))
    shown = [x[1:].split()[0] for x in ls[head + 1:head + 1 + b - a + 1]]
    return shown, (a, b, n, up, down)


def selected_rows(pane) -> list[str]:
    """The rows marked as the selected VM's (▸ in the first column)."""
    return [x for x in lines(pane) if x.startswith("▸")]


async def press_m(pilot, times: int) -> None:
    for _ in range(times):
        await pilot.press("m")
    await pilot.pause(0.1)


def check_window(pane, first_cells: list[str]) -> tuple[int, int, int, int, int]:
    """The status line's counts agree with the rows shown: a–b of n, a−1 above, n−b below,
    and the rows shown are rows a..b of the model's table, in order."""
    shown, (a, b, n, up, down) = window(pane)
    assert n == len(first_cells)
    assert up == a - 1 and down == n - b
    assert shown == first_cells[a - 1:b]
    return a, b, n, up, down


@pytest.mark.parametrize("size", [(160, 45), (80, 24)])
async def test_m_brings_vm60s_rows_into_view(size):
    a = app()
    async with a.run_test(size=size) as pilot:
        await pilot.pause(0.1)
        await press_m(pilot, 60)
        for pane_id in ("iommu", "nic"):
            pane = a.panes[pane_id]
            if a.compact:                # tabs: bring that pane up (tab) to see it
                while a.active_pane != pane_id:
                    await pilot.press("tab")
                await pilot.pause(0.1)
            tv = a._applied.iommu if pane_id == "iommu" else a._applied.nic
            a_, b, n, up, down = check_window(pane, [r[0] for r in tv.rows])
            # 63 VFs behind one PF: the IOMMU has a context per VF, the NIC a row per function
            assert n == (63 if pane_id == "iommu" else 64)
            assert up > 40 and a_ <= b
            sel = selected_rows(pane)
            assert sel and all("vm60" in x for x in sel)
            assert ("02:1f.0" in sel[0])       # VF60's RID: PF 02:00.0 + 128 + 60 × 2 = 02:1f.0
        # Guest RAM and the ring follow the selection (title and first line)
        assert "vm60" in a.w_ram.border_title and "61 of 63" in a.w_ram.border_title
        assert "vm60" in a.w_ring.border_title


async def test_jump_to_vm_in_the_palette_selects_by_name():
    a = app()
    async with a.run_test(size=(160, 45)) as pilot:
        await pilot.pause(0.1)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"jump to vm")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.5)
        await pilot.press(*"vm60")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert a.screen is a.screen_stack[0]
        ram = lines(a.w_ram)
        assert ram[0].split()[0] == "vm60" and "vm60" in a.w_ram.border_title
        assert lines(a.w_ring)[0].startswith(" vm60 ")
        for pane in (a.w_iommu, a.w_nic):
            sel = selected_rows(pane)
            assert sel and all("vm60" in x for x in sel), lines(pane)
        # m goes on from there
        await press_m(pilot, 1)
        assert lines(a.w_ram)[0].split()[0] == "vm61"
        assert all("vm61" in x for x in selected_rows(a.w_nic))


async def test_the_focused_pane_scrolls_with_the_keys():
    a = app()
    async with a.run_test(size=(160, 45)) as pilot:
        await pilot.pause(0.1)
        tv = a._applied.nic
        cells = [r[0] for r in tv.rows]
        cursor = a.w_ram.cursor
        # not focused: the arrows are the RAM pane's, the table stays
        before = window(a.w_nic)
        await pilot.press("down", "down")
        await pilot.pause(0.1)
        assert window(a.w_nic) == before and a.w_ram.cursor != cursor
        while a.active_pane != "nic":
            await pilot.press("tab")
        await pilot.pause(0.1)
        cursor = a.w_ram.cursor
        await pilot.press("home")
        await pilot.pause(0.1)
        first, (_a, b, n, up, down) = window(a.w_nic)
        assert first[0] == "PF" and up == 0 and down == n - b
        vis = b
        await pilot.press("down")
        await pilot.pause(0.1)
        shown, nums = window(a.w_nic)
        assert shown[0] == "VF0" and nums[3] == 1
        await pilot.press("pagedown")
        await pilot.pause(0.1)
        _a2, *_ = check_window(a.w_nic, cells)
        assert _a2 == 2 + vis - 1
        await pilot.press("end")
        await pilot.pause(0.1)
        shown, nums = window(a.w_nic)
        assert shown[-1] == "VF62" and nums[4] == 0
        check_window(a.w_nic, cells)
        await pilot.press("pageup")
        await pilot.pause(0.1)
        check_window(a.w_nic, cells)
        await pilot.press("up")
        await pilot.pause(0.1)
        check_window(a.w_nic, cells)
        assert a.w_ram.cursor == cursor          # the arrows were the NIC pane's
        # the IOMMU pane too (shift+tab: the previous pane)
        await pilot.press("shift+tab")
        await pilot.pause(0.1)
        assert a.active_pane == "iommu"
        await pilot.press("end")
        await pilot.pause(0.1)
        shown, nums = window(a.w_iommu)
        assert shown[-1] == "02:1f.4" and nums[4] == 0
        # a new selection brings its rows back into view
        await press_m(pilot, 1)
        assert all("vm1" in x for x in selected_rows(a.w_iommu)) and selected_rows(a.w_iommu)


@pytest.mark.parametrize("preset, key", [(MANY, "rx"), (ROOT / "presets" / "mac-spoofing.toml", "tx")])
async def test_the_summary_row_totals_are_the_runs(preset, key):
    """The NIC pane's summary after N packets equals `iovtui run --json` for the same N."""
    packets = 1500
    p = run_cli("run", "--preset", str(preset), "--technique", "sriov", "--packets", str(packets), "--json",
                check_rc=0)
    js = json.loads(p.stdout)
    a = app(preset, packets=packets)
    async with a.run_test(size=(160, 45)) as pilot:
        a.driver.sim.run()
        a.driver.publish()
        await pilot.pause(0.2)
        head = lines(a.w_nic)[0]
        m = re.search(r"Σ ([\d,]+)/([\d,]+) VFs in use · rx ([\d,]+) · tx ([\d,]+) · dropped ([\d,]+)", head)
        assert m, head
        used, vfs, rx, tx, dropped = (num(g) for g in m.groups())
        assert used == len(a.driver.sim.vms) and vfs == js["options"]["vfs"]
        assert js["in_flight"] == 0 and js["packets"]["offered"] == packets
        assert (rx if key == "rx" else tx) == js["packets"]["delivered"]
        assert (tx if key == "rx" else rx) == 0
        assert dropped == js["packets"]["dropped"] > 0


@pytest.mark.parametrize("size", [(60, 24), (80, 24), (200, 50)])
async def test_no_row_is_cut_mid_value(size):
    """At every size a table row shows whole cells of the model's row (columns
    that do not fit are left out, and the status line names them)."""
    a = app()
    async with a.run_test(size=size) as pilot:
        a.driver.sim.engine.run(max_events=20_000)
        a.driver.publish()
        await pilot.pause(0.1)
        await press_m(pilot, 40)
        for pane_id in ("iommu", "nic"):
            while a.compact and a.active_pane != pane_id:
                await pilot.press("tab")
            await pilot.pause(0.1)
            pane = a.panes[pane_id]
            tv = a._applied.iommu if pane_id == "iommu" else a._applied.nic
            ls = lines(pane)
            assert all(len(x) <= pane.size.width for x in ls)
            head = next(i for i, x in enumerate(ls) if x.split()[:2] in (["fn", "RID"], ["RID", "device"]))
            cols = ls[head].split()
            if pane_id == "iommu":            # "IOVA (GPA)" is one column
                cols = [c for c in re.split(r" {1,}(?=\S)", ls[head].strip()) if c]
                cols = [c for c in cols if c != "(GPA)"]
                cols = ["IOVA (GPA)" if c == "IOVA" else c for c in cols]
            idx = [tv.columns.index(c) for c in cols]
            by_first = {r[0]: r for r in tv.rows}
            shown = 0
            for x in ls[head + 1:]:
                first = x[1:].split(" ", 1)[0]
                if first not in by_first:
                    break
                row = by_first[first]
                want = [row[k] for k in idx]
                got = re.split(r"\s+", x[1:].strip())
                assert " ".join(got) == " ".join(want), (size, x, want)
                shown += 1
            assert shown >= 3
            hidden = [c for c in tv.columns if c not in cols]
            if hidden:
                assert any(f"hidden: {', '.join(hidden)}" in x for x in ls), ls
            sel = selected_rows(pane)
            assert sel and all("vm40" in x for x in sel)


@pytest.mark.parametrize("tech", ["emulation", "virtio"])
async def test_guest_ram_and_the_ring_follow_the_selected_vm(tech):
    """Without SR-IOV the tables are idle; `m` still turns Guest RAM and the
    descriptor ring to VM 60 (their titles and first lines say so)."""
    a = app(tech=tech)
    async with a.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.1)
        await press_m(pilot, 60)
        assert lines(a.w_ram)[0].split()[0] == "vm60" and "vm60 (61 of 63 VMs" in a.w_ram.border_title
        assert lines(a.w_ring)[0].startswith(" vm60 ") and "vm60" in a.w_ring.border_title
        assert "No " in lines(a.w_nic)[0] and "No " in lines(a.w_iommu)[0]


async def test_a_click_on_a_row_selects_its_vm():
    a = app()
    async with a.run_test(size=(160, 45)) as pilot:
        await pilot.pause(0.1)
        ls = lines(a.w_nic)
        y = next(i for i, x in enumerate(ls) if x[1:].startswith("VF1 "))
        await pilot.click(a.w_nic, offset=(5, y))
        await pilot.pause(0.2)
        assert lines(a.w_ram)[0].split()[0] == "vm1"
        assert all("vm1" in x for x in selected_rows(a.w_nic)) and selected_rows(a.w_iommu)
        assert a.active_pane == "nic"          # the click focused it: the arrows scroll it now
