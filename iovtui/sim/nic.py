"""An SR-IOV NIC: one physical function (the host's), N virtual functions,
and the embedded switch (VEB) between them and the wire.

Requester IDs follow the SR-IOV capability: VF n's routing ID is the PF's
plus First VF Offset plus n × VF Stride (Intel 82599: 128 and 2, so PF
02:00.0 has VFs 02:10.0, 02:10.2, …).  Per-VF settings are the ones
``ip link show`` prints: MAC, VLAN, spoof checking, link-state, trust.

The PF's pool is the default pool: a unicast frame from the wire that no
VF's MAC filter claims goes to the PF, i.e. the host's own network stack.
Spoofed frames are counted PF-wide in SSVPC, a read-to-clear register the PF
driver reads from its service timer (``ixgbe_spoof_check``), which logs
``ixgbe 0000:02:00.0 enp2s0f0: N Spoofed packets detected``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .iommu import parse_rid, rid_str
from .packet import BROADCAST
from .views import TableView

__all__ = ["Nic", "Function", "is_group"]


def is_group(mac: str) -> bool:
    """Broadcast or multicast: the I/G bit (bit 0 of the first octet) is set."""
    return mac == BROADCAST or bool(int(mac[:2], 16) & 1)


@dataclass
class Function:
    name: str                  # "PF" / "VF0"
    rid: int
    mac: str
    vlan: int = 0
    spoof_check: bool = True
    trust: bool = False
    link_state: str = "auto"   # auto | enable | disable
    vm: int | None = None      # index of the VM it is assigned to
    vm_name: str = ""
    rx: int = 0
    tx: int = 0
    dropped: int = 0
    spoofed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def bdf(self) -> str:
        return rid_str(self.rid)

    @property
    def link_up(self) -> bool:
        return self.link_state != "disable"


class Nic:
    def __init__(self, nic_cfg: dict, vms) -> None:
        pf_rid = parse_rid(nic_cfg["pf_rid"])
        self.pf = Function("PF", pf_rid, "02:00:00:00:02:00", vm=None, vm_name="host")
        self.first_vf_offset = nic_cfg["first_vf_offset"]
        self.vf_stride = nic_cfg["vf_stride"]
        self.vfs: list[Function] = []
        for n in range(nic_cfg["vfs"]):
            rid = (pf_rid + self.first_vf_offset + n * self.vf_stride) & 0xFFFF
            f = Function(f"VF{n}", rid, f"00:00:00:00:00:00", spoof_check=nic_cfg["spoof_check"],
                         trust=nic_cfg["trust"], link_state=nic_cfg["link_state"])
            self.vfs.append(f)
        for vm, f in zip(vms, self.vfs):
            cfg = vm.extra["cfg"]
            f.mac, f.vlan, f.vm, f.vm_name = vm.mac, vm.vlan, vm.index, vm.name
            f.spoof_check, f.trust, f.link_state = cfg.spoof_check, cfg.trust, cfg.link_state
        self.by_mac = {f.mac: f for f in self.vfs if f.vm is not None}
        self._decisions: deque[tuple[str, int]] = deque(maxlen=6)    # (decision, times in a row)
        self.spoofed_total = 0
        #: SSVPC: spoofed packets since the PF driver last read it (read-to-clear)
        self.ssvpc = 0
        #: the PF's kernel log (dmesg lines), newest last
        self.pf_log: deque[str] = deque(maxlen=4)
        bus, rest = self.pf.bdf.split(":")
        dev, fn = rest.split(".")
        #: how the PF shows in the host's log: PCI address and its netdev (systemd's enp<bus>s<slot>f<fn>)
        self.pf_pci = f"0000:{self.pf.bdf}"
        self.pf_netdev = f"enp{int(bus, 16)}s{int(dev, 16)}f{int(fn)}"

    # -- the embedded switch ---------------------------------------------------------
    def from_wire(self, dst: str, vlan: int) -> tuple[list[Function], str]:
        """Which functions a frame from the wire goes to.  Returns the
        functions and, when none, the reason it is dropped."""
        if is_group(dst):
            outs = [f for f in self.vfs if f.vm is not None and f.vlan == vlan and f.link_up]
            self._log(f"wire → {dst} {f'vlan {vlan}' if vlan else 'untagged'}: broadcast/multicast, replicated to "
                      f"{', '.join(f.name for f in outs) or 'nobody'}")
            return outs, "" if outs else "no function in this VLAN"
        f = self.by_mac.get(dst)
        if f is None:
            trusted = [t for t in self.vfs if t.trust and t.vm is not None and t.vlan == vlan]
            if trusted:
                self._log(f"wire → {dst}: unknown unicast, to trusted (promiscuous) {trusted[0].name}")
                return trusted[:1], ""
            # no VF's MAC filter matches: the default pool, which is the PF's
            self.pf.rx += 1
            self._log(f"wire → {dst}: unknown unicast, to the PF's default pool (the host)")
            return [self.pf], ""
        if f.vlan != vlan:
            f.dropped += 1
            self._log(f"wire → {dst} {f'vlan {vlan}' if vlan else 'untagged'}: {f.name} is on port VLAN {f.vlan or '–'}, dropped")
            return [], f"NIC switch: VLAN {vlan or 'untagged'} frame cannot reach {f.name} (port VLAN {f.vlan or 'none'})"
        if not f.link_up:
            f.dropped += 1
            self._log(f"wire → {dst}: {f.name} link-state disable, dropped")
            return [], f"NIC switch: {f.name} link-state is disable"
        self._log(f"wire → {dst} {f'vlan {vlan}' if vlan else 'untagged'}: destination MAC owned by {f.name} ({f.bdf}) → {f.vm_name}")
        return [f], ""

    def from_vf(self, vf: Function, src: str, dst: str) -> tuple[Function | None, str]:
        """A frame a VF transmits: spoof check, then local (VEB loopback) or
        the wire.  Returns ``(local function or None for the wire, drop reason)``."""
        if vf.spoof_check and src != vf.mac:
            vf.spoofed += 1
            vf.dropped += 1
            self.spoofed_total += 1
            self.ssvpc += 1
            self._log(f"{vf.name} sends from {src}: not its MAC {vf.mac} — spoof check drops it")
            return None, f"NIC switch: spoofed source MAC {src} from {vf.name} (spoof checking on)"
        if not vf.link_up:
            vf.dropped += 1
            return None, f"NIC switch: {vf.name} link-state is disable"
        f = self.by_mac.get(dst)
        if f is not None and f is not vf:
            if not f.link_up:
                vf.dropped += 1
                self._log(f"{vf.name} → {f.name}: {f.name} link-state disable, dropped")
                return None, f"NIC switch: {f.name} link-state is disable"
            if f.vlan != vf.vlan:
                vf.dropped += 1
                self._log(f"{vf.name} → {f.name}: different port VLANs ({vf.vlan or '–'} vs {f.vlan or '–'}), isolated")
                return None, f"NIC switch: {f.name} is in another VLAN"
            self._log(f"{vf.name} → {f.name}: VM-to-VM, switched inside the NIC")
            return f, ""
        self._log(f"{vf.name} → {dst}: to the wire" + (f", tagged VLAN {vf.vlan}" if vf.vlan else ""))
        return None, ""

    def flood_from_vf(self, vf: Function, dst: str) -> list[Function]:
        """The other functions a broadcast/multicast frame sent by ``vf`` is
        replicated to inside the NIC (same port VLAN, link not disabled); the
        frame itself also goes to the wire."""
        if not is_group(dst):
            return []
        outs = [f for f in self.vfs
                if f is not vf and f.vm is not None and f.vlan == vf.vlan and f.link_up]
        self._log(f"{vf.name} → {dst}: broadcast/multicast, to the wire and replicated to "
                  f"{', '.join(f.name for f in outs) or 'no other function'}")
        return outs

    def spoof_check(self) -> str | None:
        """The PF driver's watchdog (ixgbe_spoof_check): read SSVPC (which clears
        it) and log the count if there is one.  Returns the log line or None."""
        n, self.ssvpc = self.ssvpc, 0
        if not n:
            return None
        line = f"ixgbe {self.pf_pci} {self.pf_netdev}: {n} Spoofed packets detected"
        self.pf_log.append(line)
        return line

    @property
    def decisions(self) -> list[str]:
        return [line if n == 1 else f"{line} ×{n:,}" for line, n in self._decisions]

    def _log(self, line: str) -> None:
        """The switch's recent decisions; the same decision again counts up
        (``… ×5``) instead of filling the pane with copies of one line."""
        d = self._decisions
        if d and d[-1][0] == line:
            d[-1] = (line, d[-1][1] + 1)
        else:
            d.append((line, 1))

    # -- the pane -----------------------------------------------------------------------
    def view(self) -> TableView:
        rows = [("PF", self.pf.bdf, "(host)", "–", "–", "–", "up", "host",
                 f"{self.pf.rx:,}" if self.pf.rx else "–", "–")]
        for f in self.vfs:
            rows.append((f.name, f.bdf, f.mac if f.vm is not None else "(unassigned)",
                         str(f.vlan) if f.vlan else "–", "on" if f.spoof_check else "off",
                         "on" if f.trust else "off", f.link_state, f.vm_name or "–",
                         f"{f.rx + f.tx:,}", f"{f.dropped:,}"))
        # the totals heading the pane: summed when the view is built (a frame), never per packet
        used = [f for f in self.vfs if f.vm is not None]
        summary = (("VFs in use", len(used)), ("VFs", len(self.vfs)), ("rx", sum(f.rx for f in self.vfs)),
                   ("tx", sum(f.tx for f in self.vfs)), ("to host", self.pf.rx),
                   ("dropped", sum(f.dropped for f in self.vfs)), ("spoofed", self.spoofed_total))
        title = f"NIC · PF {self.pf.bdf} · {len(self.vfs)} VFs (offset {self.first_vf_offset}, stride {self.vf_stride})"
        return TableView(title, ("fn", "RID", "MAC", "vlan", "spoof", "trust", "link", "vm", "rx+tx", "drop"),
                         tuple(rows), tuple(self.decisions) + tuple(f"PF log: {x}" for x in self.pf_log),
                         summary=summary)
