"""A small OpenAI-compatible chat server for tests: deterministic, observable, able to misbehave.

It answers ``POST /v1/chat/completions`` with the last user message reversed word by word,
cut to ``max_tokens`` words (one word = one token) or at the first stop string, and reports
usage. ``GET /v1/models`` and ``GET /health`` answer too. It records every request (headers,
body, arrival time) and the number of requests in flight over time.

Misbehaviour is asked for by directives in the last user message (``@name`` or
``@name=value``, stripped before the reply is built), or server-wide through
:attr:`StubServer.default_directives`:

``@delay=S``              sleep S seconds before answering
``@status=CODE[xN]``      answer HTTP CODE (to the first N attempts of this prompt; all without N)
``@retry_after=V``        send ``Retry-After: V`` with error statuses (seconds or an HTTP date)
``@drop[=N]``             close the connection without an answer (first N attempts)
``@malformed[=N]``        answer 200 with a body that is not JSON (first N attempts)
``@empty[=N]``            answer 200 with ``"choices": []`` (first N attempts)
``@length``               report ``finish_reason: "length"``
``@nousage``              leave ``usage`` out
``@echo_auth``            answer 400 quoting the Authorization header (a careless server)

Attempts are counted per prompt (the last user message), so "fail twice, then succeed" works
across the client's retries.

A :class:`FaultMix` (``StubServer.faults``) injects faults at given rates, server-wide: each
attempt's fault is a pure function of (seed, prompt, attempt number), so a run's faults do not
depend on timing or request order, and a prompt that fails on attempt 1 may pass on attempt 2.
A ``dead`` fraction of prompts fail on every attempt (so some requests exhaust their retries).
What was injected is counted in :attr:`StubState.faults` and on each :class:`RecordedRequest`.

``StubServer.go_down()`` (or ``down_after(n)``: after the n-th successful answer) takes the
server down for good: the port stops listening and every open connection is cut.
``restart()`` brings it back on the same port, keeping what it has seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_DIRECTIVE = re.compile(r"@(\w+)(?:=(\S+))?")


@dataclass
class RecordedRequest:
    """One request as the stub saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    started: float
    finished: float = 0.0
    status: int = 0
    attempt: int = 1
    fault: str | None = None
    prompt: str = ""


FAULTS = ("429", "500", "502", "503", "reset", "timeout", "malformed", "empty", "length")
"""What a :class:`FaultMix` can inject. ``length`` is an answer (cut short), not a failure."""

RETRYABLE_FAULTS = tuple(f for f in FAULTS if f != "length")


def _unit(*parts: object) -> float:
    """A number in [0, 1) that is a pure function of ``parts``."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class FaultMix:
    """Server-wide fault injection at per-attempt rates, deterministic per (prompt, attempt).

    ``rates`` maps names from :data:`FAULTS` to the probability that one attempt gets it (their
    sum must stay <= 1). ``dead`` is the fraction of prompts that fail on every attempt, with a
    fault drawn per attempt from :data:`RETRYABLE_FAULTS`. ``retry_after`` is sent with 429s
    (``None``: no header); ``timeout_delay`` is how long a ``timeout`` attempt sleeps before it
    answers, set it above the client's timeout.

    ``429``/``500``/``502``/``503``: that status with a JSON error body. ``reset``: the
    connection is reset (TCP RST) without an answer. ``timeout``: the answer comes too late.
    ``malformed``: 200 with a body that is not JSON. ``empty``: 200 with ``"choices": []``.
    ``length``: the reply cut to half its words with ``finish_reason: "length"``.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    dead: float = 0.0
    retry_after: str | None = "0"
    timeout_delay: float = 1.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rates) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {FAULTS}")
        if sum(self.rates.values()) > 1 or any(r < 0 for r in self.rates.values()):
            raise ValueError("fault rates must be >= 0 and sum to at most 1")

    @classmethod
    def uniform(cls, rate: float, **kwargs: object) -> FaultMix:
        """Every fault in :data:`FAULTS` at the same ``rate``."""
        return cls(dict.fromkeys(FAULTS, rate), **kwargs)  # type: ignore[arg-type]

    def is_dead(self, prompt: str) -> bool:
        return self.dead > 0 and _unit(self.seed, "dead", prompt) < self.dead

    def pick(self, prompt: str, attempt: int) -> str | None:
        """The fault for ``attempt`` (1-based) of ``prompt``, or None for a good answer."""
        if self.is_dead(prompt):
            index = int(_unit(self.seed, "dead", prompt, attempt) * len(RETRYABLE_FAULTS))
            return RETRYABLE_FAULTS[index]
        draw, edge = _unit(self.seed, prompt, attempt), 0.0
        for name in FAULTS:
            edge += self.rates.get(name, 0.0)
            if draw < edge:
                return name
        return None


