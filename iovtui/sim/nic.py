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
    g = _GROUP.get(mac)
    if g is None:
        g = _GROUP[mac] = mac == BROADCAST or bool(int(mac[:2], 16) & 1)
    return g


#: is_group's answer per MAC seen (a switch decides per frame; a run has few MACs)
_GROUP: dict[str, bool] = {}


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
    """One 82599 with ``nic.ports`` ports: port n is PF n (function n of
    ``pf_rid``'s device), with its own ``nic.vfs`` VFs, embedded switch
    (a frame from one port's VF reaches another port's only over the wire)
    and SSVPC / service timer.  ``pf``/``pf_pci``/``pf_netdev`` are port 0's."""

    def __init__(self, nic_cfg: dict, vms) -> None:
        pf_rid = parse_rid(nic_cfg["pf_rid"])
        nports = nic_cfg.get("ports", 1)
        two = nports > 1
        self.first_vf_offset = nic_cfg["first_vf_offset"]
        self.vf_stride = nic_cfg["vf_stride"]
        #: each port's PF (one port: named "PF" as before; two: "PF0", "PF1")
        self.pfs: list[Function] = []
        #: every VF, port 0's then port 1's (``vf.extra["port"]``)
        self.vfs: list[Function] = []
        self.port_vfs: list[list[Function]] = []
        for p in range(nports):
            # the PF's MAC: the model's 02:00:00:00:02:0<port> (a locally administered address)
            pf = Function(f"PF{p}" if two else "PF", pf_rid + p, f"02:00:00:00:02:{p:02x}", vm=None,
                          vm_name="host")
            pf.extra["port"] = p
            self.pfs.append(pf)
            vfs = []
            for n in range(nic_cfg["vfs"]):
                # the SR-IOV capability: VF n+1's routing ID = PF RID + First VF Offset + n × VF Stride
                rid = (pf.rid + self.first_vf_offset + n * self.vf_stride) & 0xFFFF
                f = Function(f"VF{p}.{n}" if two else f"VF{n}", rid, "00:00:00:00:00:00",
                             spoof_check=nic_cfg["spoof_check"], trust=nic_cfg["trust"],
                             link_state=nic_cfg["link_state"])
                f.extra["port"] = p
                vfs.append(f)
            self.port_vfs.append(vfs)
            self.vfs.extend(vfs)
        self.pf = self.pfs[0]
        #: the VF each VM is bound to (by VM index): its port's next free VF
        self.vm_vf: list[Function] = []
        free = [iter(v) for v in self.port_vfs]
        for vm in vms:
            cfg = vm.extra["cfg"]
            f = next(free[getattr(cfg, "port", 0)])
            f.mac, f.vlan, f.vm, f.vm_name = vm.mac, vm.vlan, vm.index, vm.name
            f.spoof_check, f.trust, f.link_state = cfg.spoof_check, cfg.trust, cfg.link_state
            self.vm_vf.append(f)
        self.by_mac = {f.mac: f for f in self.vfs if f.vm is not None}
        self._decisions: deque[tuple[str, int]] = deque(maxlen=6)    # (decision, times in a row)
        self._owned_lines: dict[tuple[str, int], str] = {}
        #: per port, destination MAC -> (the VF that owns it, its decision line) for an untagged
        #: frame the common case of from_wire sent there once: the same answer every time, as the
        #: functions' MAC, VLAN and link state are fixed once the NIC is set up (untagged_owner)
        self.untagged_owned: list[dict[str, tuple[Function, str]]] = [{} for _ in range(nports)]
        self.spoofed_total = 0
        #: SSVPC of each port: spoofed packets since its PF driver last read it (read-to-clear)
        self.ssvpc_of = [0] * nports
        #: the PF's kernel log (dmesg lines), newest last
        self.pf_log: deque[str] = deque(maxlen=4)
        #: how each PF shows in the host's log: PCI address and its netdev (systemd's enp<bus>s<slot>f<fn>)
        self.pf_pcis, self.pf_netdevs = [], []
        for pf in self.pfs:
            bus, rest = pf.bdf.split(":")
            dev, fn = rest.split(".")
            self.pf_pcis.append(f"0000:{pf.bdf}")
            self.pf_netdevs.append(f"enp{int(bus, 16)}s{int(dev, 16)}f{int(fn)}")
        self.pf_pci, self.pf_netdev = self.pf_pcis[0], self.pf_netdevs[0]

    @property
    def ssvpc(self) -> int:
        """Spoofed packets no PF driver has read yet (all ports)."""
        return sum(self.ssvpc_of)

    # -- the embedded switch ---------------------------------------------------------
    def untagged_owner(self, dst: str, port: int = 0) -> Function | None:
        """The VF an untagged frame to ``dst`` on ``port``'s link goes to, when
        from_wire has sent one there before as its common case (a MAC a VF
        owns), with that decision logged as from_wire logs it; else None (ask
        from_wire).  The same answer every time: the functions' MAC, VLAN and
        link state are fixed once the NIC is set up."""
        got = self.untagged_owned[port].get(dst)
        if got is None:
            return None
        self._log(got[1])
        return got[0]

    def from_wire(self, dst: str, vlan: int, port: int = 0) -> tuple[list[Function], str]:
        """Which functions a frame from the wire (on ``port``'s link) goes
        to.  Returns the functions and, when none, the reason it is dropped."""
        vfs = self.port_vfs[port]
        g = _GROUP.get(dst)
        if g is None:
            g = is_group(dst)
        if g:
            outs = [f for f in vfs if f.vm is not None and f.vlan == vlan and f.link_up]
            self._log(f"wire → {dst} {f'vlan {vlan}' if vlan else 'untagged'}: broadcast/multicast, replicated to "
                      f"{', '.join(f.name for f in outs) or 'nobody'}")
            return outs, "" if outs else "no function in this VLAN"
        f = self.by_mac.get(dst)
        if f is not None and f.extra["port"] != port:
            f = None            # that VF is behind the other port's switch
        if f is None:
            trusted = [t for t in vfs if t.trust and t.vm is not None and t.vlan == vlan]
            if trusted:
                self._log(f"wire → {dst}: unknown unicast, to trusted (promiscuous) {trusted[0].name}")
                return trusted[:1], ""
            # no VF's MAC filter matches: the default pool, which is the PF's
            pf = self.pfs[port]
            pf.rx += 1
            self._log(f"wire → {dst}: unknown unicast, to {'the PF' if len(self.pfs) == 1 else pf.name}'s "
                      f"default pool (the host)")
            return [pf], ""
        if f.vlan == vlan and f.link_state != "disable":
            # the common case, owned and reachable (its line made once per MAC and VLAN)
            line = self._owned_lines.get((dst, vlan))
            if line is not None:
                d = self._decisions
                if d and d[-1][0] == line:      # (_log, inlined)
                    d[-1] = (line, d[-1][1] + 1)
                else:
                    d.append((line, 1))
                return [f], ""
        if f.vlan != vlan:
            f.dropped += 1
            self._log(f"wire → {dst} {f'vlan {vlan}' if vlan else 'untagged'}: {f.name} is on port VLAN {f.vlan or '–'}, dropped")
            return [], f"NIC switch: VLAN {vlan or 'untagged'} frame cannot reach {f.name} (port VLAN {f.vlan or 'none'})"
        if not f.link_up:
            f.dropped += 1
            self._log(f"wire → {dst}: {f.name} link-state disable, dropped")
            return [], f"NIC switch: {f.name} link-state is disable"
        key = (dst, vlan)
        line = self._owned_lines.get(key)
        if line is None:        # (the common case's line, made once per MAC and VLAN: this runs per frame)
            line = self._owned_lines[key] = (f"wire → {dst} {f'vlan {vlan}' if vlan else 'untagged'}: destination "
                                             f"MAC owned by {f.name} ({f.bdf}) → {f.vm_name}")
            if not vlan:
                self.untagged_owned[port][dst] = (f, line)
        self._log(line)
        return [f], ""

    def from_vf(self, vf: Function, src: str, dst: str) -> tuple[Function | None, str]:
        """A frame a VF transmits: spoof check, then local (VEB loopback) or
        the wire.  Returns ``(local function or None for the wire, drop reason)``."""
        if vf.spoof_check and src != vf.mac:
            vf.spoofed += 1
            vf.dropped += 1
            self.spoofed_total += 1
            self.ssvpc_of[vf.extra["port"]] += 1
            self._log(f"{vf.name} sends from {src}: not its MAC {vf.mac} — spoof check drops it")
            return None, f"NIC switch: spoofed source MAC {src} from {vf.name} (spoof checking on)"
        if not vf.link_up:
            vf.dropped += 1
            return None, f"NIC switch: {vf.name} link-state is disable"
        f = self.by_mac.get(dst)
        if f is not None and f.extra["port"] != vf.extra["port"]:
            f = None            # another port's VF: out on this port's wire (the outside switch brings it back)
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
        outs = [f for f in self.port_vfs[vf.extra["port"]]
                if f is not vf and f.vm is not None and f.vlan == vf.vlan and f.link_up]
        self._log(f"{vf.name} → {dst}: broadcast/multicast, to the wire and replicated to "
                  f"{', '.join(f.name for f in outs) or 'no other function'}")
        return outs

    def spoof_check(self, port: int | None = None) -> str | None:
        """The PF driver's watchdog (ixgbe_spoof_check): read SSVPC (which clears
        it) and log the count if there is one.  Each port's PF has its own driver
        instance, register and netdev; ``port`` None reads every port's.
        Returns the log line(s) (one per port with a count) or None."""
        lines = []
        for p in range(len(self.pfs)) if port is None else (port,):
            n, self.ssvpc_of[p] = self.ssvpc_of[p], 0
            if n:
                line = f"ixgbe {self.pf_pcis[p]} {self.pf_netdevs[p]}: {n} Spoofed packets detected"
                self.pf_log.append(line)
                lines.append(line)
        return "\n".join(lines) or None

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
        rows = []
        for pf, vfs in zip(self.pfs, self.port_vfs):
            rows.append((pf.name, pf.bdf, "(host)", "–", "–", "–", "up", "host",
                         f"{pf.rx:,}" if pf.rx else "–", "–"))
            rows.extend(self._vf_row(f) for f in vfs)
        if len(self.pfs) == 1:
            title = (f"NIC · PF {self.pf.bdf} · {len(self.vfs)} VFs (offset {self.first_vf_offset}, "
                     f"stride {self.vf_stride})")
        else:
            title = (f"NIC · {len(self.pfs)} ports, PFs {', '.join(p.bdf for p in self.pfs)} · "
                     f"{len(self.port_vfs[0])} VFs each (offset {self.first_vf_offset}, stride {self.vf_stride})")
        # the totals heading the pane: summed when the view is built (a frame), never per packet
        used = [f for f in self.vfs if f.vm is not None]
        summary = (("VFs in use", len(used)), ("VFs", len(self.vfs)), ("rx", sum(f.rx for f in self.vfs)),
                   ("tx", sum(f.tx for f in self.vfs)), ("to host", sum(pf.rx for pf in self.pfs)),
                   ("dropped", sum(f.dropped for f in self.vfs)), ("spoofed", self.spoofed_total))
        return TableView(title, ("fn", "RID", "MAC", "vlan", "spoof", "trust", "link", "vm", "rx+tx", "drop"),
                         tuple(rows), tuple(self.decisions) + tuple(f"PF log: {x}" for x in self.pf_log),
                         summary=summary)

    @staticmethod
    def _vf_row(f: Function) -> tuple:
        return (f.name, f.bdf, f.mac if f.vm is not None else "(unassigned)",
                str(f.vlan) if f.vlan else "–", "on" if f.spoof_check else "off",
                "on" if f.trust else "off", f.link_state, f.vm_name or "–",
                f"{f.rx + f.tx:,}", f"{f.dropped:,}")
