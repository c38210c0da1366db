"""The panes.  Each one only lays out what a Frame (or the model's views)
already holds; none of them computes anything about the model."""

from .common import OWNER_STYLE, ROLE_STYLE, STAGE_MARKS, TitledPane
from .descriptor_ring import RingPane
from .exit_log import ExitLogPane
from .guest_ram import GuestRamPane
from .iommu_table import IommuPane, TablePane, row_vm
from .nic_vfs import NicPane
from .stats import FollowBar, HeaderBar, Narration, PathStrip, StatsBar, header_text

__all__ = ["GuestRamPane", "RingPane", "ExitLogPane", "TablePane", "IommuPane", "NicPane", "HeaderBar",
           "PathStrip", "StatsBar", "FollowBar", "Narration", "header_text", "ROLE_STYLE", "STAGE_MARKS", "OWNER_STYLE",
           "TitledPane", "row_vm"]
