"""Presets: TOML scenario files, validated against one schema.

Every error names the file, the key path, the bad value and what is
allowed; an unknown key suggests the nearest valid one.  TOML syntax errors
keep tomllib's line and column.
"""

from __future__ import annotations

import dataclasses

import difflib
import errno
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .vmm import DEFAULT_COSTS

__all__ = ["Preset", "PresetError", "load_preset", "list_presets", "preset_from_dict",
           "preset_dirs", "parse_rate", "IMIX", "SCHEMA"]


class PresetError(Exception):
    """A preset could not be used; ``str(err)`` is the one line to show."""


# -- field specs ------------------------------------------------------------
@dataclass(frozen=True)
class F:
    """One key: how to check it, its default and what is allowed."""

    check: Callable[[Any], Any]     # returns the normalised value or raises ValueError(allowed)
    default: Any = None
    required: bool = False


def _int(lo: int, hi: int, pow2: bool = False, mult: int = 1):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"an integer {lo}..{hi}")
        if not lo <= v <= hi:
            raise ValueError(f"an integer {lo}..{hi}" + (", a power of two" if pow2 else ""))
        if pow2 and v & (v - 1):
            raise ValueError(f"a power of two {lo}..{hi}")
        if v % mult:
            raise ValueError(f"a multiple of {mult} in {lo}..{hi}")
        return v
    return check


def _queue_size(v):
    """virtio.queue_size: 256..32768; what each ring takes is checked with virtio.ring."""
    try:
        return _int(256, 32768)(v)
    except ValueError:
        raise ValueError('a power of two 256..1024 with virtio.ring = "split" (QEMU\'s virtio-net limits), '
                         'any integer 256..32768 with virtio.ring = "packed"') from None


def _float(lo: float, hi: float):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"a number {lo:g}..{hi:g}")
        if not lo <= v <= hi:
            raise ValueError(f"a number {lo:g}..{hi:g}")
        return float(v)
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _choice(*choices: str):
    def check(v):
        if v not in choices:
            raise ValueError(" | ".join(choices))
        return v
    return check


# (the patterns are compiled on first use, by re's own cache: loading this
# module for the app's start-up does not pay for patterns a preset may not use)
def _str(pattern: str = r".+", what: str = "a non-empty string"):
    def check(v):
        if not isinstance(v, str) or not re.fullmatch(pattern, v):
            raise ValueError(what)
        return v
    return check


_MAC_RX = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"


def _mac(v):
    if not isinstance(v, str) or not re.fullmatch(_MAC_RX, v):
        raise ValueError('a MAC address like "52:54:00:12:34:56"')
    if int(v[:2], 16) & 1:
        raise ValueError("a unicast MAC address (first octet even)")
    return v.lower()


