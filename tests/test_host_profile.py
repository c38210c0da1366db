"""The host platform ([host]: APICv, x2APIC, VT-d posted interrupts) and how
KVM delivers interrupts and takes EOIs under it, for every technique — as a
user sees it in `iovtui run --json` and in the trace's exit records."""
import json

import pytest

from iovtui.sim.preset import PresetError, load_preset
from iovtui.sim.trace import ListSink, Trace
from iovtui.sim.vmm import HOST_PROFILES

from conftest import TECHNIQUES, make_preset, run_cli, sim_for

PROFILES = {
    "xapic": {},
    "x2apic": {"x2apic": True},
    "apicv": {"apicv": True},
    "apicv+pi": {"apicv": True, "vtd_posted_interrupts": True},
}


def run(preset, tech, packets=400, trace=False):
    tr = None
    if trace:
        tr = Trace()
        tr.add_sink(ListSink())
    s = sim_for(preset, tech, packets=packets, trace=tr)
    s.run()
    return s, s.summary()


def events(s):
    return s.engine.trace._sinks[0].events


def exit_records(s):
    return [e for e in events(s) if e.kind == "exit"]


# -- the [host] section ---------------------------------------------------------------
def test_host_defaults_are_the_lecture_machine():
    p = load_preset("steady-stream")
    assert p.host == {"apicv": False, "x2apic": False, "vtd_posted_interrupts": False}
    s, d = run(p, "virtio", 10)
    assert d["host"] == p.host
    assert s.host.label() == "host: no APICv · xAPIC"


def test_vtd_posted_interrupts_need_apicv():
    with pytest.raises(PresetError) as e:
        make_preset(host={"vtd_posted_interrupts": True})
    msg = str(e.value)
    assert "host.vtd_posted_interrupts" in msg and "host.apicv = true" in msg


