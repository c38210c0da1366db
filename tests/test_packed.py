"""The virtio 1.1 packed virtqueue (virtio.ring = "packed"), against the
layout in linux/virtio_ring.h and the rules of virtio 1.1 section 2.7."""
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from iovtui.sim.memory import GuestMemory
from iovtui.sim.preset import load_preset
from iovtui.sim.trace import ListSink, Trace
from iovtui.sim.virtqueue import Virtqueue
from iovtui.sim.virtqueue_packed import (VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
                                         VRING_PACKED_EVENT_F_WRAP_CTR, VRING_PACKED_EVENT_FLAG_DESC,
                                         VRING_PACKED_EVENT_FLAG_DISABLE, VRING_PACKED_EVENT_FLAG_ENABLE,
                                         PackedVirtqueue)
from iovtui.sim.world import Simulation

HEADER = Path("/usr/include/linux/virtio_ring.h")
AVAIL = 1 << 7
USED = 1 << 15
WRITE = 2


def mem():
    return GuestMemory("vm", 4 << 20, 0x1_0000_0000)


def flags_at(q, slot):
    return struct.unpack_from("<H", q.mem.ram, q.desc + 16 * slot + 14)[0]


def desc_at(ram, base, slot):
    return struct.unpack_from("<QIHH", ram, base + 16 * slot)      # addr, len, id, flags


def summary(*args):
    return json.loads(run_cli("run", "--technique", "virtio", "--json", *args, check_rc=0).stdout)


# -- constants and bytes -----------------------------------------------------------------------
def test_constants_match_the_header():
    assert (VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED, VRING_PACKED_EVENT_F_WRAP_CTR) == (7, 15, 15)
    assert (VRING_PACKED_EVENT_FLAG_ENABLE, VRING_PACKED_EVENT_FLAG_DISABLE, VRING_PACKED_EVENT_FLAG_DESC) == (0, 1, 2)
    if HEADER.exists():
        text = HEADER.read_text()
        for name, val in [("VRING_PACKED_DESC_F_AVAIL", 7), ("VRING_PACKED_DESC_F_USED", 15),
                          ("VRING_PACKED_EVENT_FLAG_ENABLE", 0), ("VRING_PACKED_EVENT_FLAG_DISABLE", 1),
                          ("VRING_PACKED_EVENT_FLAG_DESC", 2), ("VRING_PACKED_EVENT_F_WRAP_CTR", 15)]:
            m = re.search(rf"#define\s+{name}\s+(0x[0-9a-f]+|\d+)", text)
            assert m and int(m.group(1), 0) == val, name


def test_driver_and_device_write_the_descriptor_bytes():
    m = mem()
    q = PackedVirtqueue(m, "rx", 300, event_idx=True)
    bid = q.add_buf(0x12345678, 1536, True, "tok")
    raw = bytes(m.ram[q.desc:q.desc + 16])
    assert raw[:8] == (0x12345678).to_bytes(8, "little")               # __le64 addr @0
    assert raw[8:12] == (1536).to_bytes(4, "little")                   # __le32 len @8
    assert raw[12:14] == bid.to_bytes(2, "little")                     # __le16 id @12
    assert raw[14:16] == (AVAIL | WRITE).to_bytes(2, "little")         # AVAIL = wrap 1, USED = 0
    assert q.pop() == (bid, 0x12345678, 1536, AVAIL | WRITE)
    q.push_n([(bid, 1000)])
    addr, ln, did, fl = desc_at(m.ram, q.desc, 0)
    # the device wrote id and len back in place, flags AVAIL = USED = its wrap counter, WRITE gone
    assert (addr, ln, did, fl) == (0x12345678, 1000, bid, AVAIL | USED)
    assert q.get_buf() == ("tok", 1000, bid)


