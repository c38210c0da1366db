"""`iovtui serve` (browser, through textual-serve)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, run_cli


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
        p.communicate()


def test_serve_answers_with_the_textual_serve_page_and_stops_on_ctrl_c():
    pytest.importorskip("textual_serve")
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "iovtui", "serve", "--port", str(port), "--technique", "sriov"],
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and p.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200
                    page = r.read().decode("utf-8")
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        assert page is not None, ("server never answered", p.poll(), p.stderr.read() if p.poll() is not None else "")
        # the textual-serve page: its terminal client, the websocket it opens, the app's title
        assert "textual.js" in page
        assert f'data-session-websocket-url="ws://127.0.0.1:{port}/ws"' in page
        assert ">iovtui<" in page
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=8)
    finally:
        _stop(p)
    assert p.returncode in (0, 130), (p.returncode, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert err.count("\n") == 1, err
    assert f"http://127.0.0.1:{port}" in out


def test_serve_launches_the_app_with_this_python_and_its_options(tmp_path):
    from iovtui.serve import app_command

    cmd = app_command("line-rate", "sriov", 7, 2.5)
    assert cmd.startswith(sys.executable) or cmd.startswith(f"'{sys.executable}'")
    assert "-m iovtui --preset line-rate --technique sriov --seed 7 --speed 2.5" in cmd
    f = tmp_path / "my preset.toml"
    f.write_text("x")
    assert f"'{f}'" in app_command(str(f), "virtio", 1, 1.0)    # absolute and quoted


def test_serve_bad_input_is_one_line_exit_2():
    for args, needle in ((("--port", "0"), "1..65535"), (("--port", "65536"), "1..65535"),
                         (("--port", "http"), "port"), (("--technique", "kvm"), 'unknown technique "kvm"'),
                         (("--preset", "nope"), "unknown preset"), (("--speed", "0"), "speed")):
        p = run_cli("serve", *args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert needle in p.stderr, p.stderr


def test_serve_port_in_use_is_one_line():
    pytest.importorskip("textual_serve")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli("serve", "--port", str(port))
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_serve_without_textual_serve_says_how_to_install(tmp_path):
    # a module shadowing the package that refuses to import, as if it were absent
    (tmp_path / "textual_serve").mkdir()
    (tmp_path / "textual_serve" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'textual_serve'\", name='textual_serve')\n")
    env = _env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    p = subprocess.run([sys.executable, "-m", "iovtui", "serve"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "pip install 'iovtui[serve]'" in p.stderr and p.stderr.count("\n") == 1, p.stderr