_SIZE_RX = r"\s*(\d+)\s*(KiB|MiB|GiB|K|M|G)?\s*"
_SIZE_UNIT = {None: 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def _ram(v):
    allowed = 'a size 4 MiB..1 GiB, a multiple of 4 KiB ("16 MiB" or bytes)'
    if isinstance(v, bool):
        raise ValueError(allowed)
    if isinstance(v, int):
        n = v
    elif isinstance(v, str) and (m := re.fullmatch(_SIZE_RX, v, re.I)):
        n = int(m.group(1)) * _SIZE_UNIT[(m.group(2) or "").lower() or None]
    else:
        raise ValueError(allowed)
    if not (4 << 20) <= n <= (1 << 30) or n % 4096:
        raise ValueError(allowed)
    return n


#: Simple IMIX (frame sizes without FCS) and its 7:4:1 weights.
IMIX = ((60, 7), (590, 4), (1514, 1))


def _sizes(v):
    allowed = 'a frame size 60..1514, a list of them, or "imix"'
    if v == "imix":
        return list(IMIX)
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v:
        raise ValueError(allowed)
    out = []
    for s in v:
        if isinstance(s, bool) or not isinstance(s, int) or not 60 <= s <= 1514:
            raise ValueError(allowed)
        out.append((s, 1))
    return out


_RATE_RX = r"\s*([0-9]*\.?[0-9]+)\s*(pps|kpps|mpps|bps|kb/s|mb/s|gb/s|kbps|mbps|gbps)\s*"
_RATE_MULT = {"pps": ("pps", 1), "kpps": ("pps", 1e3), "mpps": ("pps", 1e6),
              "bps": ("bps", 1), "kb/s": ("bps", 1e3), "kbps": ("bps", 1e3),
              "mb/s": ("bps", 1e6), "mbps": ("bps", 1e6), "gb/s": ("bps", 1e9), "gbps": ("bps", 1e9)}


def parse_rate(v) -> tuple[str, float]:
    """``"line"`` | packets/s as a number | ``"500 kpps"`` | ``"4 Gb/s"``."""
    allowed = '"line", packets per second (a number), or a string like "500 kpps" or "4 Gb/s"'
    if v == "line":
        return ("line", 0.0)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not 1 <= v <= 100e6:
            raise ValueError("packets per second 1..100000000, " + allowed)
        return ("pps", float(v))
    if isinstance(v, str) and (m := re.fullmatch(_RATE_RX, v, re.I)):
        kind, mult = _RATE_MULT[m.group(2).lower()]
        val = float(m.group(1)) * mult
        if val <= 0 or (kind == "pps" and val > 100e6) or (kind == "bps" and val > 400e9):
            raise ValueError("a positive rate up to 100 Mpps or 400 Gb/s")
        return (kind, val)
    raise ValueError(allowed)


def _rid(v):
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]", v):
        raise ValueError('a PCI bus:device.function like "02:00.0" (device 00..1f, function 0..7)')
    return v.lower()


_TRAFFIC = {
    "pattern": F(_choice("steady", "burst", "poisson", "pingpong"), "steady"),
    "direction": F(_choice("rx", "tx", "both"), "rx"),
    "rate": F(parse_rate, ("line", 0.0)),
    "sizes": F(_sizes, [(1514, 1)]),
    "count": F(_int(1, 10_000_000), 2000),
    "burst_size": F(_int(1, 4096), 32),
    "burst_gap_us": F(_float(0.1, 1e6), 100.0),
    "targets": F(lambda v: _targets(v), "all"),
}


def _targets(v):
    if v == "all":
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return v
    raise ValueError('"all" or a list of VM names')


_VM = {
    "name": F(_str(r"[a-z][a-z0-9_-]{0,15}", "a short lowercase name like \"vm0\" (letters, digits, - or _)"), None),
    "mac": F(_mac, None),
    "vlan": F(_int(0, 4094), 0),
    "ram": F(_ram, 16 << 20),
    "ip": F(_str(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})", 'an IPv4 address like "10.0.0.1"'), None),
    "spoof_check": F(_bool, None),
    "trust": F(_bool, None),
    "link_state": F(_choice("auto", "enable", "disable"), None),
    # which NIC port (PF) the VM's VF (or, without SR-IOV, its tap's uplink) is on;
    # absent: the next free VF, port 0's first (see _assign_ports)
    "port": F(_int(0, 1), None),
}

#: the Intel 82599: 63 VFs per port (64 pools, one kept by the PF), two ports
MAX_VFS_PER_PORT = 63
MAX_PORTS = 2

_NIC = {
    "vfs": F(_int(1, MAX_VFS_PER_PORT), 4),     # VFs per port (sriov_numvfs of each PF)
    "ports": F(_int(1, MAX_PORTS), 1),          # PFs: port n is function n of pf_rid's device
    "spoof_check": F(_bool, True),
    "trust": F(_bool, False),
    "link_state": F(_choice("auto", "enable", "disable"), "auto"),
    "pf_rid": F(_rid, "02:00.0"),
    "first_vf_offset": F(_int(1, 255), 128),
    "vf_stride": F(_int(1, 255), 2),
    "line_rate_gbps": F(_float(0.1, 400), 10.0),
    # the PF driver's service timer (ixgbe_watchdog_subtask → ixgbe_spoof_check reads SSVPC): 2 s
    "pf_watchdog_ms": F(_float(0.01, 60000), 2000.0),
    # fraction of frames from the wire addressed to a MAC no VF owns (the NIC hands them to the PF)
    "unknown_unicast": F(_float(0, 1), 0.0),
}

