"""Follow a packet (``f``) and predict-then-reveal (``g``): headless through
the Driver, and in the app through Pilot."""

from __future__ import annotations

import pytest

from iovtui.sim.driver import Driver
from iovtui.sim.packet import parse_frame
from iovtui.sim.preset import load_preset
from iovtui.sim.trace import ListSink
from iovtui.sim.world import Simulation
from iovtui.ui.app import create_app


def make_driver(preset: str, tech: str, seed: int = 1) -> Driver:
    p = load_preset(preset)
    return Driver(lambda tr: Simulation(p, tech, seed=seed, packets=10**9, trace=tr))


def follow_one(d: Driver, max_steps: int = 3000):
    d.follow(True)
    for _ in range(max_steps):
        d.step()
        v = d.follower.view()
        if v.state in ("delivered", "dropped"):
            return v
    raise AssertionError("the followed frame never arrived")


# -- follow ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
def test_followed_frame_is_tracked_to_its_buffer(tech):
    d = make_driver("steady-stream", tech)
    for _ in range(40):                        # start mid-run, not at the first frame
        d.step()
    seen_before = d.follower.max_seen
    listing = ListSink()
    d.trace.add_sink(listing)
    v = follow_one(d)
    assert v.pkt is not None and v.pkt > seen_before and v.state == "delivered" and v.vm == "vm0"
    assert v.queue == "rx" and v.desc is not None and v.gpa is not None
    # the highlighted buffer really holds that frame: read it back from guest RAM
    vm = d.sim.vms[0]
    hdr = 12 if tech == "virtio" else 0
    frame = parse_frame(bytes(vm.mem.read(v.gpa + hdr, 1514)))
    assert frame["dst"] == vm.mac and frame["seq"] == v.pkt
    # every highlighted exit is an exit on its VM, between its arrival and its delivery
    evs = {e.seq: e for e in listing.events}
    first = min(e.t for e in listing.events if e.data.get("pkt") == v.pkt)
    done = next(e.t for e in listing.events if e.kind == "deliver" and e.data.get("pkt") == v.pkt)
    assert v.exit_count == len(v.exits)          # (mid-run, NAPI may take it in with no exit at all)
    for s in v.exits:
        e = evs[s]
        assert e.kind == "exit" and e.vm == v.vm and first <= e.t <= done
    # the journey names it, stage by stage, ending in its delivery
    assert v.journey[-1][2].startswith("vm0's stack receives frame #%d" % v.pkt)
    assert [s for _t, s, _m in v.journey if s][:1] == [2]


@pytest.mark.parametrize("tech,least", [("emulation", 5), ("virtio", 2), ("sriov", 2)])
def test_an_isolated_frame_shows_the_exits_that_brought_it_in(tech, least):
    # the first frame of a run arrives alone: its interrupt, EOI (and e1000's
    # register accesses) are the exits on its way
    v = follow_one(make_driver("steady-stream", tech))
    assert v.exit_count >= least and len(v.exits) == v.exit_count


def test_follow_under_sriov_shows_its_vf_and_iommu_translation():
    d = make_driver("steady-stream", "sriov")
    v = follow_one(d)
    vm = d.sim.vms[0]
    assert v.vf == "VF0" and v.rid == "02:10.0"
    assert v.hpa == vm.mem.hpa_base + v.gpa             # the IOMMU's answer for this VM's domain
    assert v.iotlb_hit is not None


def test_follow_with_posted_interrupts_sees_no_exit_on_its_way():
    d = make_driver("posted-interrupts", "sriov")
    v = follow_one(d)
    # the first frame finds the guest idle: the only exit on its way is the HLT it wakes
    # the vCPU from; no EXTERNAL_INTERRUPT and no EOI exit
    def exits(v):
        return [m for _t, _s, m in v.journey if " exits: " in m]
    assert v.state == "delivered" and v.exit_count <= 1
    assert all("HLT (12)" in m for m in exits(v)), v.journey
    v = follow_one(d)
    assert v.state == "delivered" and all("HLT (12)" in m for m in exits(v)), v.journey


