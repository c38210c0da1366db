"""The SR-IOV NIC: requester IDs, per-VF settings and the embedded switch (VEB)."""
import pytest

from iovtui.sim.iommu import rid_str
from iovtui.sim.packet import BROADCAST, Packet, parse_frame
from iovtui.sim.traffic import EXT_IP, EXT_MAC

from conftest import make_preset, sim_for

A, B, C, D = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04"
UNKNOWN = "52:54:00:00:00:99"
MCAST = "01:00:5e:00:00:01"


def three_vms(nic=None, **vm_extra):
    """a and b on VLAN 10, c on VLAN 20; ``vm_extra`` = {vm name: {setting: value}}."""
    vms = [{"name": "a", "mac": A, "vlan": 10}, {"name": "b", "mac": B, "vlan": 10},
           {"name": "c", "mac": C, "vlan": 20}]
    for v in vms:
        v.update(vm_extra.get(v["name"], {}))
    return make_preset(nic=nic or {}, vm=vms, traffic={"count": 1})


def nic_of(preset):
    return sim_for(preset, "sriov", packets=1).technique.nic


# -- requester IDs -----------------------------------------------------------------------
def test_vf_rids_follow_first_vf_offset_and_stride():
    n = nic_of(three_vms())
    assert n.pf.bdf == "02:00.0"
    assert [f.bdf for f in n.vfs] == ["02:10.0", "02:10.2", "02:10.4", "02:10.6"]
    assert [f.rid - n.pf.rid for f in n.vfs] == [128, 130, 132, 134]


def test_63_vfs_and_other_offsets():
    n = nic_of(three_vms(nic={"vfs": 63}))
    assert len(n.vfs) == 63 and n.vfs[4].bdf == "02:11.0" and n.vfs[8].bdf == "02:12.0" and n.vfs[62].bdf == "02:1f.4"
    n = nic_of(three_vms(nic={"pf_rid": "05:00.0", "first_vf_offset": 1, "vf_stride": 1, "vfs": 9}))
    assert [f.bdf for f in n.vfs][:3] == ["05:00.1", "05:00.2", "05:00.3"] and n.vfs[8].bdf == "05:01.1"
    n = nic_of(three_vms(nic={"pf_rid": "ff:1f.0", "first_vf_offset": 255, "vf_stride": 255}))
    assert n.vfs[0].rid == (0xFFF8 + 255) & 0xFFFF and n.vfs[0].bdf == rid_str(0x00F7) == "00:1e.7"


def test_per_vf_settings_come_from_the_bound_vm():
    n = nic_of(three_vms(nic={"spoof_check": True, "trust": False},
                         b={"spoof_check": False, "trust": True, "link_state": "enable"},
                         c={"link_state": "disable"}))
    a, b, c, d = n.vfs
    assert (a.mac, a.vlan, a.spoof_check, a.trust, a.link_state, a.vm_name) == (A, 10, True, False, "auto", "a")
    assert (b.mac, b.vlan, b.spoof_check, b.trust, b.link_state, b.vm) == (B, 10, False, True, "enable", 1)
    assert (c.vlan, c.link_state, c.link_up) == (20, "disable", False)
    assert d.vm is None                                   # VF3 is not assigned to any VM


# -- the switch: from the wire ---------------------------------------------------------------
def test_forwards_by_destination_mac_to_the_owner():
    n = nic_of(three_vms())
    for mac, vlan, name in ((A, 10, "VF0"), (B, 10, "VF1"), (C, 20, "VF2")):
        outs, why = n.from_wire(mac, vlan)
        assert [f.name for f in outs] == [name] and why == ""
    assert "destination MAC owned by VF2 (02:10.4) → c" in n.decisions[-1]


@pytest.mark.parametrize("dst", [BROADCAST, MCAST])
def test_broadcast_and_multicast_are_replicated_within_the_vlan(dst):
    n = nic_of(three_vms())
    assert [f.name for f in n.from_wire(dst, 10)[0]] == ["VF0", "VF1"]
    assert [f.name for f in n.from_wire(dst, 20)[0]] == ["VF2"]
    outs, why = n.from_wire(dst, 30)
    assert outs == [] and why


def test_broadcast_skips_a_link_disabled_function():
    n = nic_of(three_vms(b={"link_state": "disable"}))
    assert [f.name for f in n.from_wire(BROADCAST, 10)[0]] == ["VF0"]


def test_a_port_vlan_isolates_and_the_drop_is_counted():
    n = nic_of(three_vms())
    outs, why = n.from_wire(C, 10)                        # c's MAC, but tagged for VLAN 10
    assert outs == [] and "VLAN 10" in why and "port VLAN 20" in why
    outs, why = n.from_wire(A, 0)                         # untagged frame for a VLAN-10 port
    assert outs == [] and "untagged" in why
    assert (n.vfs[2].dropped, n.vfs[0].dropped) == (1, 1)