def test_dump_ram_layout_and_bytes(tmp_path):
    d = tmp_path / "dump"
    run_cli("run", "--preset", "packed-ring", "--packets", "400", "--dump-ram", str(d), check_rc=0)
    layout = json.loads((d / "layout.json").read_text())
    ram = (d / "vm0.ram").read_bytes()
    qs = {q["name"]: q for q in layout["queues"]}
    rx = qs["rx"]
    assert rx["kind"] == "virtio-packed" and rx["size"] == 300 and rx["event_idx"] is True and rx["hdr_len"] == 12
    assert "avail_gpa" not in rx and "used_gpa" not in rx
    assert rx["desc_gpa"] % 16 == 0 and rx["driver_event_gpa"] % 4 == 0 and rx["device_event_gpa"] % 4 == 0
    # the event areas lie outside the ring, on their own cache lines
    ring_end = rx["desc_gpa"] + 16 * 300
    assert rx["driver_event_gpa"] >= ring_end and rx["device_event_gpa"] >= rx["driver_event_gpa"] + 4
    assert rx["driver_event_gpa"] // 64 != rx["device_event_gpa"] // 64
    off_wrap, flags = struct.unpack_from("<HH", ram, rx["driver_event_gpa"])
    assert flags in (0, 1, 2) and (off_wrap & 0x7FFF) < 300
    mac = bytes.fromhex(layout["vms"][0]["mac"].replace(":", ""))
    used = [desc_at(ram, rx["desc_gpa"], i) for i in range(300)]
    frames = [(a, ln) for a, ln, _id, fl in used if bool(fl & AVAIL) == bool(fl & USED) and ln]
    assert frames and all(ram[a + 12:a + 18] == mac for a, _ln in frames)
    # buffer ids come from the driver's free list (LIFO), so after the first lap they are not the slots
    assert any(bid != i for i, (_a, _l, bid, fl) in enumerate(used) if fl)


# -- wrap counters ----------------------------------------------------------------------------
def test_wrap_counters_flip_and_the_bits_follow():
    m = mem()
    q = PackedVirtqueue(m, "tx", 5, event_idx=False)     # any size: 5 is not a power of two
    for k in range(5):
        q.add_buf(0x1000 * (k + 1), 64, False, k)
    assert q.avail_wrap_counter == 0 and q.next_avail_idx == 0
    assert all(flags_at(q, i) == AVAIL for i in range(5))              # lap 1: AVAIL 1, USED 0
    heads = [q.pop() for _ in range(5)]
    q.push_n([(h[0], 0) for h in heads])
    assert q.dev_used_wrap_counter == 0 and all(flags_at(q, i) == AVAIL | USED for i in range(5))
    assert [q.get_buf()[0] for _ in range(5)] == list(range(5)) and q.used_wrap_counter == 0
    q.add_buf(0x9000, 64, False, "lap2")
    assert flags_at(q, 0) == USED                                       # lap 2: AVAIL 0, USED 1: the device's
    assert q.pop()[1] == 0x9000
    q.push_n([(desc_at(m.ram, q.desc, 0)[2], 0)])
    assert flags_at(q, 0) == 0                                          # used in lap 2: AVAIL = USED = 0
    assert q.get_buf()[0] == "lap2"


def test_wrap_flips_are_narrated(tmp_path):
    t = tmp_path / "t.jsonl"
    run_cli("run", "--preset", "packed-ring", "--packets", "900", "--trace", str(t), check_rc=0)
    msgs = [json.loads(l).get("msg", "") for l in t.read_text().splitlines()]
    assert any("the driver's avail wrap counter flips 1 → 0" in m for m in msgs)
    assert any("the driver's avail wrap counter flips 0 → 1" in m for m in msgs)
    assert any("the device's used wrap counter flips 1 → 0" in m for m in msgs)
    assert any("its used wrap counter flips 1 → 0" in m and "driver took" in m for m in msgs)
    # which bit and why the slot changed hands
    assert any("with AVAIL = 0, USED = 1" in m and "→ the device's" in m for m in msgs)
    assert any("sets AVAIL = USED = 0" in m and "→ the driver's" in m for m in msgs)
    assert not any("avail.idx" in m or "used.idx" in m for m in msgs)       # split words do not leak in