def test_follow_a_frame_the_iommu_blocks():
    d = make_driver("rogue-dma", "sriov")
    for _ in range(60):
        v = follow_one(d)
        if v.state == "dropped":
            break
    else:
        raise AssertionError("no followed frame was blocked in 60 tries on rogue-dma")
    assert v.fault.startswith("DMAR: [DMA Write NO_PASID] Request device [02:10.0]")
    assert "IOMMU blocked" in v.drop_reason and v.hpa is None


@pytest.mark.parametrize("tech", ["sriov", "virtio"])
def test_the_followed_packet_moves_with_the_narration_not_ahead_of_it(tech):
    """When one action does several things at one instant, n narrates them
    one at a time; the follow view shows the stage of the narrated event."""
    d = make_driver("steady-stream", tech)
    d.follow(True)
    seen = []
    for _ in range(40):
        ev = d.step()
        fv = d.frame().follow
        seen.append((ev.seq, fv))
        if fv.pkt is not None and ev.data.get("pkt") == fv.pkt and ev.stage:
            assert fv.stage == ev.stage, (ev.msg, fv.stage)
    assert any(fv is not None and fv.stage for _s, fv in seen)
    # back and forth: the same views
    for i in range(39, 30, -1):
        d.step_back()
        assert d.frame().follow == seen[i - 1][1]
    for i in range(31, 40):
        d.step()
        assert d.frame().follow == seen[i][1]


def test_follow_survives_step_back_identically():
    d = make_driver("steady-stream", "virtio")
    d.follow(True)
    for _ in range(12):
        d.step()
    a = d.follower.view()
    d.step()
    d.step_back()
    assert d.follower.view() == a
    d.follow(False)
    assert d.publish().follow is None


# -- predict-then-reveal ------------------------------------------------------------------------

def ask_all(preset: str, tech: str, steps: int = 500, answer=lambda q: q.answer):
    d = make_driver(preset, tech)
    d.set_predict(True)
    frames = []
    d.subscribe(frames.append)
    asked = []
    for _ in range(steps):
        d.step()
        q = d.question
        if q is None:
            continue
        shown = frames[-1]                               # what the screen shows while asking
        assert shown.question is q and not shown.running
        before = shown.events_run
        r = d.answer(answer(q))
        after = frames[-1]                               # the reveal
        assert after.events_run == before + 1            # it runs exactly the step asked about
        assert after.question is None and after.reveal is r
        asked.append((q, r, shown, after))
    return d, asked


@pytest.mark.parametrize("preset,tech,kinds", [
    ("steady-stream", "emulation", {"register", "interrupt"}),
    ("steady-stream", "virtio", {"notify", "interrupt", "kick"}),
    ("steady-stream", "sriov", {"iommu", "interrupt"}),
    ("multi-tenant", "emulation", {"switch", "register", "interrupt"}),
    ("multi-tenant", "virtio", {"switch", "interrupt"}),
    ("multi-tenant", "sriov", {"switch", "iommu", "interrupt"}),
])
def test_questions_are_asked_before_and_answered_by_the_model(preset, tech, kinds):
    d, asked = ask_all(preset, tech)
    assert kinds <= {q.kind for q, *_ in asked}
    for q, r, shown, after in asked:
        assert r.right and r.chosen == q.answer
        # the state shown while asking is one action before (checked in ask_all); the
        # explanation is what that action did, seen in the reveal's new events
        new_msgs = {e.msg for e in after.events}
        for line in q.explanation:
            assert line in new_msgs
    assert d.quiz.score == (len(asked), len(asked))