def test_unknown_unicast_goes_to_the_pf_unless_a_function_is_trusted():
    n = nic_of(three_vms())
    outs, why = n.from_wire(UNKNOWN, 10)
    assert outs == [n.pf] and why == "" and n.pf.rx == 1          # the PF's default pool: the host
    assert n.decisions[-1].endswith("unknown unicast, to the PF's default pool (the host)")
    t = nic_of(three_vms(b={"trust": True}))
    outs, why = t.from_wire(UNKNOWN, 10)
    assert [f.name for f in outs] == ["VF1"] and why == ""
    outs, why = t.from_wire(UNKNOWN, 20)                  # the trusted VF is not in VLAN 20
    assert outs == [t.pf] and why == ""


def test_link_state_disable_drops():
    n = nic_of(three_vms(a={"link_state": "disable"}))
    outs, why = n.from_wire(A, 10)
    assert outs == [] and "link-state is disable" in why and n.vfs[0].dropped == 1
    _l, why = n.from_vf(n.vfs[0], A, "02:00:00:00:00:fe")
    assert "link-state is disable" in why and n.vfs[0].dropped == 2
    _l, why = n.from_vf(n.vfs[1], B, A)                   # VM-to-VM towards the disabled VF
    assert "link-state is disable" in why and n.vfs[1].dropped == 1


# -- the switch: from a VF -----------------------------------------------------------------------
def test_spoof_check_drops_a_forged_source_and_counts_it():
    n = nic_of(three_vms())
    local, why = n.from_vf(n.vfs[0], "02:de:ad:be:ef:01", "02:00:00:00:00:fe")
    assert local is None and "spoofed source MAC 02:de:ad:be:ef:01 from VF0" in why
    assert (n.vfs[0].spoofed, n.vfs[0].dropped, n.spoofed_total) == (1, 1, 1)
    local, why = n.from_vf(n.vfs[0], A, "02:00:00:00:00:fe")
    assert local is None and why == "" and n.vfs[0].spoofed == 1   # its own MAC goes to the wire
    off = nic_of(three_vms(a={"spoof_check": False}))
    _l, why = off.from_vf(off.vfs[0], "02:de:ad:be:ef:01", "02:00:00:00:00:fe")
    assert why == "" and off.spoofed_total == 0


def test_vm_to_vm_is_switched_inside_the_nic_within_a_vlan():
    n = nic_of(three_vms())
    local, why = n.from_vf(n.vfs[0], A, B)
    assert local is n.vfs[1] and why == "" and "VM-to-VM" in n.decisions[-1]
    local, why = n.from_vf(n.vfs[0], A, C)
    assert local is None and "another VLAN" in why and n.vfs[0].dropped == 1


def test_broadcast_from_a_vf_is_replicated_to_the_others_in_its_vlan():
    n = nic_of(three_vms())
    assert [f.name for f in n.flood_from_vf(n.vfs[0], BROADCAST)] == ["VF1"]
    assert n.flood_from_vf(n.vfs[2], MCAST) == []
    assert n.flood_from_vf(n.vfs[0], B) == []


def test_the_decision_log_is_bounded():
    n = nic_of(three_vms())
    for _ in range(100):
        n.from_wire(A, 10)
    assert 0 < len(n.decisions) <= 16


def test_the_nic_pane():
    n = nic_of(three_vms(b={"trust": True}))
    n.from_wire(A, 10)
    v = n.view()
    assert "PF 02:00.0" in v.title and "4 VFs" in v.title
    assert v.columns[:8] == ("fn", "RID", "MAC", "vlan", "spoof", "trust", "link", "vm")
    assert v.rows[0][:2] == ("PF", "02:00.0")
    assert v.rows[1][:8] == ("VF0", "02:10.0", A, "10", "on", "off", "auto", "a")
    assert v.rows[2][5] == "on" and v.rows[4][2] == "(unassigned)"
    assert v.lines and "VF0" in v.lines[-1]


# -- the switch on real frames, in a run ------------------------------------------------------------
def tx_packet(sim, vm_index, dst, src=None, pid=10_000):
    vm = sim.vms[vm_index]
    frame = bytes(sim.frames.build(dst, src or vm.mac, vm.vlan, vm.ip, EXT_IP, 200, pid, 5201, 40000))
    return Packet(pid, sim.engine.now, vm_index, "tx", frame, dst, src or vm.mac, vm.vlan)