_VIRTIO = {
    # the split ring: QEMU's virtio-net rx_queue_size / tx_queue_size, a power of two 256..1024;
    # the packed ring: any size up to 32768 (virtio 1.1 section 2.7; checked with virtio.ring below)
    "queue_size": F(_queue_size, 256),
    # the virtqueue format: the split ring (virtio 1.0) or the packed ring (virtio 1.1, VIRTIO_F_RING_PACKED)
    "ring": F(_choice("split", "packed"), "split"),
    # count the distinct 64-byte lines of ring memory written (compare --virtio-rings turns it on)
    "count_ring_lines": F(_bool, False),
    "event_idx": F(_bool, True),
    # vhost-net (libvirt's default whenever /dev/vhost-net exists); false: QEMU's userspace virtio-net
    "vhost": F(_bool, True),
    # VIRTIO_NET_F_MRG_RXBUF (QEMU offers it): mergeable buffers sized by Linux's EWMA; false: 1,530 B small buffers
    "mrg_rxbuf": F(_bool, True),
    "notify": F(_choice("mmio", "pio"), "mmio"),
    "ioeventfd": F(_bool, True),
    "napi_budget": F(_int(1, 1024), 64),
}

_EMULATION = {
    "mitigation": F(_bool, True),                # QEMU's e1000 "mitigation" property (≥ 128 µs between edges)
    "itr_us": F(_float(0, 10000), 0.0),          # 0: Linux's dynamic ITR (InterruptThrottleRate=3); > 0: fixed
    "ring_size": F(_int(8, 4096, mult=8), 256),
    "tx_csum_offload": F(_bool, False),          # context + extended data descriptor per frame
}

#: the host platform: how KVM delivers interrupts and takes EOIs, for every technique
_HOST = {
    "apicv": F(_bool, False),                    # APIC virtualization (KVM's enable_apicv, on every CPU that has it)
    "x2apic": F(_bool, False),                   # the guest's local APIC in x2APIC mode (EOI is WRMSR 0x80B)
    "vtd_posted_interrupts": F(_bool, False),    # VT-d posted interrupts (SR-IOV only; needs apicv)
}

#: old keys that now live in [host]: key -> what it meant
_SRIOV_DEPRECATED = {
    "posted_interrupts": "use [host] apicv = true and vtd_posted_interrupts = true",
    "x2apic": "use [host] x2apic",
}

def _itr_us(v):
    allowed = '"adaptive" (ixgbevf\'s default, rx_itr_setting = 1) or microseconds 0..1022 (0 = off)'
    if v == "adaptive":
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1022:
        raise ValueError(allowed)
    return float(v)


_SRIOV = {
    "posted_interrupts": F(_bool, None),         # deprecated: [host] apicv + vtd_posted_interrupts
    "x2apic": F(_bool, None),                    # deprecated: [host] x2apic
    "iotlb_entries": F(_int(1, 4096), None),     # deprecated: [iommu] iotlb_entries (still accepted)
    # VF interrupt moderation: absent / "adaptive" = ixgbevf's adaptive ITR (100K/20K/12K
    # interrupts/s); a number = "ethtool -C rx-usecs N", fixed (0 = off)
    "itr_us": F(_itr_us, None),
    "ring_size": F(_int(8, 4096, mult=8), 256),
}

#: the VT-d IOMMU that remaps the VFs' DMA
_IOMMU = {
    "iotlb_entries": F(_int(1, 4096), 64),
    "superpages": F(_bool, False),               # 2 MiB second-level pages where a mapping allows
}

