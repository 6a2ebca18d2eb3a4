"""A local, scriptable fake of the OpenAI Chat Completions HTTP API, for tests.

Tests use this server to drive each agent framework's *real* OpenAI model class (the
official ``openai`` SDK underneath) over real HTTP on ``127.0.0.1``. Because every byte
goes through the same client code path a production run would use, the messages the
frameworks build and persist have genuine provider shapes: tool-call arguments arrive as
JSON *strings*, tool calls carry provider call ids, and the follow-up request echoes them
back in ``role: "tool"`` messages. That lets tests prove those shapes survive suspension
and resume, instead of only exercising hand-made in-memory fakes.

The reply to each request is decided by a test-supplied :data:`Responder`, which receives
the parsed JSON request body and returns a :class:`Reply`. Every request body is recorded
in :attr:`FakeOpenAIServer.requests`; anything the server could not serve (a responder
exception, an unknown path, a malformed body) is recorded in
:attr:`FakeOpenAIServer.errors` so tests can assert that none happened.

Example::

    def responder(body: dict[str, Any]) -> Reply:
        if any(m["role"] == "tool" for m in body["messages"]):
            return Reply.say("done")
        return Reply.call(ToolCall("call_1", "lookup", {"key": "a"}))

    with FakeOpenAIServer(responder) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test")
        ...
    assert server.errors == []

Supported endpoints: ``POST /v1/chat/completions`` (streaming and non-streaming) and
``GET /v1/models``. The server binds only to ``127.0.0.1`` on an OS-chosen port. Output is
deterministic: completion ids are a per-server counter and ``created`` is a fixed value.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeAlias

__all__ = ["FakeOpenAIServer", "Reply", "Responder", "ToolCall"]

_HOST = "127.0.0.1"
_CREATED = 1_700_000_000
_DEFAULT_MODEL = "fake-model"
_CHAT_PATH = "/v1/chat/completions"
_MODELS_PATH = "/v1/models"
# How often the serving loop checks for shutdown; keeps stop() fast.
_POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class ToolCall:
    """A tool call the fake model should make.

    Attributes:
        id: Provider call id (e.g. ``"call_1"``); clients echo it back as ``tool_call_id``.
        name: Name of the function/tool to call.
        arguments: Arguments for the call. Serialised to a JSON string on the wire, as the
            real API does.
    """

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """The assistant message the fake model answers a request with.

    Attributes:
        text: Assistant text content, or ``None`` for no content.
        tool_calls: Tool calls to make. When non-empty the finish reason is ``"tool_calls"``,
            otherwise ``"stop"``.
        prompt_tokens: Reported prompt token usage.
        completion_tokens: Reported completion token usage.
    """

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 10
    completion_tokens: int = 5

    @classmethod
    def say(cls, text: str) -> Reply:
        """Build a plain text reply.

        Args:
            text: The assistant text.

        Returns:
            A reply with ``text`` and no tool calls.
        """
        return cls(text=text)

    @classmethod
    def call(cls, *tool_calls: ToolCall) -> Reply:
        """Build a reply that only makes tool calls.

        Args:
            *tool_calls: The tool calls to make, in order.

        Returns:
            A reply with no text and the given tool calls.
        """
        return cls(tool_calls=tuple(tool_calls))


Responder: TypeAlias = Callable[[dict[str, Any]], Reply]
"""Decides the reply to one chat-completions request, given its parsed JSON body."""


class FakeOpenAIServer:
    """A fake OpenAI-compatible HTTP server on ``127.0.0.1`` with an OS-chosen port.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`). Requests are served
    on a daemon thread, one thread per connection.

    Note that the ``openai`` SDK retries 5xx responses by default; the 500 this server sends
    when the responder raises carries ``x-should-retry: false`` so the SDK surfaces it once.

    Attributes:
        requests: Every chat-completions request body received, in arrival order.
        errors: A description of every request the server could not serve, in order.
    """

    def __init__(self, responder: Responder) -> None:
        """Create a server; it does not listen until started.

        Args:
            responder: Called with each chat-completions request body to decide the reply.
                It runs on a server thread, not on the test's event loop.
        """
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._responder = responder
        self._lock = threading.Lock()
        self._counter = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    @property
    def base_url(self) -> str:
        """The API base URL, ``http://127.0.0.1:<port>/v1``.

        Raises:
            RuntimeError: If the server is not running.
        """
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running")
        port = self._httpd.server_address[1]
        return f"http://{_HOST}:{port}/v1"

    def start(self) -> None:
        """Bind to ``127.0.0.1`` on an OS-chosen port and start serving on a daemon thread.

        Raises:
            RuntimeError: If the server is already running.
        """
        if self._httpd is not None:
            raise RuntimeError("FakeOpenAIServer is already running")
        httpd = _HTTPServer((_HOST, 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the listening socket and drop open connections.

        Safe to call more than once, or on a server that was never started.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            # Wake handler threads blocked on idle keep-alive connections.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        """Start the server.

        Returns:
            This server.
        """
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # Internal hooks used by the request handler.

    def _next_completion_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"chatcmpl-{self._counter}"

    def _record_request(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _HTTPServer(ThreadingHTTPServer):
    """The underlying HTTP server, linked back to its :class:`FakeOpenAIServer`."""

    daemon_threads = True
    # Idle keep-alive connections are shut down by FakeOpenAIServer.stop(); never block
    # server_close() on handler threads.
    block_on_close = False
    owner: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    """Serves the fake endpoints for one connection."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"

    @property
    def _owner(self) -> FakeOpenAIServer:
        server = self.server
        assert isinstance(server, _HTTPServer)
        return server.owner

    def setup(self) -> None:
        super().setup()
        self._owner._track(self.connection, open_=True)

    def finish(self) -> None:
        self._owner._track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    def do_GET(self) -> None:
        if self._path() == _MODELS_PATH:
            model = {
                "id": _DEFAULT_MODEL,
                "object": "model",
                "created": _CREATED,
                "owned_by": "fake-openai",
            }
            self._send_json(200, {"object": "list", "data": [model]})
            return
        self._not_found()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if self._path() != _CHAT_PATH:
            self._not_found()
            return
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._fail(400, "invalid_request_error", f"request body is not valid JSON: {exc}")
            return
        if not isinstance(body, dict):
            self._fail(400, "invalid_request_error", "request body must be a JSON object")
            return
        owner = self._owner
        owner._record_request(body)
        try:
            reply = owner._responder(body)
        except Exception as exc:
            self._fail(500, "server_error", f"responder raised {type(exc).__name__}: {exc}")
            return
        completion_id = owner._next_completion_id()
        model = str(body.get("model") or _DEFAULT_MODEL)
        if body.get("stream"):
            stream_options = body.get("stream_options") or {}
            include_usage = bool(stream_options.get("include_usage"))
            self._send_stream(_stream_chunks(reply, completion_id, model, include_usage))
        else:
            self._send_json(200, _completion(reply, completion_id, model))

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def _not_found(self) -> None:
        self._fail(404, "invalid_request_error", f"unknown endpoint {self.command} {self.path}")

    def _fail(self, status: int, error_type: str, message: str) -> None:
        self._owner._record_error(f"{status} {self.command} {self.path}: {message}")
        error = {"message": message, "type": error_type, "param": None, "code": None}
        self._send_json(status, {"error": error}, extra_headers={"x-should-retry": "false"})

    def _send_json(
        self,
        status: int,
        payload: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, chunks: Iterator[dict[str, Any]]) -> None:
        """Send server-sent events with chunked encoding, then close the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in chunks:
                self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return  # The client stopped reading early; nothing left to serve.

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")


def _arguments_json(call: ToolCall) -> str:
    return json.dumps(call.arguments, separators=(",", ":"))


def _halves(text: str) -> list[str]:
    """Split ``text`` into two non-empty pieces when possible (to exercise accumulation)."""
    mid = len(text) // 2
    return [piece for piece in (text[:mid], text[mid:]) if piece]


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _completion(reply: Reply, completion_id: str, model: str) -> dict[str, Any]:
    """Build a non-streaming ``chat.completion`` response body."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments_json(call)},
            }
            for call in reply.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish_reason(reply),
                "logprobs": None,
            }
        ],
        "usage": _usage(reply),
    }


def _stream_chunks(
    reply: Reply, completion_id: str, model: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """Yield the ``chat.completion.chunk`` objects of a streaming response, in order."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        if include_usage:
            body["usage"] = None
        return body

    yield chunk({"role": "assistant", "content": ""})
    for piece in _halves(reply.text or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(reply.tool_calls):
        start = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [start]})
        for piece in _halves(_arguments_json(call)):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, finish_reason=_finish_reason(reply))
    if include_usage:
        yield {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [],
            "usage": _usage(reply),
        }
