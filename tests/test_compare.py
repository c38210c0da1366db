import csv
import io
import json

from conftest import run_cli

VARIANTS = ["emulation", "virtio", "virtio+vhost", "sriov", "sriov+posted"]


def test_compare_json_csv_markdown_parse_back_and_agree():
    j = json.loads(run_cli("compare", "--packets", "300", "--format", "json", check_rc=0).stdout)
    rows = {r["variant"]: r for r in j["results"]}
    assert list(rows) == VARIANTS and j["preset"] == "steady-stream"
    # virtio = QEMU's userspace backend (2 copies on receive), virtio+vhost = vhost-net (1)
    assert [rows[v]["copies_per_packet"] for v in ("emulation", "virtio", "virtio+vhost", "sriov")] == [2, 2, 1, 0]
    assert rows["sriov+posted"]["exits_per_packet"] == 0 < rows["virtio"]["exits_per_packet"]
    assert rows["sriov"]["iotlb_hit_rate"] > 0 and rows["virtio"]["iotlb_hit_rate"] is None
    c = list(csv.DictReader(io.StringIO(run_cli("compare", "--packets", "300", "--format", "csv", check_rc=0).stdout)))
    assert [r["variant"] for r in c] == VARIANTS
    for r in c:
        assert float(r["exits_per_packet"]) == rows[r["variant"]]["exits_per_packet"]
        assert int(r["p50_ns"]) == rows[r["variant"]]["p50_ns"]
    md = run_cli("compare", "--packets", "300", "--format", "markdown", check_rc=0).stdout.splitlines()
    table = [line for line in md if line.startswith("|")]
    head = [x.strip() for x in table[0].strip("|").split("|")]
    body = [[x.strip() for x in line.strip("|").split("|")] for line in table[2:]]
    assert head[0] == "variant" and [b[0] for b in body] == VARIANTS
    assert float(body[0][head.index("exits/pkt")]) == round(rows["emulation"]["exits_per_packet"], 3)


def test_compare_table_and_bad_input():
    out = run_cli("compare", "--packets", "200", "--preset", "line-rate", check_rc=0).stdout
    for v in VARIANTS:
        assert v in out
    assert "exits by reason" in out and "EPT_MISCONFIG" in out
    p = run_cli("compare", "--format", "xml")
    assert p.returncode == 2 and "table" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("compare", "--preset", "nope")
    assert p.returncode == 2 and "unknown preset" in p.stderr


def test_compare_shows_cpu_cost_faults_and_every_exit_reason_as_columns():
    j = json.loads(run_cli("compare", "--preset", "rogue-dma", "--packets", "600", "--format", "json",
                           check_rc=0).stdout)
    rows = {r["variant"]: r for r in j["results"]}
    # CPU per packet: SR-IOV best, virtio next, emulation worst (DOMAIN.md), even where exits/packet is close
    cpu = [rows[v]["cpu_ns_per_packet"] for v in ("emulation", "virtio", "virtio+vhost", "sriov", "sriov+posted")]
    assert cpu[0] > cpu[1] > cpu[2] > cpu[3] > cpu[4] > 0
    assert rows["sriov"]["iommu_faults"] == rows["sriov"]["dropped"] > 0 and rows["virtio"]["iommu_faults"] == 0
    c = list(csv.DictReader(io.StringIO(run_cli("compare", "--preset", "rogue-dma", "--packets", "600",
                                                "--format", "csv", check_rc=0).stdout)))
    for r in c:
        by = rows[r["variant"]]["exits_by_reason"]
        reasons = {k[len("exits_"):]: int(v) for k, v in r.items() if k.startswith("exits_") and k != "exits_per_packet"}
        assert {k: v for k, v in reasons.items() if v} == by
        assert int(r["iommu_faults"]) == rows[r["variant"]]["iommu_faults"]
    table = run_cli("compare", "--preset", "rogue-dma", "--packets", "600", check_rc=0).stdout
    assert "DMAR faults" in table and "CPU µs/pkt" in table
