import csv
import io
import json

from conftest import run_cli

VARIANTS = ["emulation", "virtio", "virtio+vhost", "sriov"]
PROFILES = ["none", "apicv", "apicv+pi"]
#: (variant, host profile) in the order compare prints them: the variants of one profile together
ALL = [(v, h) for h in PROFILES for v in VARIANTS]


def test_compare_json_csv_markdown_parse_back_and_agree():
    j = json.loads(run_cli("compare", "--packets", "300", "--format", "json", check_rc=0).stdout)
    rows = {(r["variant"], r["host"]): r for r in j["results"]}
    assert list(rows) == ALL and j["preset"] == "steady-stream" and j["host"] == "all"
    # virtio = QEMU's userspace backend (2 copies on receive), virtio+vhost = vhost-net (1)
    assert [rows[v, "none"]["copies_per_packet"] for v in ("emulation", "virtio", "virtio+vhost", "sriov")] == [2, 2, 1, 0]
    assert rows["sriov", "none"]["iotlb_hit_rate"] > 0 and rows["virtio", "none"]["iotlb_hit_rate"] is None
    assert rows["sriov", "apicv+pi"]["host_label"] == "host: APICv + VT-d PI · xAPIC"
    c = list(csv.DictReader(io.StringIO(run_cli("compare", "--packets", "300", "--format", "csv", check_rc=0).stdout)))
    assert [(r["variant"], r["host"]) for r in c] == ALL
    for r in c:
        assert float(r["exits_per_packet"]) == rows[r["variant"], r["host"]]["exits_per_packet"]
        assert int(r["p50_ns"]) == rows[r["variant"], r["host"]]["p50_ns"]
        assert int(r["interrupts_host"]) == rows[r["variant"], r["host"]]["interrupts_host"]
    md = run_cli("compare", "--packets", "300", "--format", "markdown", check_rc=0).stdout.splitlines()
    table = [line for line in md if line.startswith("|")]
    head = [x.strip() for x in table[0].strip("|").split("|")]
    body = [[x.strip() for x in line.strip("|").split("|")] for line in table[2:]]
    assert head[:2] == ["variant", "host"] and [b[0] for b in body] == [v for v, _h in ALL]
    assert [b[1] for b in body[:4]] == ["no APICv"] * 4 and [b[1] for b in body[-4:]] == ["APICv+PI"] * 4
    assert float(body[0][head.index("exits/pkt")]) == round(rows["emulation", "none"]["exits_per_packet"], 3)


