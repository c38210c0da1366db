"""The NIC pane: PF and VFs (RID, MAC, VLAN, spoof check, trust, link, VM, counters)."""

from __future__ import annotations

from .iommu_table import TablePane

__all__ = ["NicPane"]


class NicPane(TablePane):
    def __init__(self, **kw) -> None:
        super().__init__("nic", **kw)
