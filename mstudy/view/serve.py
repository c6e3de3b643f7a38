"""Serving the viewer: a socket on 127.0.0.1 (a free port for port 0), the URL printed, the
app run by uvicorn until Ctrl-C or SIGTERM."""

from __future__ import annotations

import socket
import sys
import webbrowser
from typing import IO

from mstudy.sinks.base import import_optional
from mstudy.view.outputs import ProbeFolder, StudyOutputs

__all__ = ["HOST", "serve"]

HOST = "127.0.0.1"
"""The only address served: the page is for this machine's user."""


def serve(
    target: StudyOutputs | ProbeFolder,
    *,
    port: int = 0,
    open_browser: bool = False,
    refresh_s: float = 2.0,
    out: IO[str] | None = None,
) -> None:
    """Serve ``target``'s pages on ``127.0.0.1:port`` until interrupted.

    Prints ``mstudy view: serving ... at http://127.0.0.1:PORT/`` once the socket listens
    (connections made from then on are answered). OSError when the port is taken.
    """
    uvicorn = import_optional("uvicorn", "view", "mstudy view")
    import_optional("starlette", "view", "mstudy view")
    from mstudy.view.app import build_app

    app = build_app(target, refresh_s=refresh_s)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
        url = f"http://{HOST}:{sock.getsockname()[1]}/"
        print(
            f"mstudy view: serving {target.title} at {url} (Ctrl-C stops)",
            file=out or sys.stdout,
            flush=True,
        )
        if open_browser:
            webbrowser.open(url)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