def capture_wire(sim):
    out = []
    orig = sim.transmit

    def transmit(pkt, ready):
        out.append(bytes(pkt.frame))
        return orig(pkt, ready)
    sim.transmit = transmit
    return out


def test_port_vlan_is_stripped_into_guest_ram_and_tagged_once_on_the_wire():
    p = make_preset(vm=[{"name": "a", "mac": A, "vlan": 10}], traffic={"count": 4, "direction": "both"})
    s = sim_for(p, "sriov", packets=4)
    wire = capture_wire(s)
    rx_frames = []
    orig = s.guest_reads

    def guest_reads(vm, pkt, gpa, t):
        rx_frames.append(bytes(vm.mem.ram[gpa:gpa + pkt.size]))
        return orig(vm, pkt, gpa, t)
    s.guest_reads = guest_reads
    s.run()
    assert rx_frames and wire
    for f in rx_frames:
        assert parse_frame(f)["vlan"] == 0 and f[:6] == bytes.fromhex(A.replace(":", ""))
    for f in wire:
        h = parse_frame(f)
        assert h["vlan"] == 10 and h["ethertype"] == 0x0800 and h["src"] == A
    assert s.metrics.corrupt == 0


def test_vm_to_vm_and_broadcast_through_the_veb_in_a_run():
    s = sim_for(three_vms(), "sriov", packets=1)
    wire = capture_wire(s)
    s.offer(tx_packet(s, 0, B, pid=500))                  # a → b: stays inside the NIC
    s.offer(tx_packet(s, 0, BROADCAST, pid=501))          # a → all: b gets a copy, the wire one, c none
    s.run()
    d = s.summary()
    vf = s.technique.nic.vfs
    assert d["packets"]["offered"] == d["packets"]["delivered"] + d["packets"]["dropped"]
    assert vf[1].rx == 2 and vf[2].rx == 0
    assert len(wire) == 1 and parse_frame(wire[0])["dst"] == BROADCAST
    assert d["copies_per_packet"] == 0 and s.metrics.corrupt == 0


def test_spoofed_frames_are_dropped_in_a_run_and_counted():
    p = make_preset(vm=[{"name": "a", "mac": A}], traffic={"count": 50, "direction": "tx"},
                    faults={"spoofed_src": 1.0})
    s = sim_for(p, "sriov", packets=50)
    wire = capture_wire(s)
    s.run()
    d = s.summary()
    vf = s.technique.nic.vfs[0]
    assert wire == [] and vf.spoofed == 50 == s.technique.nic.spoofed_total
    assert d["drops_by_reason"] == {"NIC switch: spoofed source MAC 02:de:ad:be:ef:01 from VF0 (spoof checking on)": 50}


def test_unknown_unicast_and_disabled_links_in_a_run():
    p = make_preset(vm=[{"name": "a", "mac": A, "link_state": "disable"}], traffic={"count": 20})
    s = sim_for(p, "sriov", packets=20)
    s.run()
    d = s.summary()
    assert d["packets"]["delivered"] == 0 and d["packets"]["dropped"] == 20
    assert s.technique.nic.vfs[0].dropped == 20


def test_the_same_switch_decision_counts_up_instead_of_repeating():
    s = sim_for(make_preset(), "sriov", packets=40)
    s.run()
    d = s.technique.nic.decisions
    assert len(d) == len(set(d))                       # no line twice in a row
    assert any(line.endswith(tuple(f"×{n}" for n in range(2, 100))) for line in d), d


def test_ssvpc_is_read_and_cleared_by_the_pf_watchdog_and_logged():
    n = nic_of(three_vms())
    vf = n.vfs[0]
    assert n.spoof_check() is None                          # nothing counted: no line
    for _ in range(3):
        n.from_vf(vf, "02:de:ad:be:ef:01", UNKNOWN)
    assert n.spoof_check() == "ixgbe 0000:02:00.0 enp2s0f0: 3 Spoofed packets detected"
    assert n.spoof_check() is None                          # read-to-clear
    assert n.view().lines[-1] == "PF log: ixgbe 0000:02:00.0 enp2s0f0: 3 Spoofed packets detected"


def test_unknown_unicast_in_a_run_reaches_the_pf_not_a_vm():
    p = make_preset(vm=[{"name": "a", "mac": A}], traffic={"count": 100}, nic={"unknown_unicast": 0.5})
    s = sim_for(p, "sriov", packets=100)
    s.run()
    d = s.summary()
    n = s.technique.nic
    assert d["packets"]["to_host"] == n.pf.rx > 20 and d["packets"]["dropped"] == 0
    assert d["packets"]["delivered"] == n.vfs[0].rx == 100 - n.pf.rx
    assert n.view().rows[0][8] == f"{n.pf.rx:,}"