@pytest.mark.parametrize("tech", ["emulation", "virtio", "sriov"])
def test_no_question_gives_its_own_answer(tech):
    """One VM: "which VM (or VF) gets this frame?" is not asked (its only
    choice besides a drop is the answer); with four it is, with every VM a
    choice.  The answer keys are digits, none of them a key of the main view."""
    _d, asked = ask_all("steady-stream", tech, steps=400)
    assert asked and "switch" not in {q.kind for q, *_ in asked}
    _d, asked = ask_all("multi-tenant", tech, steps=600)
    sw = [q for q, *_ in asked if q.kind == "switch"]
    assert sw and all(len(q.choices) == 5 for q in sw)         # four VMs, or dropped
    for q, *_ in asked:
        assert [k for k, _t in q.choices] == [str(i) for i in range(1, len(q.choices) + 1)]


def test_answers_follow_the_mechanics():
    # posted interrupts: the interrupt question's answer is "no exit"
    _d, asked = ask_all("posted-interrupts", "sriov", steps=300)
    irq = [q for q, *_ in asked if q.kind == "interrupt"]
    assert irq and all(q.choice_text(q.answer).startswith("no exit") for q in irq if "running" in q.prompt)
    assert all(q.choice_text(q.answer).startswith("no EXTERNAL_INTERRUPT") for q in irq if "halted" in q.prompt)
    assert any("running" in q.prompt for q in irq)
    # the rogue VF's DMA: some IOMMU question is answered with the fault
    _d, asked = ask_all("rogue-dma", "sriov", steps=1500)
    iommu = {q.choice_text(q.answer).split(" ")[0] for q, *_ in asked if q.kind == "iommu"}
    assert "blocks" in iommu
    # emulated registers: reads and the non-coalesced writes exit to QEMU in userspace,
    # a write to a coalesced register (RDT, ITR) is taken inside KVM (coalesced MMIO)
    _d, asked = ask_all("steady-stream", "emulation", steps=200)
    reg = [q for q, *_ in asked if q.kind == "register"]
    assert reg
    for q in reg:
        coalesced = "writes RDT" in q.prompt or "writes ITR" in q.prompt
        assert ("kernel" if coalesced else "userspace") in q.choice_text(q.answer), q.prompt
    assert any("writes RDT" in q.prompt for q in reg) and any("reads ICR" in q.prompt for q in reg)


def test_wrong_answers_count_and_asking_changes_nothing_in_the_run():
    def wrong(q):
        return next(k for k, _t in q.choices if k != q.answer)
    d, asked = ask_all("steady-stream", "virtio", steps=300, answer=wrong)
    assert asked and d.quiz.score == (0, len(asked)) and not any(r.right for _q, r, *_ in asked)
    # the same number of engine actions without predict mode gives the same state
    plain = make_driver("steady-stream", "virtio")
    eng = plain.sim.engine
    while eng.events_run < d.sim.engine.events_run:
        eng.step()
    assert plain.sim.summary() == d.sim.summary()


def test_running_in_predict_mode_stops_before_a_question():
    d = make_driver("steady-stream", "sriov")
    d.set_predict(True)
    d.running = True
    d._run_predicting(10**9)
    assert d.question is not None and not d.running
    n = d.sim.engine.events_run
    d.resume()                                # refused until answered
    assert not d.running and d.sim.engine.events_run == n
    d.answer(None)                            # skipped: the step runs, ungraded
    assert d.question is None and d.quiz.score == (0, 0) and d.sim.engine.events_run == n + 1


# -- in the app -------------------------------------------------------------------------------------

