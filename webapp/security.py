"""What keeps a public deployment from being turned against others, and fair to every client.

* No URL is ever fetched on the server's behalf. Gradio downloads a file given by URL (in the
  `/file=` and `/proxy=` routes, and for a `{"path": "https://…"}` file in any API payload) through
  its own SSRF-checked client, which refuses private addresses but still fetches public ones: the
  server could be used to reach third parties with its address. `ServerGuard` refuses every such
  request before Gradio sees it; the app never needs a remote file (recordings are uploaded).
* A per-client cap on unfinished scoring requests (`MAX_WAITING_PER_SESSION` per browser or
  client session, `MAX_WAITING_PER_ADDRESS` per address), so that one client cannot fill the
  queue and keep others out: beyond it, that client gets an immediate HTTP 429 saying it already
  has requests waiting, while others still get in.
* No outbound connection unless asked for (`quiet_outbound`, called before Gradio is imported):
  Gradio's analytics and version check off, Hugging Face telemetry off, and the Hub offline
  unless the model or adapter is a Hub id.

The only Gradio internal read here is the queue's table of unfinished events (`_unfinished`).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_WAITING_PER_SESSION = 2  # unfinished scorings one browser tab / API client may have
MAX_WAITING_PER_ADDRESS = 4  # ... and one address (a classroom behind one NAT shares it)
MAX_JSON_BODY_BYTES = 1_000_000  # API payloads are small JSON (uploads go to /upload as multipart)
SCORER_QUEUE = "scorer"  # the concurrency id of every scoring event (webapp.layout)

URL_MESSAGE = "This server does not fetch files from URLs. Please upload the file itself."
BUSY_MESSAGE = (
    "You already have requests waiting to be scored. Please wait for them to finish, then try again."
)

_URL_RE = re.compile(r"^\s*(?:[a-z][a-z0-9+.\-]*:)?[/\\]{2}", re.IGNORECASE)  # scheme://… or //host
_FETCH_ROUTE_RE = re.compile(r"/(?:file=|file/|proxy=)(.*)$", re.IGNORECASE | re.DOTALL)
_JOIN_ROUTE_RE = re.compile(r"/(?:queue/join|call/(?:v2/)?([^/]+)|run/([^/]+)|api/([^/]+))/?$")
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


# ------------------------------------------------------------------ outbound connections


def is_local_path(name: str | None) -> bool:
    """Whether a model/adapter name is a directory here (else it would be a Hub id)."""
    return bool(name) and Path(str(name)).expanduser().is_dir()


def quiet_outbound(model: str | None = None, adapter: str | None = None, *, analytics: bool = False) -> bool:
    """Turn off what would connect out at start or later unless asked for. Call it before anything
    imports gradio or huggingface_hub (both read these variables at import). Returns whether the
    Hub is offline: yes unless the chosen model or adapter is a Hub id (apa.config.resolve_model;
    apa-mini is assembled from installed packages, so it counts as local)."""
    from apa.config import resolve_model

    if analytics:
        os.environ["APA_ANALYTICS"] = "1"  # what webapp.layout asks (apa.config.gradio_analytics)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "True" if analytics else "False"  # also the version check
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    choice = resolve_model(model, adapter)
    local = (choice.is_default_model or is_local_path(choice.model)) and (
        choice.adapter is None or is_local_path(choice.adapter)
    )
    if local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return local


# ------------------------------------------------------------------ URLs in requests


def _decoded(text: str, rounds: int = 4) -> str:
    for _ in range(rounds):
        new = unquote(text)
        if new == text:
            break
        text = new
    return text


def looks_like_url(value: Any) -> bool:
    """A string naming a remote resource (`scheme://…` or `//host…`), however percent-encoded."""
    return isinstance(value, str) and bool(_URL_RE.match(_decoded(value)))


def names_remote_file(path: str) -> bool:
    """Whether a request path asks Gradio to fetch something: `/file=<url>`, `/file/<url>`, or
    any `/proxy=` (this app proxies nothing)."""
    m = _FETCH_ROUTE_RE.search(_decoded(path))
    if m is None:
        return False
    return "proxy=" in m.group(0).lower() or looks_like_url(m.group(1))


def payload_urls(value: Any, key: str | None = None) -> Iterator[str]:
    """URL-like strings in a JSON payload, except under "url" keys (the browser's file records
    carry this server's own URL there, and Gradio ignores it for uploads)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from payload_urls(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from payload_urls(v, key)
    elif key != "url" and looks_like_url(value):
        yield value


# ------------------------------------------------------------------ who is asking


def client_address(scope: Scope, *, trust_forwarded: bool) -> str:
    """The client's address: behind a proxy that sets it (Hugging Face Spaces), the first address
    of X-Forwarded-For; otherwise the connection's peer address."""
    if trust_forwarded:
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                first = value.decode("latin-1").split(",")[0].strip()
                if first:
                    return first
    client = scope.get("client")
    return client[0] if client else "?"


def _unfinished(blocks: Any) -> list[Any]:
    """Queued or running events of the scoring queue (Gradio drops an event from this table
    when it ends, fails or is cancelled)."""
    events = getattr(getattr(blocks, "_queue", None), "event_ids_to_events", None) or {}
    for _ in range(3):  # changed by the event loop while we copy it
        try:
            return [e for e in list(events.values()) if getattr(e, "concurrency_id", None) == SCORER_QUEUE]
        except RuntimeError:
            continue
    return []


def _target_queue(blocks: Any, path: str, body: Any) -> str | None:
    """The concurrency id of the event a join/call request would start (None: not such a request)."""
    m = _JOIN_ROUTE_RE.search(path)
    if m is None or blocks is None:
        return None
    fns = getattr(blocks, "fns", {})
    api_name = next((g for g in m.groups() if g), None)
    if api_name is not None:
        fn = next((f for f in fns.values() if getattr(f, "api_name", None) == api_name), None)
    else:
        fn = fns.get(body.get("fn_index")) if isinstance(body, dict) else None
    return getattr(fn, "concurrency_id", None)


# ------------------------------------------------------------------ the middleware


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "error": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 429:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v.decode("latin-1")
    return ""


class ServerGuard:
    """ASGI middleware (launch(app_kwargs={"middleware": [...]}), see webapp.layout): refuses
    URLs in fetch routes and in request bodies (403), oversized JSON bodies (413), and scoring
    requests from a client that already has its share waiting (429)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        per_session: int = MAX_WAITING_PER_SESSION,
        per_address: int = MAX_WAITING_PER_ADDRESS,
        trust_forwarded: bool = False,
    ) -> None:
        self.app = app
        self.per_session = per_session
        self.per_address = per_address
        self.trust_forwarded = trust_forwarded
        self._joining: Counter[tuple[str, str]] = Counter()  # admitted, not yet in Gradio's queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw = scope.get("raw_path") or b""
        if names_remote_file(scope.get("path", "")) or names_remote_file(raw.decode("latin-1")):
            return await _answer(send, 403, URL_MESSAGE)
        if scope.get("method") not in _BODY_METHODS or _header(scope, b"content-type").startswith("multipart/"):
            return await self.app(scope, receive, send)
        if _header(scope, b"content-encoding") not in ("", "identity"):
            return await _answer(send, 415, "Compressed request bodies are not accepted.")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_JSON_BODY_BYTES:
                return await _answer(send, 413, "The request is too large.")
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            payload = json.loads(body) if body.strip() else None
        except RecursionError:
            return await _answer(send, 400, "The request is nested too deeply.")
        except ValueError:  # not JSON (no Gradio data route takes that): no URL at all then
            payload = None
            if "://" in _decoded(body.decode("latin-1")):
                return await _answer(send, 403, URL_MESSAGE)
        try:
            has_url = next(payload_urls(payload), None) is not None
        except RecursionError:
            return await _answer(send, 400, "The request is nested too deeply.")
        if has_url:
            return await _answer(send, 403, URL_MESSAGE)

        keys = self._client_keys(scope, payload)
        if keys and self._over_cap(scope, keys):
            return await _answer(send, 429, BUSY_MESSAGE)

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        self._joining.update(keys)
        try:
            await self.app(scope, replay, send)
        finally:
            self._joining.subtract(keys)
            self._joining += Counter()  # drop zero counts

    def _client_keys(self, scope: Scope, payload: Any) -> list[tuple[str, str]]:
        """("session", id) and ("address", ip) of a request that would queue a scoring; [] otherwise."""
        app = scope.get("app")
        blocks = app.get_blocks() if hasattr(app, "get_blocks") else None
        if _target_queue(blocks, scope.get("path", ""), payload) != SCORER_QUEUE:
            return []
        keys = [("address", client_address(scope, trust_forwarded=self.trust_forwarded))]
        session = payload.get("session_hash") if isinstance(payload, dict) else None
        if isinstance(session, str) and session:
            keys.append(("session", session))
        return keys

    def _over_cap(self, scope: Scope, keys: list[tuple[str, str]]) -> bool:
        app = scope.get("app")
        counts: Counter[tuple[str, str]] = Counter(self._joining)
        for event in _unfinished(app.get_blocks()):
            req_scope = getattr(getattr(event, "request", None), "scope", None) or {}
            counts[("address", client_address(req_scope, trust_forwarded=self.trust_forwarded))] += 1
            counts[("session", getattr(event, "session_hash", None))] += 1
        caps = {"session": self.per_session, "address": self.per_address}
        return any(counts[k] >= caps[k[0]] for k in keys)