# -- out-of-order completion ---------------------------------------------------------------------
def test_ids_can_come_back_out_of_order():
    """A device may complete buffers in any order (QEMU's virtio-blk does;
    vhost-net's zerocopy TX marks DMA done out of order, though it publishes in
    order): the driver finds each buffer by the id the device wrote, not the slot."""
    m = mem()
    q = PackedVirtqueue(m, "rx", 8, event_idx=True)
    ids = [q.add_buf(0x1000 * (k + 1), 512, True, f"buf{k}") for k in range(3)]
    popped = [q.pop() for _ in range(3)]
    assert [p[0] for p in popped] == ids == [0, 1, 2]
    q.push_n([(2, 20), (0, 10), (1, 11)])                # completed in the order 2, 0, 1
    assert [desc_at(m.ram, q.desc, s)[2] for s in range(3)] == [2, 0, 1]    # slot k holds the k-th completion
    got = [q.get_buf() for _ in range(3)]
    assert got == [("buf2", 20, 2), ("buf0", 10, 0), ("buf1", 11, 1)]
    # the free list is LIFO: the next buffer takes the id freed last
    assert q.add_buf(0x9000, 512, True, "next") == 1
    assert desc_at(m.ram, q.desc, 3)[2] == 1


# -- event suppression ----------------------------------------------------------------------------
def _ring(kind, num=8, event_idx=True):
    q = (PackedVirtqueue if kind == "packed" else Virtqueue)(mem(), "rx", num, event_idx=event_idx)
    return q


def test_device_event_modes_decide_kicks():
    q = _ring("packed")
    q.add_buf(0x1000, 64, True, 0)
    assert q.kick_prepare() is True                         # ENABLE (the initial flags)
    q.disable_notify()                                      # DISABLE: the device polls
    assert struct.unpack_from("<HH", q.mem.ram, q.device_event) == (0, VRING_PACKED_EVENT_FLAG_DISABLE)
    q.add_buf(0x2000, 64, True, 1)
    assert q.kick_prepare() is False
    q.pop(), q.pop()
    assert q.enable_notify() is False                       # DESC at the next slot the device reads, wrap 1
    assert struct.unpack_from("<HH", q.mem.ram, q.device_event) == (2 | 1 << 15, VRING_PACKED_EVENT_FLAG_DESC)
    q.add_buf(0x3000, 64, True, 2)                          # slot 2 made available: the event is reached
    assert q.kick_prepare() is True
    q.add_buf(0x4000, 64, True, 3)                          # slot 3: already past it
    assert q.kick_prepare() is False


def test_driver_event_modes_decide_interrupts():
    q = _ring("packed")
    for k in range(4):
        q.add_buf(0x1000 * (k + 1), 64, True, k)
    for _ in range(4):
        q.pop()
    q.push_n([(0, 1)])
    assert q.should_notify() is True                        # ENABLE
    q.disable_cb()
    assert struct.unpack_from("<H", q.mem.ram, q.driver_event + 2)[0] == VRING_PACKED_EVENT_FLAG_DISABLE
    struct.pack_into("<H", q.mem.ram, q.driver_event, 1 | 1 << 15)   # an offset DESC would fire at ...
    q.push_n([(1, 1)])
    assert q.should_notify() is False                       # ... but the flags say DISABLE
    q.get_buf(), q.get_buf()
    q.enable_cb_prepare()                                   # DESC at last_used = slot 2, wrap 1
    assert struct.unpack_from("<HH", q.mem.ram, q.driver_event) == (2 | 1 << 15, VRING_PACKED_EVENT_FLAG_DESC)
    q.push_n([(2, 1)])
    assert q.should_notify() is True                        # slot 2 used: the event is reached
    q.push_n([(3, 1)])
    assert q.should_notify() is False                       # past it


