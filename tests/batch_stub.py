"""A loopback server with the OpenAI files and batches endpoints, able to misbehave.

It is the only way to exercise the batch teacher's HTTP side here (no provider can be
reached). Endpoints: ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches`` (list, newest first), ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``. A batch becomes ``completed`` ``delay`` seconds after it is
created; each request is answered with its last user message, words reversed (as
``openai_stub``), after the prefill when the request continues one.

Faults:

- ``item_fault(custom_id, submission_number) -> None | "500" | "400" | "missing"``: an item
  fails retryably, fails for good, or is left out of both files;
- ``expire_next``: that many next batches expire, answering only their first ``expire_keep``
  items;
- ``fail_next``: that many next batches fail as a whole (a validation error);
- ``lost_files``: files that answer 404 (expired at the provider); ``output_files`` lists
  the output files written so far.

``submissions`` counts how many times each ``custom_id`` was submitted in a created batch;
``created`` lists the batches created.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ItemFault = Callable[[str, int], str | None]


class BatchState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.submissions: Counter[str] = Counter()
        self.ids = itertools.count(1)
        self.delay = 0.2
        self.item_fault: ItemFault | None = None
        self.expire_next = 0
        self.expire_keep = 0
        self.fail_next = 0
        self.lost_files: set[str] = set()
        self.output_files: set[str] = set()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids):06d}"


def _reply(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages", [])
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    words = (users[-1] if users else "").split()[::-1][: int(body.get("max_tokens", 16))]
    content = " ".join(words)
    if body.get("continue_final_message") and messages and messages[-1]["role"] == "assistant":
        content = " " + content
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": len(words)},
    }


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # as real servers do: no 40 ms wait on a small reply
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        state = self.server.state
        if match := re.fullmatch(r"/v1/files/([\w-]+)/content", self.path):
            file_id = match[1]
            with state.lock:
                data = state.files.get(file_id)
                lost = file_id in state.lost_files
            if data is None or lost:
                self._json(404, {"error": {"message": f"no file {file_id}"}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif match := re.fullmatch(r"/v1/batches/([\w-]+)", self.path):
            batch = self.server.advance(match[1])
            if batch is None:
                self._json(404, {"error": {"message": "no such batch"}})
            else:
                self._json(200, batch)
        elif self.path.startswith("/v1/batches"):
            with state.lock:
                data = [dict(state.batches[b]) for b in reversed(state.order)]
            self._json(200, {"object": "list", "data": data, "has_more": False})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        state = self.server.state
        if self.path == "/v1/files":
            parser = email.parser.BytesParser(policy=email.policy.HTTP)
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            message = parser.parsebytes(head + self._body())
            content = b""
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    content = part.get_payload(decode=True) or b""
            with state.lock:
                file_id = state.new_id("file")
                state.files[file_id] = content
            self._json(
                200,
                {
                    "id": file_id,
                    "object": "file",
                    "bytes": len(content),
                    "created_at": int(time.time()),
                    "filename": "input.jsonl",
                    "purpose": "batch",
                    "status": "processed",
                },
            )
        elif self.path == "/v1/batches":
            request = json.loads(self._body())
            self._json(200, self.server.create(request))
        elif match := re.fullmatch(r"/v1/batches/([\w-]+)/cancel", self.path):
            with state.lock:
                batch = state.batches.get(match[1])
                if batch is not None and batch["status"] not in ("completed", "failed"):
                    batch["status"] = "cancelled"
            self._json(200 if batch else 404, batch or {"error": {"message": "no batch"}})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = BatchState()
        self._plans: dict[str, tuple[float, str, list[dict[str, Any]]]] = {}

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        state = self.state
        with state.lock:
            lines = state.files[request["input_file_id"]].split(b"\n")
            items = [json.loads(line) for line in lines if line.strip()]
            batch_id = state.new_id("batch")
            fate = "completed"
            if state.fail_next:
                state.fail_next -= 1
                fate = "failed"
            elif state.expire_next:
                state.expire_next -= 1
                fate = "expired"
            if fate != "failed":  # a batch refused as a whole runs (and costs) nothing
                for item in items:
                    state.submissions[item["custom_id"]] += 1
            batch = {
                "id": batch_id,
                "object": "batch",
                "endpoint": request["endpoint"],
                "input_file_id": request["input_file_id"],
                "completion_window": request["completion_window"],
                "status": "validating",
                "created_at": int(time.time()),
                "metadata": request.get("metadata"),
                "request_counts": {"total": len(items), "completed": 0, "failed": 0},
            }
            state.batches[batch_id] = batch
            state.order.append(batch_id)
            self._plans[batch_id] = (time.monotonic() + state.delay, fate, items)
            return dict(batch)

    def advance(self, batch_id: str) -> dict[str, Any] | None:
        """The batch, finished when its time has come."""
        state = self.state
        with state.lock:
            batch = state.batches.get(batch_id)
            if batch is None:
                return None
            plan = self._plans.get(batch_id)
            if batch["status"] in ("validating", "in_progress") and plan is not None:
                due, fate, items = plan
                if time.monotonic() < due:
                    batch["status"] = "in_progress"
                else:
                    self._finish(batch, fate, items)
            return dict(batch)

    def _finish(self, batch: dict[str, Any], fate: str, items: list[dict[str, Any]]) -> None:
        state = self.state
        if fate == "failed":
            batch["status"] = "failed"
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "stub: batch refused"}],
            }
            return
        if fate == "expired":
            items = items[: state.expire_keep]
        out, err = [], []
        for item in items:
            custom_id = item["custom_id"]
            fault = (
                state.item_fault(custom_id, state.submissions[custom_id])
                if state.item_fault
                else None
            )
            if fault == "missing":
                continue
            if fault in ("500", "400"):
                err.append(
                    {
                        "id": "req",
                        "custom_id": custom_id,
                        "response": {
                            "status_code": int(fault),
                            "body": {"error": {"message": f"stub item error {fault}"}},
                        },
                        "error": None,
                    }
                )
                continue
            out.append(
                {
                    "id": "req",
                    "custom_id": custom_id,
                    "response": {"status_code": 200, "body": _reply(item["body"])},
                    "error": None,
                }
            )
        batch["status"] = fate
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = state.new_id("file")
                state.files[file_id] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                batch[name] = file_id
                if name == "output_file_id":
                    state.output_files.add(file_id)
        batch["request_counts"] = {
            "total": len(items),
            "completed": len(out),
            "failed": len(err),
        }


class BatchStub:
    """The server on 127.0.0.1, a context manager."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> BatchStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def state(self) -> BatchState:
        return self._server.state


def serve_forever() -> None:
    """Run as a script (``python batch_stub.py``): serve until killed; print the URL."""
    stub = BatchStub().__enter__()
    print(stub.url, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    serve_forever()