_FAULTS = {
    "unmapped_dma": F(_float(0, 1), 0.0),    # fraction of RX buffers the guest posts at an unmapped GPA
    "readonly_dma": F(_float(0, 1), 0.0),    # fraction posted in a page the IOMMU maps read-only
    "spoofed_src": F(_float(0, 1), 0.0),     # fraction of guest TX frames with a forged source MAC
    "foreign_vlan": F(_float(0, 1), 0.0),    # fraction of frames from the wire tagged for a VLAN the VM is not in
    "ring_full": F(_bool, False),            # the guest driver stops refilling RX buffers
    "link_down_us": F(_float(0, 1e9), 0.0),  # the link goes down at this virtual time (0 = never)
}

_COSTS = {k: F(_float(0, 1e9), float(v)) for k, v in DEFAULT_COSTS.items()}


def _jitter(v):
    try:
        return _float(0, 1)(v)
    except ValueError:
        raise ValueError("a number 0..1 (the spread of every cost, e.g. 0.1 = 10 %; 0 = exact costs)") from None


_COSTS["jitter"] = F(_jitter, DEFAULT_COSTS["jitter"])

SCHEMA: dict[str, Any] = {
    "name": F(_str(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "a name of letters, digits, '-', '_' or '.'"), required=True),
    "description": F(_str(), required=True),
    # the technique the scenario is about (the app and `run` open on it; --technique wins)
    "technique": F(_choice("emulation", "virtio", "sriov"), None),
    "traffic": _TRAFFIC,
    "vm": [_VM],
    "host": _HOST,
    "nic": _NIC,
    "virtio": _VIRTIO,
    "emulation": _EMULATION,
    "sriov": _SRIOV,
    "iommu": _IOMMU,
    "faults": _FAULTS,
    "costs": _COSTS,
}


# -- the validated preset ----------------------------------------------------
@dataclass
class VmCfg:
    name: str
    mac: str
    vlan: int
    ram: int
    ip: str
    spoof_check: bool
    trust: bool
    link_state: str
    #: the NIC port (PF) this VM's VF / uplink is on
    port: int = 0


@dataclass
class Preset:
    name: str
    description: str
    source: str
    #: the technique the scenario is about (None: every technique alike)
    technique: str | None
    traffic: dict[str, Any]
    vms: list[VmCfg]
    nic: dict[str, Any]
    virtio: dict[str, Any]
    emulation: dict[str, Any]
    sriov: dict[str, Any]
    faults: dict[str, Any]
    costs: dict[str, float]
    host: dict[str, Any] = field(default_factory=lambda: {k: f.default for k, f in _HOST.items()})
    iommu: dict[str, Any] = field(default_factory=lambda: {k: f.default for k, f in _IOMMU.items()})
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    #: one line per deprecated key the file used (the CLI prints them on stderr)
    warnings: list[str] = field(default_factory=list, repr=False)

    def with_options(self, *, via: str | None = None, **sections: Any) -> "Preset":
        """A copy with some section keys changed (used by the app's toggles
        and ``--set``), validated like a file.  ``via`` names where the change
        came from in an error (e.g. ``--set virtio.queue_size=3``); the copy
        keeps this preset's source."""
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.raw.items()}
        for sec, kv in sections.items():
            if isinstance(kv, list):
                raw[sec] = kv           # e.g. vm=[...] replaces the [[vm]] tables
            else:
                raw.setdefault(sec, {}).update(kv)
        if via is None:
            return preset_from_dict(raw, self.source)
        return dataclasses.replace(preset_from_dict(raw, via), source=self.source)


