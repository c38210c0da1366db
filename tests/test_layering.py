import subprocess
import sys

from conftest import ROOT


def test_the_model_never_imports_the_ui():
    code = (
        "import pkgutil, importlib, sys, iovtui.sim\n"
        "for m in pkgutil.walk_packages(iovtui.sim.__path__, 'iovtui.sim.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]\n"
        "print(len([m for m in sys.modules if m.startswith('iovtui.sim')]), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert int(p.stdout.split()[0]) >= 15