def _stale_event_interrupts(kind: str, num: int = 16, laps: int = 4) -> int:
    """The driver arms its event (at the next used buffer); the first
    interrupt schedules NAPI, which disables callbacks (after the device
    triggered: the shadow only, RAM keeps the event: Linux 6.1) and then
    polls without re-arming.  The device completes one buffer at a time.
    How many interrupts does it raise?"""
    q = _ring(kind, num)
    for k in range(num):
        q.add_buf(0x1000 * (k + 1), 64, True, k)
    q.disable_cb()                         # a NAPI poll has run once: packed starts in ENABLE and
    q.enable_cb_prepare()                  # turns to DESC here; event: the next used buffer (slot 0, wrap 1)
    irqs = []
    for i in range(num * laps):
        head = q.pop()[0]
        q.push_n([(head, 64)])
        if q.should_notify():
            irqs.append(i)
            if q.interrupt():              # vring_interrupt: event_triggered
                q.disable_cb()             # virtqueue_napi_schedule
        q.get_buf()                        # NAPI takes it; callbacks stay off
        q.add_buf(0x1000, 64, True, 0)
    return irqs


def test_a_stale_desc_event_fires_again_every_second_lap_unlike_split():
    """Spec 2.7.10 vs 2.6.7: the packed ring's event is a ring position (an
    offset and a wrap counter), the split ring's a free-running 16-bit index.
    An event left behind fires again when the device comes back to that slot
    with the same wrap counter, two laps later (completions 0 and 32 of a
    16-slot ring); the split ring's only after 65,536 more buffers.  And each
    time the device's used index wraps QEMU can no longer compare indexes
    (virtqueue_packed_flush: signalled_used_valid = false) and signals once
    (completions 15, 31, 47, 63)."""
    assert _stale_event_interrupts("split") == [0]
    assert _stale_event_interrupts("packed") == [0, 15, 31, 32, 47, 63]


def test_device_disable_with_event_idx_differs_from_split():
    """With EVENT_IDX a busy split device (vhost) leaves avail_event stale and
    a driver that crosses it still kicks; the packed device writes DISABLE
    (virtio_queue_packed_set_notification), so no kick at all."""
    out = {}
    for kind in ("split", "packed"):
        q = _ring(kind, 16)
        q.add_buf(0x1000, 64, True, 0)
        q.kick_prepare()
        q.enable_notify()                  # the device asks for a kick at the next buffer ...
        q.pop()
        q.disable_notify()                 # ... then starts polling
        q.add_buf(0x2000, 64, True, 1)
        out[kind] = q.kick_prepare()
    assert out == {"split": True, "packed": False}


def test_json_kicks_and_interrupts_come_from_the_event_areas(tmp_path):
    """The figures are the packed rules' (not a copy of split's): on the same
    seed they differ, and every suppressed one is traced to an event area."""
    t = tmp_path / "t.jsonl"
    sp = summary("--preset", "small-packets", "--packets", "3000")
    pk = summary("--preset", "small-packets", "--packets", "3000", "--set", "virtio.ring=packed",
                 "--trace", str(t))
    assert sp["packets"]["delivered"] == pk["packets"]["delivered"] == 3000
    assert (sp["notifications"]["device_notify"], sp["notifications"]["kicks"]) != \
        (pk["notifications"]["device_notify"], pk["notifications"]["kicks"])
    events = [json.loads(l) for l in t.read_text().splitlines()]
    irq_no = [e["msg"] for e in events if e.get("kind") == "irq" and e.get("notified") is False]
    kick_no = [e["msg"] for e in events if e.get("kind") == "kick" and e.get("kicked") is False]
    n = pk["notifications"]
    assert len(irq_no) == n["device_notify_suppressed"] and len(kick_no) == n["kicks_suppressed"]
    assert all("driver event" in m for m in irq_no) and all("device event" in m for m in kick_no)
    assert sum(1 for e in events if e.get("kind") == "kick" and e.get("kicked")) == n["kicks"] + 1   # + set-up


