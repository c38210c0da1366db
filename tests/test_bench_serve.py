"""`iovtui serve` (browser, through textual-serve) and `iovtui bench`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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


def _descendants(pid: int) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found += [int(d), *_descendants(int(d))]
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc for the app processes")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stopped_by_a_signal_stops_every_browser_sessions_app(sig):
    """A signal to the server alone (kill, systemd, a supervisor): the
    server and the app of each open tab end, as a terminal's Ctrl-C (which
    reaches the whole process group) ends them."""
    pytest.importorskip("textual_serve")
    import asyncio

    import aiohttp

    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "iovtui", "serve", "--port", str(port)],
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    apps: list[int] = []

    async def session() -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws?width=100&height=30")
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the server never answered")
            drawn = b""
            while b"steady-stream" not in drawn:       # the app is up and has drawn its header
                m = await asyncio.wait_for(ws.receive(), 20)
                assert m.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), m
                drawn += m.data if isinstance(m.data, bytes) else m.data.encode()
            apps.extend(pid for pid in _descendants(p.pid) if _running(pid))
            assert apps, "no app process under the server"
            p.send_signal(sig)
            await asyncio.to_thread(p.wait, 40)

    try:
        asyncio.run(session())
        out, err = p.communicate(timeout=5)
        left = [pid for pid in apps if _running(pid)]
    finally:
        _stop(p)
        for pid in apps:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert p.returncode == 0, (p.returncode, err)
    assert left == [], "the app of a browser session outlived its server"
    assert err == "iovtui: server stopped\n", err


def test_serve_launches_the_app_with_this_python_and_its_options(tmp_path):
    from iovtui.serve import app_command

    cmd = app_command("line-rate", "sriov", 7, 2.5)
    cmd = cmd.removeprefix("exec ")           # (the shell becomes the app: a signal reaches it)
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
    assert "serving" not in p.stdout           # no claim before the address is bound


def test_serve_refuses_an_empty_or_unknown_host():
    pytest.importorskip("textual_serve")
    p = run_cli("serve", "--host", "", "--port", str(_free_port()))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--host is empty" in p.stderr, p.stderr
    assert "serving" not in p.stdout
    p = run_cli("serve", "--host", "no such host", "--port", str(_free_port()))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not an address" in p.stderr, p.stderr


def _web_session(resizes):
    """The app as textual-serve starts it for a browser tab (its web driver
    on pipes), sent these resizes and then the quit a closing tab sends, at once."""
    env = _env()
    env.update(TEXTUAL_DRIVER="textual.drivers.web_driver:WebDriver", TEXTUAL_FPS="60",
               TEXTUAL_COLOR_SYSTEM="truecolor", COLUMNS="155", ROWS="42")
    p = subprocess.Popen([sys.executable, "-m", "iovtui"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    import threading
    threading.Thread(target=lambda: [None for _ in iter(lambda: p.stdout.read(65536), b"")], daemon=True).start()

    def meta(d):
        b = json.dumps(d).encode()
        p.stdin.write(b"M" + len(b).to_bytes(4, "big") + b)
        p.stdin.flush()

    for h in resizes:
        meta({"type": "resize", "width": 155, "height": h})
    meta({"type": "quit"})
    return p


@pytest.mark.parametrize("resizes", [(), (50,)])
def test_a_browser_tab_closed_while_the_app_starts_ends_its_process(resizes):
    """A headless browser taking a screenshot resizes the page and closes it
    while the app is still starting; Textual's shutdown then spins on full
    repaints (ignoring SIGTERM), so the app ends its own process."""
    p = _web_session(resizes)
    try:
        rc = p.wait(timeout=15)
    finally:
        _stop(p)
    assert rc == 0


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
    assert "pip install 'textual-serve==1.1.3'" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def _positive_numbers(d, path=""):
    """Every number in ``d`` (except the listed ones) is positive; yields (path, value)."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _positive_numbers(v, f"{path}{k}.")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, dict):
                    yield from _positive_numbers(x, f"{path}{k}[{i}].")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{path}{k}", v