def _nearest(key: str, allowed) -> str:
    m = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
    return f' (did you mean "{m[0]}"?)' if m else ""


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _check_table(src: str, path: str, table: Any, spec: dict[str, F]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise PresetError(f"{src}: [{path}] must be a table, got {_fmt(table)}")
    out: dict[str, Any] = {}
    for key, val in table.items():
        if key not in spec:
            allowed = ", ".join(spec)
            raise PresetError(f"{src}: unknown key {path}.{key}{_nearest(key, spec)}; "
                              f"allowed in [{path}]: {allowed}")
        try:
            out[key] = spec[key].check(val)
        except ValueError as e:
            raise PresetError(f"{src}: {path}.{key} = {_fmt(val)} is not allowed; expected {e}") from None
    for key, f in spec.items():
        if key not in out:
            out[key] = f.default
    return out


def preset_from_dict(data: dict[str, Any], source: str = "<preset>") -> Preset:
    """Validate parsed TOML and build a :class:`Preset` (raises PresetError)."""
    src = source
    for key in data:
        if key not in SCHEMA:
            raise PresetError(f"{src}: unknown key {key}{_nearest(key, SCHEMA)}; "
                              f"allowed at the top level: {', '.join(SCHEMA)}")
    top = {}
    for key in ("name", "description", "technique"):
        f: F = SCHEMA[key]
        if key not in data:
            if not f.required:
                top[key] = f.default
                continue
            raise PresetError(f"{src}: missing required key {key}")
        try:
            top[key] = f.check(data[key])
        except ValueError as e:
            raise PresetError(f"{src}: {key} = {_fmt(data[key])} is not allowed; expected {e}") from None
    sections = {}
    for sec in ("traffic", "host", "nic", "virtio", "emulation", "sriov", "iommu", "faults", "costs"):
        sections[sec] = _check_table(src, sec, data.get(sec, {}), SCHEMA[sec])
    warnings = _host_from_old_keys(src, data, sections)
    vq = sections["virtio"]
    qs = vq["queue_size"]
    if vq["ring"] == "split" and (qs & (qs - 1) or qs > 1024):
        raise PresetError(f"{src}: virtio.queue_size = {qs} is not allowed with virtio.ring = "
                          f"\"split\"; expected a power of two 256..1024 (QEMU's virtio-net limits; the split "
                          f"ring's index wraps mod 2^16; virtio.ring = \"packed\" takes any size 256..32768)")
    old = sections["sriov"].pop("iotlb_entries")
    if old is not None:
        # the old key still works: [iommu] iotlb_entries, if the file names both, wins
        warnings.append(f"{src}: sriov.iotlb_entries is deprecated; use [iommu] iotlb_entries")
        if "iotlb_entries" not in (data.get("iommu") or {}):
            sections["iommu"]["iotlb_entries"] = old

    vm_tables = data.get("vm", [{}])
    if not isinstance(vm_tables, list) or not vm_tables:
        raise PresetError(f"{src}: vm must be one or more [[vm]] tables")
    nic = sections["nic"]
    limit = nic["ports"] * nic["vfs"]
    if len(vm_tables) > MAX_PORTS * MAX_VFS_PER_PORT:
        raise PresetError(f"{src}: {len(vm_tables)} [[vm]] tables; allowed 1..{MAX_PORTS * MAX_VFS_PER_PORT} "
                          f"({MAX_PORTS} ports × {MAX_VFS_PER_PORT} VFs)")
    vms: list[VmCfg] = []
    for i, t in enumerate(vm_tables):
        v = _check_table(src, f"vm[{i}]", t, _VM)
        vms.append(VmCfg(
            name=v["name"] or f"vm{i}",
            mac=v["mac"] or f"52:54:00:00:00:{i + 1:02x}",
            vlan=v["vlan"],
            ram=v["ram"],
            ip=v["ip"] or f"10.0.0.{i + 1}",
            spoof_check=nic["spoof_check"] if v["spoof_check"] is None else v["spoof_check"],
            trust=nic["trust"] if v["trust"] is None else v["trust"],
            link_state=nic["link_state"] if v["link_state"] is None else v["link_state"],
            port=-1 if v["port"] is None else v["port"],
        ))
    names = [v.name for v in vms]
    for n in set(names):
        if names.count(n) > 1:
            raise PresetError(f"{src}: vm name {_fmt(n)} is used twice; each [[vm]] needs its own name")
    macs = [v.mac for v in vms]
    for mac in set(macs):
        if macs.count(mac) > 1:
            raise PresetError(f"{src}: vm mac {_fmt(mac)} is used twice; each VM needs its own MAC")
    if len(vms) > limit:
        raise PresetError(f"{src}: nic.ports = {nic['ports']} × nic.vfs = {nic['vfs']} gives {limit} VFs but the "
                          f"preset has {len(vms)} VMs; allowed: ports × vfs >= number of [[vm]] tables "
                          f"(vfs 1..{MAX_VFS_PER_PORT} per port, ports 1..{MAX_PORTS})")
    _assign_ports(src, nic, vms)
    targets = sections["traffic"]["targets"]
    if targets != "all":
        for t in targets:
            if t not in names:
                raise PresetError(f"{src}: traffic.targets names {_fmt(t)}, which is not a VM; "
                                  f"allowed: {', '.join(names)}{_nearest(t, names)}")
    return Preset(name=top["name"], description=top["description"], technique=top["technique"],
                  source=src, vms=vms,
                  raw=data, warnings=warnings, **sections)


def _assign_ports(src: str, nic: dict[str, Any], vms: list[VmCfg]) -> None:
    """Each VM's NIC port: its ``port`` key, else the next free VF in order,
    port 0's VFs first (VMs 0..vfs-1 on port 0, the rest on port 1).  A port
    has ``nic.vfs`` VFs; the RIDs of both ports' PFs and VFs must not collide."""
    ports, per = nic["ports"], nic["vfs"]
    for i, v in enumerate(vms):
        if v.port >= ports:
            raise PresetError(f"{src}: vm[{i}].port = {v.port} is not allowed; expected a port 0..{ports - 1} "
                              f"(nic.ports = {ports})")
    used = [sum(1 for v in vms if v.port == p) for p in range(ports)]
    for p in range(ports):
        if used[p] > per:
            raise PresetError(f"{src}: {used[p]} VMs name port {p} but it has nic.vfs = {per} VFs; "
                              f"allowed: at most {per} VMs per port")
    p = 0
    for v in vms:
        if v.port < 0:
            while used[p] >= per:
                p += 1
            v.port = p
            used[p] += 1
    if ports > 1:
        pf = nic["pf_rid"]
        if int(pf[-1]) + ports - 1 > 7:
            raise PresetError(f"{src}: nic.pf_rid = {_fmt(pf)} with nic.ports = {ports}: port {ports - 1} would be "
                              f"function {int(pf[-1]) + ports - 1}; allowed: a pf_rid with function 0..{8 - ports}")
        # as sim/nic.py numbers them: PF n is pf_rid + n; its VF k is PF + offset + k × stride
        b, rest = pf.split(":")
        d, f = rest.split(".")
        pf0 = (int(b, 16) << 8) | (int(d, 16) << 3) | int(f)
        rids = [r for port in range(ports) for r in
                [pf0 + port] + [(pf0 + port + nic["first_vf_offset"] + k * nic["vf_stride"]) & 0xFFFF
                                for k in range(per)]]
        if len(set(rids)) < len(rids):
            raise PresetError(f"{src}: nic.first_vf_offset = {nic['first_vf_offset']}, nic.vf_stride = "
                              f"{nic['vf_stride']} with nic.ports = {ports}: two functions would share a RID; "
                              f"allowed: an even vf_stride (the 82599's 2 interleaves the ports' VFs)")


def _host_from_old_keys(src: str, data: dict[str, Any], sections: dict[str, dict]) -> list[str]:
    """Map the old [sriov] keys onto [host] (explicit [host] keys win) and
    check the host profile; returns one warning line per old key used."""
    host, sriov = sections["host"], sections["sriov"]
    given = data.get("host", {}) if isinstance(data.get("host"), dict) else {}
    warnings = []
    for key, hint in _SRIOV_DEPRECATED.items():
        v = sriov.pop(key)
        if v is None:
            continue
        warnings.append(f"{src}: sriov.{key} is deprecated; {hint}")
        if key == "x2apic":
            if "x2apic" not in given:
                host["x2apic"] = v
        elif v:
            if "apicv" not in given:
                host["apicv"] = True
            if "vtd_posted_interrupts" not in given:
                host["vtd_posted_interrupts"] = True
        elif "vtd_posted_interrupts" not in given:
            host["vtd_posted_interrupts"] = False
    if host["vtd_posted_interrupts"] and not host["apicv"]:
        raise PresetError(f"{src}: host.vtd_posted_interrupts = true needs host.apicv = true "
                          f"(VT-d posts into the virtual APIC's posted-interrupt descriptor)")
    return warnings


# -- finding presets ---------------------------------------------------------
def preset_dirs() -> list[tuple[str, Path]]:
    """Where presets are looked up, in order: the user's, then the shipped."""
    dirs: list[tuple[str, Path]] = []
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs.append(("user", Path(xdg) / "iovtui" / "presets"))
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg / "presets", pkg.parent / "presets"):  # installed wheel, then a source checkout
        if cand.is_dir():
            dirs.append(("shipped", cand))
            break
    return dirs


