"""`iovtui serve`: the app in a web browser, through textual-serve.

textual-serve runs a small aiohttp server; every browser tab that connects
gets its own app process, started from a shell command.  That command is this
same Python running ``-m iovtui`` with the app options given to ``serve``, so
the served app is exactly the one ``iovtui`` starts in a terminal.

textual-serve is an optional extra (``pip install '.[serve]'`` from a checkout); it is
imported only here, only when ``serve`` runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

INSTALL_HINT = ("textual-serve is not installed; install it with: pip install 'textual-serve==1.1.3' "
                "(or, from a checkout, pip install '.[serve]')")


def app_command(preset: str, technique: str, seed: int, speed: float,
                python: str | None = None, extra: Sequence[str] = ()) -> str:
    """The shell command textual-serve runs for each browser session."""
    if Path(preset).is_file():      # a preset file: the server may be asked from anywhere
        preset = str(Path(preset).resolve())
    argv = [python or sys.executable, "-m", "iovtui", "--preset", preset, "--technique", technique,
            "--seed", str(seed), "--speed", repr(speed), *extra]
    return _join(argv)


def _join(argv: Sequence[str]) -> str:
    if os.name == "nt":  # pragma: no cover - cmd.exe quoting
        return subprocess.list2cmdline(list(argv))
    # exec: the shell textual-serve starts becomes the app, so a signal to
    # the process it knows (see _stop_sessions) reaches the app itself
    return "exec " + shlex.join(argv)


def public_url(host: str, port: int) -> str:
    """The address to open: a wildcard bind is reached through loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def check_address(host: str, port: int) -> None:
    """Bind (and let go of) the address the server will listen on, so that a
    bad host or a port in use is one error before anything says "serving".
    Raises OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, type_, proto, _name, addr in infos:
        with socket.socket(family, type_, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)


def serve(command: str, host: str, port: int, url: str | None = None) -> int:
    """Serve ``command`` until Ctrl-C (or SIGTERM).  Returns the exit status.

    Raises ModuleNotFoundError (name ``textual_serve``) when the extra is
    missing and OSError when the address cannot be bound.
    """
    import textual_serve.server as ts
    from textual_serve.app_service import AppService

    url = url or public_url(host, port)
    check_address(host, port)
    sessions: set = set()          # the app process of every open browser tab

    class _AppService(AppService):
        async def _open_app_process(self, width: int = 80, height: int = 24):
            process = await super()._open_app_process(width, height)
            sessions.add(process)
            return process

        async def run(self) -> None:
            try:
                await super().run()
            finally:
                # wait for the app to end and close its pipes while the loop
                # still runs (else they are closed at exit, on a closed loop:
                # "Exception ignored ... Event loop is closed" on stderr)
                process = self._process
                if process is not None:
                    try:
                        await asyncio.wait_for(process.wait(), SESSION_GRACE_S)
                    except (asyncio.TimeoutError, asyncio.CancelledError):
                        if process.returncode is None:
                            process.kill()
                    transport = getattr(process, "_transport", None)
                    if transport is not None:
                        transport.close()
                    sessions.discard(process)

    # (textual-serve makes one AppService per browser tab, by this name)
    ts.AppService = _AppService

    class _Server(ts.Server):
        def request_exit(self) -> None:
            """Ctrl-C or SIGTERM: stop every tab's app as well as the HTTP
            server.  textual-serve stopped only the server and then waited
            (~30 s) for each session to end by itself, the process and its
            apps alive meanwhile; in a terminal Ctrl-C reaches the apps too
            (one process group), a SIGTERM to the server does not."""
            _stop_sessions(sessions)
            super().request_exit()

        def on_startup_message(self) -> None:
            print(f"iovtui: serving on {url} — open it in a browser; Ctrl-C stops the server", flush=True)

        async def on_startup(self, app) -> None:  # replaces textual-serve's banner
            self.on_startup_message()

        def initialize_logging(self) -> None:
            super().initialize_logging()
            # one multi-line log record per HTTP request drowns the address; warnings stay
            logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    server = _Server(command, host=host, port=port, title="iovtui", public_url=url)
    # textual-serve asks asyncio for the current loop; give it a fresh one
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        server.serve()
    finally:
        _stop_sessions(sessions, kill_after=SESSION_GRACE_S)
        asyncio.set_event_loop(None)
        if not loop.is_closed():
            loop.close()
        ts.AppService = AppService
    return 0


#: how long a browser session's app may take to end after SIGTERM before it is killed
SESSION_GRACE_S = 5.0


def _stop_sessions(sessions: set, kill_after: float | None = None) -> None:
    """SIGTERM to each session's app that is still running (the app ends as
    on ctrl+c); with ``kill_after``, wait that long for them and SIGKILL any
    left (an app cannot outlive its server)."""
    import signal
    import time

    def alive(proc) -> bool:
        if proc.returncode is not None:
            return False
        try:                               # (not reaped: asyncio's child watcher does that)
            ended = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:          # reaped already
            return False
        return ended is None

    for proc in list(sessions):
        if alive(proc):
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    if kill_after is None:
        return
    deadline = time.monotonic() + kill_after
    left = [p for p in sessions if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    for proc in left:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
