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
    return shlex.join(argv)


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
    from textual_serve.server import Server

    url = url or public_url(host, port)
    check_address(host, port)

    class _Server(Server):
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
        asyncio.set_event_loop(None)
        if not loop.is_closed():
            loop.close()
    return 0