async def test_f_marks_the_packet_in_every_pane():
    app = create_app(load_preset("steady-stream"), "sriov", start_paused=True)
    async with app.run_test(size=(140, 44)) as pilot:
        assert not app.w_follow.display
        for _ in range(60):                      # used descriptors and all: ◆ means only the followed packet
            await pilot.press("n")
            await pilot.pause()
            before = app.export_screenshot()
            if "◐" in before:
                break
        assert "◐" in before and "◆" not in before
        await pilot.press("f")
        await pilot.pause()
        assert app.w_follow.display and "waiting for the next frame" in app.w_follow.text.plain
        for _ in range(20):
            await pilot.press("n")
        await pilot.pause()
        fv = app._applied.follow
        assert fv.pkt is not None
        assert f"frame #{fv.pkt}" in app.w_follow.text.plain
        ram = "\n".join(app.w_ram.render_line(y).text for y in range(app.w_ram.size.height))
        ring = "\n".join(app.w_ring.render_line(y).text for y in range(app.w_ring.size.height))
        assert "◆" in ram and f"frame #{fv.pkt}'s buffer" in ram
        assert f"◆ frame #{fv.pkt} · descriptor {fv.desc}" in ring
        nic = app.w_nic.render()
        iommu = app.w_iommu.render()
        from rich.console import Console
        c = Console(width=80, record=True)
        c.print(nic)
        c.print(iommu)
        out = c.export_text()
        assert "◆VF0" in out and "◆02:10.0" in out and f"◆ frame #{fv.pkt}: 02:10.0 GPA" in out
        # f again: a frame still in flight stops being followed; a finished one gives way to the next
        done = fv.state in ("delivered", "dropped")
        await pilot.press("f")
        await pilot.pause()
        after = app._applied.follow
        assert (after is not None and after.pkt is None) if done else after is None
        assert app.w_follow.display == done


async def _step_until_asked(pilot, app) -> None:
    """Step (n) until a question is posed, at most 40 steps."""
    from iovtui.ui.screens import QuestionScreen
    for _ in range(40):
        await pilot.press("n")
        await pilot.pause()
        if isinstance(app.screen, QuestionScreen):
            return


async def test_g_asks_then_reveals_and_keeps_score():
    from iovtui.ui.screens import QuestionScreen
    app = create_app(load_preset("steady-stream"), "sriov", start_paused=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("g")
        await _step_until_asked(pilot, app)
        scr = app.screen
        assert isinstance(scr, QuestionScreen)
        q = scr.question
        ran = app.driver.sim.engine.events_run
        await pilot.press(q.answer)
        await pilot.pause()
        assert scr.reveal is not None and scr.reveal.right
        assert app.driver.sim.engine.events_run == ran + 1
        text = str(scr.query_one("#question-text").render())
        assert "Right" in text and q.explanation[0][:30] in text
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, QuestionScreen)
        assert "predict 1/1" in app.w_header.render().plain


@pytest.mark.parametrize("tech", ["sriov", "emulation"])
async def test_answering_questions_never_repeats_an_exit_in_the_log(tech):
    """The question rewinds the run to just before its action; the exits
    already in the log stay there once, and the answered action's exits
    are added once."""
    from iovtui.ui.screens import QuestionScreen
    app = create_app(load_preset("steady-stream"), tech, start_paused=True, predict=True)
    async with app.run_test(size=(200, 50)) as pilot:
        asked = 0
        for _ in range(60):
            await pilot.press("n")
            await pilot.pause()
            if isinstance(app.screen, QuestionScreen):
                asked += 1
                await pilot.press(app.screen.question.answer)
                await pilot.pause()
                await pilot.press("enter")
                await pilot.pause()
        assert asked >= 3
        seqs = list(app.w_exits.seqs)
        assert seqs and len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
        exits = [e.seq for e in app.driver.sink.events if e.kind == "exit"]
        shown = app._applied.last_event.seq
        assert seqs == [x for x in exits if x <= shown]      # every exit so far, each once