def test_bench_quick_json_has_every_section():
    p = run_cli("bench", "--quick", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert {"machine", "headless", "engine", "first_frame", "cpu", "memory"} <= set(d)
    assert d["quick"] is True
    assert {"cpu", "cores", "python", "os"} <= set(d["machine"])
    variants = [r["variant"] for r in d["headless"]["results"]]
    assert variants == ["emulation", "virtio", "virtio+vhost", "sriov", "sriov+posted"]
    for r in d["headless"]["results"]:
        assert {"packets_per_s", "delivered", "exits_per_packet"} <= set(r)
    assert {"engine_events_per_s", "heapq_events_per_s", "engine_vs_heapq"} <= set(d["engine"])
    assert {"iovtui_ms", "bare_ms", "ratio", "aim_ratio", "meets_aim"} <= set(d["first_frame"])
    assert {"paused_percent", "running_percent", "aim_paused_percent", "aim_running_percent"} <= set(d["cpu"])
    assert len(d["memory"]["runs"]) == 2
    assert all({"packets", "peak_rss_mib", "wall_s"} <= set(r) for r in d["memory"]["runs"])
    for section in ("headless", "first_frame", "cpu", "memory"):
        assert isinstance(d[section]["meets_aim"], bool)
    may_be_zero = {"cpu.paused_percent", "headless.results[4].exits_per_packet"}   # posted: no exits
    for path, v in _positive_numbers({k: d[k] for k in ("headless", "engine", "first_frame", "cpu", "memory")}):
        if path == "memory.growth_percent":       # either sign
            continue
        assert v >= 0 if path in may_be_zero else v > 0, (path, v)


def test_bench_ctrl_c_is_one_line_exit_130():
    p = subprocess.Popen([sys.executable, "-m", "iovtui", "bench", "--quick"], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # interrupt it while it waits for one of its measuring children (as a
        # Ctrl-C mostly would): poll until it has one, rather than guess a delay
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children")
            if kids.exists() and kids.read_text().split():
                break
            time.sleep(0.05)
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        _stop(p)
    assert p.returncode == 130, (p.returncode, err)
    assert "Traceback" not in err and err.count("\n") == 1, err


def test_bench_headless_sections_never_import_textual():
    code = ("import sys, iovtui.bench as b\n"
            "h = b.headless(300, 1); e = b.engine(2000, 1)\n"
            "assert len(h['results']) == 5 and e['events'] == 2000\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]\n"
            "sys.exit(1 if bad else 0)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_serve_passes_the_look_options_to_each_session():
    import shlex

    from iovtui.cli import build_parser, look_args
    from iovtui.serve import app_command

    args = build_parser().parse_args(["serve", "--theme", "light", "--palette", "colorblind", "--presenter",
                                      "--predict", "--technique", "sriov"])
    cmd = shlex.split(app_command(args.preset, args.technique, args.seed, args.speed, extra=look_args(args)))
    if cmd[0] == "exec":                                  # (the shell becomes the app)
        cmd = cmd[1:]
    assert cmd[1:3] == ["-m", "iovtui"]
    session = build_parser().parse_args(cmd[3:])          # what the browser session's app will see
    assert (session.theme, session.palette, session.presenter, session.predict) == ("light", "colorblind", True, True)
    assert session.technique == "sriov"
    plain = build_parser().parse_args(shlex.split(app_command("steady-stream", "virtio", 1, 1.0,
                                                               extra=look_args(build_parser().parse_args(["serve"]))))[4:])
    assert (plain.theme, plain.palette, plain.presenter, plain.predict) == ("dark", "default", False, False)


def test_the_install_hint_names_the_pinned_serve_extra():
    import tomllib

    from iovtui.serve import INSTALL_HINT

    extra = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    (pin,) = extra["project"]["optional-dependencies"]["serve"]
    assert f"pip install '{pin}'" in INSTALL_HINT


def test_bench_dense_compares_126_vms_with_one_at_line_rate_and_at_equal_load():
    """The dense host's CPU case: the aim's comparison (1 VM at line rate) and
    the equal-load one (1 VM at a port's line rate over its 63 VFs, what each
    of the 126 receives), events per packet and µs per event for each; the RSS
    case gives the floor a faithful run cannot go under."""
    from iovtui.bench import AIM_DENSE_TIME_RATIO, _render_dense, dense_per_vm_pps, dense_rss, dense_time

    assert round(dense_per_vm_pps()) == round(10e9 / ((1514 + 24) * 8) / 63)     # 12,901 pkt/s
    t = dense_time(300, 1)
    r = dense_rss(300)
    assert t["aim_ratio"] == AIM_DENSE_TIME_RATIO == 1.3
    for row in t["results"]:
        assert row["eq_ratio"] == round(row["dense_cpu_s"] / row["eq_one_cpu_s"], 3)
    for row in r["results"]:
        assert 1 < row["floor_ratio"] <= row["ratio"] + 0.05
    lines = _render_dense({"rss": r, "time": t, "setup": {"results": [], "aim_ratio": 1.2, "meets_aim": True}})
    i = next(i for i, ln in enumerate(lines) if ln.startswith("  at equal load per VM: 1 VM at 12,901 pkt/s"))
    assert [ln.split()[0] for ln in lines[i + 1:i + 4]] == ["emulation", "virtio", "sriov"]
    assert "the cost of the VM count itself" in lines[i + 4]
    assert lines[i - 1].startswith("  aim ≤ 1.3×")               # the aim's row is still there, above