def test_bad_host_value_is_one_line(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('name = "p"\ndescription = "d"\n[host]\napicv = "yes"\n')
    r = run_cli("presets", "--validate", str(f), check_rc=2)
    assert "host.apicv" in r.stderr and "true or false" in r.stderr and "Traceback" not in r.stderr
    f.write_text('name = "p"\ndescription = "d"\n[host]\nvtd_posted_interrupts = true\n')
    r = run_cli("presets", "--validate", str(f), check_rc=2)
    assert "needs host.apicv = true" in r.stderr and "Traceback" not in r.stderr


def test_old_sriov_keys_map_onto_host_with_a_warning():
    p = make_preset(sriov={"posted_interrupts": True, "x2apic": True})
    assert p.host == {"apicv": True, "x2apic": True, "vtd_posted_interrupts": True}
    assert len(p.warnings) == 2
    assert any("sriov.posted_interrupts" in w and "[host]" in w and "vtd_posted_interrupts" in w for w in p.warnings)
    assert any("sriov.x2apic" in w and "[host] x2apic" in w for w in p.warnings)
    # an explicit [host] key wins over the old one
    q = make_preset(host={"x2apic": False}, sriov={"x2apic": True})
    assert q.host["x2apic"] is False
    # the old key still changes what a run does: no exits left on a busy SR-IOV guest
    _s, d = run(load_preset("line-rate").with_options(sriov={"posted_interrupts": True}), "sriov", 2000)
    assert d["interrupts"]["host"] == 0 and d["exits"]["per_packet"] < 0.05


def test_the_three_profiles_cycle_keeps_x2apic():
    assert list(HOST_PROFILES) == ["none", "apicv", "apicv+pi"]
    p = make_preset(host={"x2apic": True})
    for name, keys in HOST_PROFILES.items():
        q = p.with_options(host=keys)
        assert q.host["x2apic"] is True
        s, _d = run(q, "sriov", 5)
        assert s.host.profile == name


# -- EOI exits ------------------------------------------------------------------------
@pytest.mark.parametrize("tech", TECHNIQUES)
@pytest.mark.parametrize("profile", PROFILES)
def test_an_eoi_is_never_apic_write(tech, profile):
    p = load_preset("steady-stream").with_options(host=PROFILES[profile], traffic={"direction": "both"})
    s, d = run(p, tech, 300, trace=True)
    assert "APIC_WRITE" not in d["exits"]["by_reason"]
    assert not [e for e in exit_records(s) if e.data["reason"] == "APIC_WRITE"]


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_eoi_without_apicv_xapic_is_apic_access_in_kvm(tech):
    s, d = run(load_preset("steady-stream"), tech, 300, trace=True)
    by = d["exits"]["by_reason"]
    assert by["APIC_ACCESS"] > 0 and "MSR_WRITE" not in by and "EOI_INDUCED" not in by
    eois = [e for e in exit_records(s) if e.data["reason"] == "APIC_ACCESS"]
    assert eois and all(e.data["where"] == "kernel" and e.data["number"] == 44 and "EOI" in e.data["cause"]
                        for e in eois)


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_eoi_without_apicv_x2apic_is_msr_write(tech):
    s, d = run(load_preset("steady-stream").with_options(host=PROFILES["x2apic"]), tech, 300, trace=True)
    by = d["exits"]["by_reason"]
    assert by["MSR_WRITE"] > 0 and "APIC_ACCESS" not in by
    assert all("0x80B" in e.data["cause"] for e in exit_records(s) if e.data["reason"] == "MSR_WRITE")


@pytest.mark.parametrize("tech", ["virtio", "sriov"])
@pytest.mark.parametrize("profile", ["apicv", "apicv+pi"])
def test_apicv_edge_vectors_take_no_eoi_or_delivery_exit(tech, profile):
    _s, d = run(load_preset("steady-stream").with_options(host=PROFILES[profile]), tech, 300)
    by = d["exits"]["by_reason"]
    for reason in ("APIC_ACCESS", "MSR_WRITE", "EOI_INDUCED", "EXTERNAL_INTERRUPT"):
        assert reason not in by, (reason, by)
    assert d["interrupts"]["posted"] > 0 and d["interrupts"]["injected"] == 0


def test_apicv_level_triggered_e1000_eoi_is_eoi_induced():
    s, d = run(load_preset("steady-stream").with_options(host=PROFILES["apicv"]), "emulation", 300, trace=True)
    by = d["exits"]["by_reason"]
    assert by["EOI_INDUCED"] > 0 and "APIC_ACCESS" not in by and "EXTERNAL_INTERRUPT" not in by
    induced = [e for e in exit_records(s) if e.data["reason"] == "EOI_INDUCED"]
    assert all(e.data["number"] == 45 and e.data["where"] == "kernel" for e in induced)
    # one per interrupt the guest handled (each ISR ends with its EOI)
    assert 0 <= d["interrupts"]["posted"] - by["EOI_INDUCED"] <= 1    # the last one may still be in its handler


# -- delivery follows the vCPU's state --------------------------------------------------
@pytest.mark.parametrize("tech", TECHNIQUES)
def test_pingpong_shows_hlt_on_every_technique(tech):
    s, d = run(load_preset("pingpong"), tech, 300, trace=True)
    by = d["exits"]["by_reason"]
    assert by.get("HLT", 0) >= 50, by
    hlts = [e for e in exit_records(s) if e.data["reason"] == "HLT"]
    assert all(e.data["number"] == 12 and "idle" in e.data["cause"] for e in hlts)
    # the HLT exit is stamped when the guest went idle, before it was woken
    assert all(e.data["start_ns"] <= e.t for e in hlts)


def test_an_interrupt_to_a_halted_vcpu_costs_no_external_interrupt():
    # one frame at a time to an idle guest: every interrupt is a wake-up from HLT
    p = load_preset("steady-stream").with_options(traffic={"rate": 2000})
    for tech in ("virtio", "sriov"):
        _s, d = run(p, tech, 50)
        by = d["exits"]["by_reason"]
        assert "EXTERNAL_INTERRUPT" not in by, (tech, by)
        assert by["HLT"] == d["interrupts"]["injected"] == d["packets"]["delivered"]


def test_a_saturated_guest_never_halts():
    # the guest's own stack is the bottleneck: it never runs out of work
    p = load_preset("line-rate").with_options(costs={"guest_rx_ns": 4000})
    for tech in TECHNIQUES:
        _s, d = run(p, tech, 3000)
        # at most the first wake-up (the guest was idle before traffic) and the last (it drained everything)
        assert d["exits"]["by_reason"].get("HLT", 0) <= 2, (tech, d["exits"]["by_reason"])


def test_an_interrupt_raised_inside_an_exit_is_injected_at_entry():
    # the e1000 raises TXDW while the vCPU is still inside its TDT write's exit
    p = load_preset("tx-stream").with_options(traffic={"rate": 2000})
    s, d = run(p, "emulation", 40, trace=True)
    assert "EXTERNAL_INTERRUPT" not in d["exits"]["by_reason"]
    irqs = [e for e in events(s) if e.kind == "irq" and e.data.get("mode") == "injected"]
    assert irqs and any("inside an exit" in e.msg for e in irqs)


def test_external_interrupt_only_on_a_running_vcpu_without_apicv():
    # line rate keeps the guest busy: interrupts that find it in guest mode exit
    p = load_preset("line-rate")
    _s, d = run(p, "virtio", 3000)
    assert d["exits"]["by_reason"].get("EXTERNAL_INTERRUPT", 0) > 0
    _s, d = run(p.with_options(host=PROFILES["apicv"]), "virtio", 3000)
    assert "EXTERNAL_INTERRUPT" not in d["exits"]["by_reason"]


def test_sriov_host_interrupts_vanish_only_with_vtd_pi():
    p = load_preset("line-rate")
    for profile, host_irqs in (("xapic", True), ("apicv", True), ("apicv+pi", False)):
        _s, d = run(p.with_options(host=PROFILES[profile]), "sriov", 2000)
        assert (d["interrupts"]["host"] > 0) is host_irqs, (profile, d["interrupts"])


def test_json_has_the_host_and_the_exit_split():
    r = run_cli("run", "--preset", "pingpong", "--technique", "virtio", "--packets", "50",
                "--set", "host.apicv=true", "--json", check_rc=0)
    d = json.loads(r.stdout)
    assert d["host"] == {"apicv": True, "x2apic": False, "vtd_posted_interrupts": False}
    ex = d["exits"]
    assert ex["kernel"] + ex["userspace"] == ex["total"]
    assert set(d["interrupts"]) >= {"injected", "posted", "host"}