def test_compare_across_host_profiles_shows_what_each_profile_takes_away():
    """Without APICv every EOI exits (APIC_ACCESS); with APICv only the
    e1000's level-triggered EOI does (EOI_INDUCED); VT-d posted interrupts
    take the host interrupt away from SR-IOV and change nothing else."""
    j = json.loads(run_cli("compare", "--packets", "400", "--format", "json", check_rc=0).stdout)
    rows = {(r["variant"], r["host"]): r for r in j["results"]}
    for v in VARIANTS:
        assert rows[v, "none"]["exits_by_reason"].get("APIC_ACCESS", 0) > 0, v
        for h in ("apicv", "apicv+pi"):
            by = rows[v, h]["exits_by_reason"]
            assert "APIC_ACCESS" not in by and "EXTERNAL_INTERRUPT" not in by and "APIC_WRITE" not in by
            assert ("EOI_INDUCED" in by) == (v == "emulation"), (v, h, by)
            if v == "emulation":
                # its interrupts find the vCPU halted or inside an exit (no EXTERNAL_INTERRUPT
                # to take away) and its level-triggered EOI still exits: APICv saves it nothing
                assert rows[v, h]["exits_per_packet"] <= rows[v, "none"]["exits_per_packet"]
                assert by["EOI_INDUCED"] == rows[v, "none"]["exits_by_reason"]["APIC_ACCESS"]
            else:
                assert rows[v, h]["exits_per_packet"] < rows[v, "none"]["exits_per_packet"]
    assert rows["sriov", "none"]["interrupts_host"] > 0 and rows["sriov", "apicv"]["interrupts_host"] > 0
    assert rows["sriov", "apicv+pi"]["interrupts_host"] == 0
    for v in ("emulation", "virtio", "virtio+vhost"):
        a, pi = rows[v, "apicv"], rows[v, "apicv+pi"]
        assert a["exits_by_reason"] == pi["exits_by_reason"] and a["p50_ns"] == pi["p50_ns"]
    for h in PROFILES:      # emulation above virtio and SR-IOV in every host profile
        assert rows["emulation", h]["exits_per_packet"] > max(rows[v, h]["exits_per_packet"] for v in VARIANTS[1:])
    # one profile for every technique, or the preset's own
    one = json.loads(run_cli("compare", "--packets", "200", "--format", "json", "--host", "apicv",
                             check_rc=0).stdout)["results"]
    assert [(r["variant"], r["host"]) for r in one] == [(v, "apicv") for v in VARIANTS]
    own = json.loads(run_cli("compare", "--packets", "200", "--format", "json", "--host", "preset",
                             "--preset", "modern-host", check_rc=0).stdout)["results"]
    assert {r["host_label"] for r in own} == {"host: APICv + VT-d PI · x2APIC"}
    table = run_cli("compare", "--packets", "200", "--host", "none", check_rc=0).stdout
    assert "host: no APICv · xAPIC" in table.splitlines()[0]


def test_compare_table_and_bad_input():
    out = run_cli("compare", "--packets", "200", "--preset", "line-rate", check_rc=0).stdout
    for v in VARIANTS:
        assert v in out
    assert "exits by reason" in out and "EPT_MISCONFIG" in out and "EOI_INDUCED" in out
    assert "APICv+PI" in out and "no APICv" in out
    p = run_cli("compare", "--format", "xml")
    assert p.returncode == 2 and "table" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("compare", "--preset", "nope")
    assert p.returncode == 2 and "unknown preset" in p.stderr
    p = run_cli("compare", "--host", "x2apic")
    assert p.returncode == 2 and "apicv+pi" in p.stderr and p.stderr.count("\n") == 1


def test_compare_shows_cpu_cost_faults_and_every_exit_reason_as_columns():
    j = json.loads(run_cli("compare", "--preset", "rogue-dma", "--packets", "600", "--format", "json",
                           check_rc=0).stdout)
    rows = {(r["variant"], r["host"]): r for r in j["results"]}
    # CPU per packet: SR-IOV best, virtio next, emulation worst (DOMAIN.md), even where exits/packet is close
    cpu = [rows[v, "none"]["cpu_ns_per_packet"] for v in VARIANTS] + [rows["sriov", "apicv+pi"]["cpu_ns_per_packet"]]
    assert cpu[0] > cpu[1] > cpu[2] > cpu[3] > cpu[4] > 0
    s = rows["sriov", "none"]
    assert s["iommu_faults"] == s["dropped"] > 0 and rows["virtio", "none"]["iommu_faults"] == 0
    c = list(csv.DictReader(io.StringIO(run_cli("compare", "--preset", "rogue-dma", "--packets", "600",
                                                "--format", "csv", check_rc=0).stdout)))
    for r in c:
        by = rows[r["variant"], r["host"]]["exits_by_reason"]
        reasons = {k[len("exits_"):]: int(v) for k, v in r.items() if k.startswith("exits_") and k != "exits_per_packet"}
        assert {k: v for k, v in reasons.items() if v} == by
        assert int(r["iommu_faults"]) == rows[r["variant"], r["host"]]["iommu_faults"]
    table = run_cli("compare", "--preset", "rogue-dma", "--packets", "600", check_rc=0).stdout
    assert "DMAR faults" in table and "CPU µs/pkt" in table
