import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iovtui.sim.preset import load_preset, preset_from_dict
from iovtui.sim.world import Simulation

ROOT = Path(__file__).resolve().parent.parent

# Several tests press Ctrl-C (SIGINT) on the programs they start, as a user's
# terminal would.  A test run started in the background by a non-interactive
# shell has SIGINT ignored, and an ignored signal stays ignored across exec:
# give this process (and so its children) the ordinary Ctrl-C behaviour.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
TECHNIQUES = ("emulation", "virtio", "sriov")


def run_cli(*args, cwd=None, check_rc=None):
    """Run `python -m iovtui ARGS` as a user would."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", "iovtui", *args], cwd=cwd or ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout, p.stderr)
    return p


def make_preset(**sections):
    data = {"name": "t", "description": "test preset"}
    data.update(sections)
    return preset_from_dict(data, "<test>")


def four_vm_preset(**extra):
    vms = [{"name": f"vm{i}", "mac": f"52:54:00:00:00:0{i + 1}"} for i in range(4)]
    return make_preset(vm=vms, **extra)


@pytest.fixture
def steady():
    return load_preset("steady-stream")


def sim_for(preset, technique, packets=300, seed=1, trace=None):
    return Simulation(preset, technique, seed=seed, packets=packets, trace=trace)


def listed_sim(preset_name, technique, packets, **opts):
    """A seed-1 run of the named preset (``opts``: Preset.with_options) not yet
    run, and the list its trace collects every event in (set-up included)."""
    from iovtui.sim.trace import ListSink, Trace

    p = load_preset(preset_name)
    if opts:
        p = p.with_options(**opts)
    tr = Trace()
    sink = ListSink()
    tr.add_sink(sink)
    return sim_for(p, technique, packets=packets, trace=tr), sink