def _warn(on_warning: Callable[[str], None] | None, msg: str) -> None:
    if on_warning is not None:
        on_warning(msg)


def list_presets(on_warning: Callable[[str], None] | None = None) -> list[tuple[str, Path, str]]:
    """``(name, path, origin)`` of every preset file found, one per name.  A
    presets directory that cannot be read (e.g. another user's, under an
    inherited HOME) is skipped, with one line to ``on_warning``."""
    seen: dict[str, tuple[str, Path, str]] = {}
    for origin, d in preset_dirs():
        try:
            if not d.is_dir():
                continue
            files = sorted(d.glob("*.toml"))
        except OSError as e:
            _warn(on_warning, f"skipping {origin} presets in {d}: {e.strerror or e}")
            continue
        for p in files:
            seen.setdefault(p.stem, (p.stem, p, origin))
    return sorted(seen.values())


def _file_problem(p: Path) -> str | None:
    """Why ``p`` cannot be a preset file (None if it is a readable regular file)."""
    try:
        st = p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop, not a preset file"
        if e.errno == errno.ENOENT:
            return "no such preset file" if not p.is_symlink() else "is a dangling symlink, not a preset file"
        if e.errno == errno.EACCES:
            return "cannot be read (permission denied)"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a preset file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a preset is a TOML file)"
    if st.st_size > _MAX_PRESET_BYTES:
        return f"is {st.st_size:,} bytes; a preset file is at most {_MAX_PRESET_BYTES:,}"
    return None