async def test_q_quits_from_a_question_and_other_letters_do_nothing():
    from iovtui.ui.screens import QuestionScreen
    app = create_app(load_preset("steady-stream"), "virtio", start_paused=True, predict=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await _step_until_asked(pilot, app)
        scr = app.screen
        assert isinstance(scr, QuestionScreen) and "q" not in {k for k, _ in scr.question.choices}
        ran = app.driver.sim.engine.events_run
        await pilot.press("x")                       # not a choice: nothing happens
        await pilot.pause()
        assert scr.reveal is None and app.driver.sim.engine.events_run == ran and app.is_running
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_answer_keys_are_digits_and_main_keys_do_not_act_under_a_question():
    """b under a question neither answers it nor steps the run back; 1 answers
    (it does not switch the main run to emulation underneath); n after the
    reveal closes it and steps on."""
    from iovtui.ui.screens import QuestionScreen
    app = create_app(load_preset("steady-stream"), "sriov", start_paused=True, predict=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await _step_until_asked(pilot, app)
        scr = app.screen
        assert isinstance(scr, QuestionScreen)
        keys = [k for k, _t in scr.question.choices]
        assert keys[0] == "1"
        text = str(scr.query_one("#question-text").render())
        assert f"1–{keys[-1]} answers" in text and "  1  " in text
        ran = app.driver.sim.engine.events_run
        shown = app._applied.last_event.seq
        for key in ("b", "a", "c", "e"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is scr and scr.reveal is None, key
            assert app.driver.sim.engine.events_run == ran and app._applied.last_event.seq == shown, key
        await pilot.press("1")
        await pilot.pause()
        assert scr.reveal is not None and scr.reveal.chosen == "1"
        assert app.technique == "sriov"                      # 1 answered; it did not switch technique
        assert app.driver.sim.engine.events_run == ran + 1
        assert "n: continue" in str(scr.query_one("#question-text").render())
        revealed = app._applied.last_event.seq
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is not scr                        # closed, and the run stepped on:
        nxt = app.screen.question if isinstance(app.screen, QuestionScreen) else None
        assert nxt is not None or app._applied.last_event.seq > revealed    # to the next event (or question)


async def test_switching_away_from_the_presets_technique_says_so():
    app = create_app(load_preset("rogue-dma"), "sriov", start_paused=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        assert app.technique == "virtio"
        said = app.w_narration.text.plain
        assert "the preset rogue-dma is about SR-IOV (press 3)" in said and "on virtio" in said
        assert said.count("\n") == 0
    app = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        assert app.technique == "sriov" and "is about" not in app.w_narration.text.plain


SMALL_RAM = {"name": "small", "description": "4 MiB of RAM, 4096-entry rings",
             "vm": [{"name": "vm0", "mac": "52:54:00:00:00:01", "ram": "4 MiB"}],
             "sriov": {"ring_size": 4096}, "emulation": {"ring_size": 4096}}


async def test_a_technique_that_cannot_lay_out_the_preset_leaves_the_run_as_it_was():
    """4 MiB of guest RAM holds virtio's 256-entry rings but not a 4096-entry
    e1000 or 82599 ring: 1, 3 and c say so in one line and the virtio run
    goes on."""
    from iovtui.sim.preset import preset_from_dict
    from iovtui.ui.screens import CompareScreen
    app = create_app(preset_from_dict(SMALL_RAM, "<small>"), "virtio")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        sim = app.driver.sim
        for key, who in (("3", "SR-IOV cannot run"), ("1", "emulation cannot run"), ("c", "compare cannot run")):
            await pilot.press(key)
            await pilot.pause()
            said = app.w_narration.text.plain
            assert who in said and "vm[0].ram = 4 MiB" in said and said.count("\n") == 0, said
            assert app.technique == "virtio" and app.driver.sim is sim and app.is_running
            assert not isinstance(app.screen, CompareScreen) and app.driver.running


async def test_a_preset_picked_in_the_app_opens_on_its_technique():
    """p, rogue-dma: the run is SR-IOV (where its DMAR faults happen); a
    preset about every technique keeps the one in use."""
    from iovtui.ui.screens import PresetScreen
    app = create_app(load_preset("steady-stream"), "emulation", start_paused=True)
    async with app.run_test(size=(120, 40)) as pilot:
        for name, tech in (("rogue-dma", "sriov"), ("multi-tenant", "sriov"), ("interrupt-moderation", "emulation")):
            await pilot.press("p")
            await pilot.pause()
            assert isinstance(app.screen, PresetScreen)
            names = [n for n, _, _ in app.screen.presets]
            app.screen.query_one("#preset-list").highlighted = names.index(name)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert app.driver.sim.preset.name == name and app.technique == tech, name
            assert app.driver.sim.technique.name == tech
