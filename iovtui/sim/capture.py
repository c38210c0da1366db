"""What the model hands a packet capture (``iovtui run --pcap``, the app's
"Save capture"): the small sink interface it calls, and the interfaces a
capture has.  Nothing here writes a file or imports a capture library; the
pcapng writer (``iovtui.capture``) implements :class:`CaptureSink`.

A run's capture has one interface for the wire (the physical port: the PF
under SR-IOV, the host's NIC otherwise) and one per VM (the guest's eth0);
with ``nic.ports = 2`` the second port's wire comes after the VMs'.
The model calls the sink, when ``Simulation.capture`` is not None, at these
points, always at the current virtual time (so timestamps never go back):

* a frame arrives from the wire (``Simulation.offer``): wire, inbound, the
  frame's bytes as they came (VLAN tag included);
* the guest stack reads a received frame (``Simulation.guest_reads``): the
  VM's interface, inbound, the bytes read out of guest RAM at that GPA (after
  the virtio-net header; a port VLAN's tag already stripped by the switch);
* the guest's driver puts a frame on its TX ring (``Simulation.guest_queued``,
  called by each technique where the frame is written into guest RAM): the
  VM's interface, outbound, the bytes read out of guest RAM;
* a frame's last bit leaves on the wire (``Simulation._left_wire``): wire,
  outbound (a VF's port VLAN tag inserted);
* a frame is dropped (``Simulation.dropped``): on the interface it came in by
  (wire for a received frame, the VM's for a sent one), with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["CaptureSink", "CaptureError", "CaptureInterface", "interfaces", "WIRE", "INBOUND", "OUTBOUND", "GUEST_NETDEV"]

#: the wire's interface number; VM i is interface i + 1
WIRE = 0
#: the direction bits of pcapng's epb_flags
INBOUND = 1
OUTBOUND = 2
#: the guest's name for its network interface
GUEST_NETDEV = "eth0"


class CaptureError(Exception):
    """A capture could not be written (the message is the OS's reason)."""


class CaptureSink(Protocol):
    def frame(self, t: int, iface: int, direction: int, data: bytes, pkt_id: int,
              drop: str | None = None) -> None:
        """One frame at virtual time ``t`` (ns) on interface ``iface``;
        ``drop`` is the reason when the model dropped it there."""


@dataclass(frozen=True)
class CaptureInterface:
    name: str          # what Wireshark lists: "wire (enp2s0f0)", "vm0 (eth0)"
    description: str
    mac: str
    speed_bps: int


def interfaces(sim) -> list[CaptureInterface]:
    """The wire, then one interface per VM, in ``sim.vms`` order."""
    from .iommu import parse_rid, rid_str

    nic_cfg = sim.preset.nic
    pf = parse_rid(nic_cfg["pf_rid"])
    speed = int(sim.line_bps)
    tech = sim.technique
    wires = []
    for port in range(nic_cfg["ports"]):          # PF n is function n of pf_rid
        bdf = rid_str(pf + port)
        bus, rest = bdf.split(":")
        dev, fn = rest.split(".")
        netdev = f"enp{int(bus, 16)}s{int(dev, 16)}f{int(fn)}"     # systemd's name for PCI bus:dev.fn
        if tech.name == "sriov":
            wire = f"the physical port: PF {bdf} and its embedded switch (frames from and to the outside host)"
            mac = tech.nic.pfs[port].mac
        else:
            wire = f"the host's NIC {bdf} (frames from and to the outside host)"
            mac = f"02:00:00:00:02:{port:02x}"
        wires.append(CaptureInterface(f"wire ({netdev})", wire, mac, speed))
    out = wires[:1]
    for vm in sim.vms:
        out.append(CaptureInterface(
            f"{vm.name} ({GUEST_NETDEV})",
            f"{vm.name}'s {GUEST_NETDEV} under {tech.label()}: frames as the guest reads them from its RAM "
            f"and as its driver queues them", vm.mac, speed))
    return out + wires[1:]          # a second port's wire after the VMs (Simulation.wire_iface)