#: a preset is a few hundred bytes of TOML; anything far larger is not one
_MAX_PRESET_BYTES = 1 << 20


def _load_file(path: Path) -> Preset:
    problem = _file_problem(path)
    if problem is not None:
        raise PresetError(f"{path}: {problem}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PresetError(f"{path}: cannot read preset: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PresetError(f"{path}: not UTF-8 text; a preset is a TOML file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{path}: TOML syntax error: {e}") from None
    return preset_from_dict(data, str(path))


def load_preset(name_or_path: str, on_warning: Callable[[str], None] | None = None) -> Preset:
    """A shipped or user preset by name, or a file by path."""
    p = Path(name_or_path)
    looks_like_path = name_or_path.endswith(".toml") or os.sep in name_or_path
    if looks_like_path or _exists(p):
        return _load_file(p)
    for origin, d in preset_dirs():
        cand = d / f"{name_or_path}.toml"
        try:
            found = cand.is_file()
        except OSError as e:
            _warn(on_warning, f"skipping {origin} presets in {d}: {e.strerror or e}")
            continue
        if found:
            return _load_file(cand)
    names = [n for n, _, _ in list_presets(on_warning)]
    raise PresetError(f"unknown preset \"{name_or_path}\"{_nearest(name_or_path, names)}; "
                      f"available: {', '.join(names) or '(none found)'}")


def _exists(p: Path) -> bool:
    try:
        return p.exists() or p.is_symlink()
    except OSError:
        return True      # e.g. a symlink loop: it is there, _load_file says what it is