@dataclass
class StubState:
    """What the server has seen; guarded by ``lock``. Kept across ``restart()``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    max_in_flight: int = 0
    trace: list[tuple[float, int]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    """Requests answered 200 with a usable reply (``length`` included)."""


def parse_directives(text: str) -> tuple[str, dict[str, str]]:
    """Split ``text`` into (text without directives, {name: value})."""
    found = {m.group(1): m.group(2) or "" for m in _DIRECTIVE.finditer(text)}
    clean = " ".join(_DIRECTIVE.sub(" ", text).split())
    return clean, found


def _limited(value: str, attempt: int) -> tuple[str, bool]:
    """``"503x2"`` -> ("503", attempt <= 2); ``"503"`` -> ("503", True)."""
    head, sep, times = value.partition("x")
    return head, not sep or attempt <= int(times)


def _count_applies(value: str, attempt: int) -> bool:
    """For ``@drop[=N]`` style directives: no value means always, N means the first N attempts."""
    return not value or attempt <= int(value)


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes: without this, Nagle's algorithm and the client's
    # delayed ACK add ~40 ms to every answer, as no real server (uvicorn, vLLM) does.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", ""):
            self._send_raw(200, b"")
        elif self.path.rstrip("/").endswith("/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model"} for m in self.server.models],
                },
            )
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def _cut(self) -> None:
        """Close the connection without an answer (FIN)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reset(self) -> None:
        """Reset the connection (TCP RST) without an answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.server.reset_on_close(self.connection)

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length", "0") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.server.down:
            self._cut()
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        rec = RecordedRequest(
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            started=time.monotonic(),
        )
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            state.trace.append((rec.started, state.in_flight))
            state.requests.append(rec)
        try:
            rec.status = self._answer(rec)
        finally:
            with state.lock:
                state.in_flight -= 1
                rec.finished = time.monotonic()
                state.trace.append((rec.finished, state.in_flight))

    # -- behaviour ------------------------------------------------------------------------
    def _answer(self, rec: RecordedRequest) -> int:
        body = rec.body
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return 404
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_json(400, {"error": {"message": "body must be JSON with messages"}})
            return 400
        if body.get("model") not in self.server.models:
            self._send_json(
                404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
            )
            return 404
        messages = body["messages"]
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        prompt = users[-1] if users else ""
        text, directives = parse_directives(f"{prompt} {self.server.default_directives}")
        state, mix = self.server.state, self.server.faults
        with state.lock:
            state.attempts[prompt] += 1
            rec.attempt = attempt = state.attempts[prompt]
            rec.prompt = prompt
            rec.fault = fault = mix.pick(prompt, attempt) if mix is not None else None
            if fault is not None:
                state.faults[fault] += 1
        if mix is not None and fault is not None and fault not in ("length", "timeout"):
            return self._inject(fault, mix)
        if fault == "timeout" and mix is not None:
            time.sleep(mix.timeout_delay)

        if "delay" in directives:
            time.sleep(float(directives["delay"]))
        if "drop" in directives and _count_applies(directives["drop"], attempt):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return 0
        if "echo_auth" in directives:  # a careless server that quotes the key back
            auth = rec.headers.get("authorization", "")
            self._send_json(400, {"error": {"message": f"bad key {auth}"}})
            return 400
        if "status" in directives:
            code, applies = _limited(directives["status"], attempt)
            if applies:
                headers = {}
                if "retry_after" in directives:
                    headers["Retry-After"] = directives["retry_after"].replace("_", " ")
                self._send_json(
                    int(code),
                    {"error": {"message": f"stub error {code}", "code": int(code)}},
                    headers,
                )
                return int(code)
        if "malformed" in directives and _count_applies(directives["malformed"], attempt):
            self._send_raw(200, b'{"choices": [ this is not json')
            return 200
        if "empty" in directives and _count_applies(directives["empty"], attempt):
            self._send_json(200, {"id": "x", "object": "chat.completion", "choices": []})
            return 200

        words = list(reversed(text.split()))
        finish = "stop"
        reply = " ".join(words)
        for stop in body.get("stop") or []:
            if stop and stop in reply:
                reply = reply[: reply.index(stop)]
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and len(reply.split()) > max_tokens:
            reply = " ".join(reply.split()[:max_tokens])
            finish = "length"
        if "length" in directives:
            finish = "length"
        if fault == "length":
            cut = reply.split()
            reply, finish = " ".join(cut[: max(1, len(cut) // 2)]), "length"
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.server.state.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": finish,
                }
            ],
        }
        if "nousage" not in directives:
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
            payload["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(reply.split()),
                "total_tokens": prompt_tokens + len(reply.split()),
            }
        self._send_json(200, payload)
        self.server.note_answered()
        return 200

    def _inject(self, fault: str, mix: FaultMix) -> int:
        if fault == "reset":
            self._reset()
            return 0
        if fault == "malformed":
            self._send_raw(200, b'{"choices": [ this is not json')
            return 200
        if fault == "empty":
            self._send_json(200, {"id": "x", "object": "chat.completion", "choices": []})
            return 200
        code = int(fault)
        headers = {"Retry-After": mix.retry_after} if code == 429 and mix.retry_after else {}
        self._send_json(code, {"error": {"message": f"injected {code}", "code": code}}, headers)
        return code


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (cancelled or timed-out requests) are normal here."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def __init__(
        self, models: tuple[str, ...], port: int = 0, state: StubState | None = None
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state if state is not None else StubState()
        self.models = models
        self.default_directives = ""
        self.faults: FaultMix | None = None
        self.down = False
        self.down_after: int | None = None
        self._connections: set[socket.socket] = set()
        self._resets: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._down_lock = threading.Lock()
        self._closed = False

    # -- connections ----------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def reset_on_close(self, request: socket.socket) -> None:
        with self._conn_lock:
            self._resets.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
            reset = request in self._resets
            self._resets.discard(request)
        if reset:  # no FIN first: SO_LINGER 0 makes close() send a RST
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def note_answered(self) -> None:
        """Count a good answer; take the server down when ``down_after`` is reached."""
        with self.state.lock:
            self.state.answered += 1
            trip = (
                self.down_after is not None
                and self.state.answered >= self.down_after
                and not self.down
            )
            if trip:
                self.down = True
        if trip:
            threading.Thread(target=self.go_down, daemon=True).start()

    def go_down(self) -> None:
        """Stop listening and cut every open connection (call from any thread but the loop's)."""
        self.down = True
        with self._down_lock:  # a second caller waits until the port is closed
            if not self._closed:
                self.shutdown()
                self.server_close()
                self._closed = True
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class StubServer:
    """The stub on 127.0.0.1 with a free port; a context manager."""

    def __init__(self, models: tuple[str, ...] = ("stub-model",)) -> None:
        self._models = models
        self._server = _Server(models)
        self._thread = self._serving_thread()

    def _serving_thread(self) -> threading.Thread:
        return threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.go_down()
        self._thread.join(timeout=5)

    def go_down(self) -> None:
        """Down for good: the port refuses connections and open ones are cut."""
        self.stop()

    def down_after(self, answers: int | None) -> None:
        """Go down by itself right after the ``answers``-th good answer (``None``: never)."""
        self._server.down_after = answers

    def restart(self) -> StubServer:
        """Serve again on the same port (after ``go_down``), keeping state and settings."""
        old = self._server
        self.stop()
        self._server = _Server(self._models, port=self.port, state=old.state)
        self._server.default_directives = old.default_directives
        self._server.faults = old.faults
        self._thread = self._serving_thread()
        return self.start()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL including ``/v1``, as OpenAI clients take it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def default_directives(self) -> str:
        return self._server.default_directives

    @default_directives.setter
    def default_directives(self, value: str) -> None:
        self._server.default_directives = value

    @property
    def faults(self) -> FaultMix | None:
        return self._server.faults

    @faults.setter
    def faults(self, value: FaultMix | None) -> None:
        self._server.faults = value

    @property
    def state(self) -> StubState:
        return self._server.state

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def max_in_flight(self) -> int:
        with self.state.lock:
            return self.state.max_in_flight

    def reset(self) -> None:
        """Forget what was seen (the server keeps running)."""
        with self.state.lock:
            self.state.in_flight = 0
            self.state.max_in_flight = 0
            self.state.trace.clear()
            self.state.requests.clear()
            self.state.attempts.clear()
            self.state.faults.clear()
            self.state.answered = 0


def serve(models: tuple[str, ...] = ("stub-model",)) -> Iterator[StubServer]:
    """Generator for a pytest fixture: ``yield from serve()``."""
    with StubServer(models) as stub:
        yield stub


if __name__ == "__main__":  # manual use: python tests/openai_stub.py
    with StubServer() as stub:
        print(f"stub listening at {stub.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