@pytest.mark.parametrize("opts", [
    (), ("virtio.vhost=false",), ("virtio.event_idx=false",), ("virtio.vhost=false", "virtio.event_idx=false"),
    ("virtio.mrg_rxbuf=false",), ("virtio.queue_size=257",), ("virtio.queue_size=1000", "virtio.vhost=false"),
])
def test_every_setting_carries_every_frame(opts):
    sets = [a for o in opts for a in ("--set", o)]
    d = summary("--preset", "event-idx-off", "--packets", "1500", "--set", "virtio.ring=packed", *sets)
    assert d["options"]["ring"] == "packed" and d["corrupt_frames"] == 0
    assert d["packets"]["delivered"] + d["packets"]["dropped"] == d["packets"]["offered"]
    assert d["packets"]["delivered"] > 1000


# -- the split ring is unchanged -------------------------------------------------------------------
def test_counting_ring_lines_changes_nothing_of_split(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    plain = summary("--preset", "event-idx-off", "--packets", "800", "--dump-ram", str(a))
    counted = summary("--preset", "event-idx-off", "--packets", "800", "--dump-ram", str(b),
                      "--set", "virtio.count_ring_lines=true")
    lines = counted.pop("ring_cache_lines")
    assert lines["ring"] == "split" and lines["rx"] > 0 and lines["tx"] > 0
    assert plain == counted and "ring_cache_lines" not in plain
    assert (a / "vm0.ram").read_bytes() == (b / "vm0.ram").read_bytes()
    assert plain["options"]["ring"] == "split"


# -- cache lines ----------------------------------------------------------------------------------
def test_compare_virtio_rings():
    p = run_cli("compare", "--virtio-rings", "--preset", "event-idx-off", "--packets", "1500", "--format", "json",
                check_rc=0)
    rows = {r["variant"]: r for r in json.loads(p.stdout)["results"]}
    assert set(rows) == {"virtio split", "virtio packed", "virtio+vhost split", "virtio+vhost packed"}
    for backend in ("virtio", "virtio+vhost"):
        s, k = rows[f"{backend} split"], rows[f"{backend} packed"]
        assert (s["ring"], k["ring"]) == ("split", "packed") and s["host"] == k["host"]
        assert s["delivered"] == k["delivered"]
        # the packed ring's point: fewer distinct cache lines of ring memory written per packet
        assert 0 < k["ring_lines_per_packet"] < s["ring_lines_per_packet"]
        assert k["ring_lines_rx"] < s["ring_lines_rx"] and k["ring_lines_tx"] < s["ring_lines_tx"]
        assert {"kicks_per_packet", "interrupts_per_packet"} <= set(k)
    t = run_cli("compare", "--virtio-rings", "--preset", "packed-ring", "--packets", "600", check_rc=0).stdout
    assert "ring lines/pkt" in t and "virtio+vhost packed" in t
    assert re.search(r"virtio split\s+no APICv\s+256\b", t) and re.search(r"virtio packed\s+no APICv\s+300\b", t)


# -- bad input ------------------------------------------------------------------------------------
def _one_line(p, *words):
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_ring_values(tmp_path):
    _one_line(run_cli("run", "--set", "virtio.ring=ring"), "virtio.ring", "split | packed")
    f = tmp_path / "p.toml"
    f.write_text('name = "p"\ndescription = "d"\n[virtio]\nring = 3\n')
    _one_line(run_cli("run", "--preset", str(f)), "virtio.ring = 3", "split | packed")
    _one_line(run_cli("run", "--set", "virtio.queue_size=300"), "virtio.queue_size = 300", "power of two",
              "packed")
    _one_line(run_cli("run", "--set", "virtio.queue_size=2048"), "virtio.queue_size = 2048", "256..1024")
    _one_line(run_cli("run", "--set", "virtio.ring=packed", "--set", "virtio.queue_size=32769"),
              "virtio.queue_size = 32769", "256..32768")
    for size in ("300", "1025"):   # any size, past split's 1,024 too
        run_cli("run", "--set", "virtio.ring=packed", "--set", f"virtio.queue_size={size}", "--packets", "50",
                check_rc=0)


# -- the C reader ---------------------------------------------------------------------------------
def test_c_program_walks_a_packed_dump(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C reader of the packed ring cannot be built")
    exe = tmp_path / "walk_packed"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(ROOT / "tests" / "c" / "walk_packed.c")], check=True, capture_output=True)
    d = tmp_path / "dump"
    run_cli("run", "--preset", "packed-ring", "--until", "3ms", "--dump-ram", str(d), check_rc=0)
    ok = subprocess.run([str(exe), str(d)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    rx_line = next(ln for ln in ok.stdout.splitlines() if ln.startswith("vm0 rx:"))
    assert re.search(r"· (\d+) RX frames for 52:54:00:00:00:01", rx_line).group(1) != "0"
    layout = json.loads((d / "layout.json").read_text())
    rx = next(q for q in layout["queues"] if q["name"] == "rx")
    ram = bytearray((d / "vm0.ram").read_bytes())
    m = re.search(r"device next (\d+)", rx_line)
    dev_next = int(m.group(1))
    # one byte: the USED bit of a slot the device has not reached yet (a used slot out of order)
    bad = bytearray(ram)
    bad[rx["desc_gpa"] + 16 * ((dev_next + 3) % rx["size"]) + 15] ^= 0x80
    # one byte: the destination MAC of a used RX buffer
    bad2 = bytearray(ram)
    used_slot = (dev_next - 1) % rx["size"]
    addr, ln, _id, fl = desc_at(ram, rx["desc_gpa"], used_slot)
    assert bool(fl & AVAIL) == bool(fl & USED) and ln
    bad2[addr + rx["hdr_len"] + 5] ^= 0x01
    for data, word in ((bad, "lies outside the run"), (bad2, "not 52:54:00:00:00:01")):
        (d / "vm0.ram").write_bytes(data)
        p = subprocess.run([str(exe), str(d)], capture_output=True, text=True)
        assert p.returncode == 1 and "FAIL:" in p.stdout and word in p.stdout, p.stdout


# -- the app --------------------------------------------------------------------------------------
async def test_o_toggles_split_and_packed():
    from iovtui.ui.app import create_app

    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("o")
        await pilot.pause(0.1)
        assert a.driver.sim.technique.opts["ring"] == "packed"
        assert "packed ring" in str(a.w_header.text)
        await pilot.press("n", "n", "n")
        await pilot.pause(0.1)
        ring = a.w_ring.ring()
        assert ring.kind == "virtio-packed" and ring.columns[:2] == ("slot", "id")
        assert dict(ring.marks)["driver next"].endswith("w0")          # 256 posted: the counter flipped
        text = "".join(a.w_ring.render_line(y).text for y in range(8))
        assert "virtio-packed" in text and "driver next" in text
        await pilot.press("o")
        await pilot.pause(0.1)
        assert a.driver.sim.technique.opts["ring"] == "split" and "packed ring" not in str(a.w_header.text)
        await pilot.press("1", "o")
        await pilot.pause(0.1)
        assert "applies to virtio" in str(a.w_narration.text)
        cmds = {c.title for c in a.get_system_commands(a.screen)}
        assert "Split ⇄ packed virtqueue (virtio)" in cmds
        assert any(k == "o" for k, _d in a.KEY_HELP)


async def test_compare_screen_shows_split_beside_packed():
    from iovtui.ui.app import create_app

    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(160, 45)) as pilot:
        await pilot.press("c")
        await pilot.pause(0.2)
        scr = a.screen
        await pilot.press("o")
        await pilot.pause(0.2)
        scr.driver.pause()
        scr.driver.advance(20_000_000)
        f = scr.driver.publish()
        await pilot.pause(0.2)
        assert [c.label.endswith(("split ring)", "packed ring)")) for c in f.columns] == [True, True]
        text = "\n".join(scr.w_grid.lines())
        assert text.count("ring lines/packet") == 2
        lines = [c.summary["ring_cache_lines"]["per_packet"] for c in f.columns]
        assert lines[1] < lines[0]
        await pilot.press("o")
        await pilot.pause(0.2)
        assert len(scr.driver.publish().columns) == 3


def test_ring_view_and_hex_annotations():
    from iovtui.ui.screens.hexview import annotate_page

    p = load_preset("packed-ring")
    s = Simulation(p, "virtio", seed=1, packets=40)
    s.run()
    q = s.technique.nics[0].rxq
    v = next(r for r in s.technique.ring_views() if r.name == "rx")
    assert v.kind == "virtio-packed" and v.size == 300 and len(v.rows) == 300
    assert {"driver next", "driver used", "device next", "device used"} <= dict(v.marks).keys()
    assert "driver event" in v.note and "device event" in v.note
    assert set(v.owners) <= {"driver", "device", "used"} and "device" in v.owners
    page = q.desc & ~4095
    notes = annotate_page(s.technique, 0, page, bytes(s.vms[0].mem.ram[page:page + 4096]))
    assert any("packed desc[0]" in n and "AVAIL=" in n and "USED=" in n for _o, _l, n in notes)
    ev = q.driver_event & ~4095
    notes = annotate_page(s.technique, 0, ev, bytes(s.vms[0].mem.ram[ev:ev + 4096]))
    labels = [n for _o, _l, n in notes]
    assert any("driver event flags" in n for n in labels) and any("device event off_wrap" in n for n in labels)


def test_follow_marks_the_slot_that_holds_the_frame():
    """On the packed ring the followed frame's row is its slot (ids are the
    driver's own and differ from slots after the first lap)."""
    from iovtui.sim.driver import Driver
    from iovtui.sim.packet import parse_frame

    p = load_preset("packed-ring").with_options(traffic={"direction": "rx"})
    d = Driver(lambda tr: Simulation(p, "virtio", seed=1, packets=10**9, trace=tr))
    for _ in range(2500):                       # past the first lap of 300
        d.step()
    d.follow(True)
    for _ in range(3000):
        d.step()
        v = d.follower.view()
        if v.state == "delivered":
            break
    assert v.state == "delivered" and v.queue == "rx"
    q = d.sim.technique.nics[0].rxq
    addr, _ln, bid, _fl = q.read_desc(v.desc)
    assert addr == v.gpa                         # the marked row is the slot with the frame's buffer
    frame = parse_frame(bytes(d.sim.vms[0].mem.read(v.gpa + 12, 1514)))
    assert frame["seq"] == v.pkt


@pytest.mark.parametrize("size", [300, 2048])
async def test_o_keeps_a_packed_ring_the_split_ring_cannot_take(size, tmp_path):
    """o on a packed ring of a size QEMU's split virtio-net refuses (not a power
    of two, or past 1,024) says why and keeps the packed ring running."""
    from iovtui.ui.app import create_app

    f = tmp_path / "p.toml"
    f.write_text(f'name = "p"\ndescription = "d"\n[virtio]\nring = "packed"\nqueue_size = {size}\n'
                 '[[vm]]\nram = "64 MiB"\n')
    a = create_app(load_preset(str(f)), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.press("o")
        await pilot.pause(0.1)
        assert a.driver.sim.technique.opts["ring"] == "packed"
        assert f"{size:,}): staying on the packed ring" in str(a.w_narration.text)


def test_compare_virtio_rings_with_a_packed_ring_past_1024(tmp_path):
    """A packed ring of 3,000 slots beside the split ring QEMU allows nearest
    to it: 1,024 slots (a power of two at most 1,024), both delivering."""
    f = tmp_path / "p.toml"
    f.write_text('name = "p"\ndescription = "d"\n[virtio]\nring = "packed"\nqueue_size = 3000\n'
                 '[[vm]]\nram = "64 MiB"\n')
    out = run_cli("compare", "--virtio-rings", "--preset", str(f), "--packets", "300").stdout
    rows = [ln for ln in out.splitlines() if ln.strip().startswith("virtio")]
    assert len(rows) == 4
    for ln in rows:
        assert ("1,024" if " split " in ln else "3,000") in ln and ln.rstrip().endswith("300"), ln
