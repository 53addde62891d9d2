"""The HTTP side: a lean ASGI handler for the inference routes, FastAPI for everything else.

Inference requests are the hot path: the front app matches their paths itself and handles them
as raw ASGI (orjson in and out, no validation layer, no per-request thread), which costs a
fraction of going through FastAPI's router and dependency machinery. FastAPI still declares
those routes (served by the same handler) so that /openapi.json and /docs describe them.
"""

from __future__ import annotations

import logging
import time
import zlib
from functools import partial
from typing import Any, Awaitable, Callable

import orjson

from .core import InferenceServer, decode_simple
from .errors import (
    ClientGoneError,
    InvalidInputError,
    PayloadTooLargeError,
    ServeError,
    UnsupportedMediaTypeError,
)
from .repository import LoadedVersion
from .v2 import NUMPY, decode_request, encode_response, parse_json

log = logging.getLogger("nnforge.serve")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON_TYPE = b"application/json"
BINARY_TYPE = b"application/octet-stream"
#: routes whose requests are not written to the access log (probes and scrapes every few seconds)
QUIET_PREFIXES = ("/v2/health/", "/metrics")


def match_inference(path: str) -> tuple[str, str | None, str | None] | None:
    """(kind, model, version) of an inference path, or None for any other path."""
    if path == "/predict":
        return "simple", None, None
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        kind, rest = "simple", path[11:-8]
    elif path.startswith("/v2/models/") and path.endswith("/infer"):
        kind, rest = "v2", path[11:-6]
    else:
        return None
    name, sep, version = rest.partition("/versions/")
    if not name or "/" in name or sep and (not version or "/" in version):
        return None
    return kind, name, (version if sep else None)


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key from 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."""
    for k, v in headers:
        if k == b"x-api-key":
            return v
        if k == b"authorization":
            return v[7:] if v[:7].lower() == b"bearer " else v
    return None


async def read_body(receive: Receive, length: bytes | None, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes before reading them."""
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise InvalidInputError(f"Content-Length must be an integer, found {length!r:.40}") \
                from None
        if declared > limit:
            raise PayloadTooLargeError(f"the body may hold at most {limit} bytes, found a "
                                       f"Content-Length of {declared}")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if message["type"] == "http.disconnect":
            raise ClientGoneError("the client disconnected")
        return body
    chunks, size = [body], len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError("the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body may hold at most {limit} bytes, found more")
        chunks.append(chunk)
    return b"".join(chunks)


def decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """Undo Content-Encoding gzip or deflate, stopping at `limit` bytes (no zip bombs)."""
    enc = encoding.strip().lower()
    if enc == b"identity":
        return body
    if enc not in (b"gzip", b"deflate"):
        raise UnsupportedMediaTypeError(f"expected Content-Encoding gzip, deflate or identity, "
                                        f"found {enc.decode('latin-1')!r:.40}")
    d = zlib.decompressobj(wbits=31 if enc == b"gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"the body is not valid {enc.decode()} data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLargeError(f"the decompressed body may hold at most {limit} bytes")
    return out


def _gone_check(receive: Receive) -> Callable[[], bool] | None:
    """A cheap test for 'the client went away' where the ASGI server offers one.

    uvicorn's receive() is a method of its request cycle object, whose `disconnected` flag is
    set when the connection drops; reading it costs nothing, whereas waiting on receive() for
    the disconnect message would cost a task per request.
    """
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return partial(getattr, cycle, "disconnected")


class ServeApp:
    """The ASGI application of `nnforge serve`."""

    def __init__(self, server: InferenceServer) -> None:
        from .api import build_api  # noqa: PLC0415 - FastAPI is only needed once, here

        self.server = server
        self.limit = server.config.max_body_bytes
        self.api = build_api(server, self.handle_inference)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                route = match_inference(scope["path"])
                if route is not None:
                    await self.handle_inference(route, scope, receive, send)
                    return
            if not scope["path"].startswith(QUIET_PREFIXES):
                await self._logged(scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a FastAPI route and write its access record."""
        arrived, status = time.perf_counter(), [500]

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.api(scope, receive, capture)
        finally:
            self.server.access_log.write({
                "request_id": self.server.request_id(None), "method": scope["method"],
                "path": scope["path"], "status": status[0], "protocol": "http",
                "latency_ms": round((time.perf_counter() - arrived) * 1000, 3)})

    async def handle_inference(self, route: tuple[str, str | None, str | None], scope: Scope,
                               receive: Receive, send: Send) -> None:
        """POST /predict, /v1/models/{m}[/versions/{v}]:predict, /v2/models/{m}[...]/infer."""
        arrived = time.perf_counter()
        server = self.server
        kind, name, version = route
        length = header_length = rid = encoding = None
        headers = scope["headers"]
        for k, v in headers:
            if k == b"content-length":
                length = v
            elif k == b"inference-header-content-length":
                header_length = v
            elif k == b"x-request-id":
                rid = v.decode("latin-1")
            elif k == b"content-encoding":
                encoding = v
        rid = server.request_id(rid)
        loaded: LoadedVersion | None = None
        status, outcome, ctype, out_header = 200, "success", JSON_TYPE, None
        try:
            server.check_api_key(presented_key(headers))
            body = await read_body(receive, length, self.limit)
            if encoding is not None:
                body = decompress(body, encoding, self.limit)
            repo = server.repository
            # from here to submitting there is no await: the version cannot be swapped out
            if kind == "simple":
                loaded = repo.get(name if name is not None else repo.only_model(), version)
                x = decode_simple(parse_json(body), loaded.model)
                out = await server.infer(loaded, x, arrived, _gone_check(receive))
                model = loaded.model
                payload = orjson.dumps({"model_name": model.name,
                                        "model_version": model.version,
                                        "predictions": model.rows(out)}, option=NUMPY)
            else:
                hlen = _header_length(header_length)
                loaded = repo.get(name or "", version)
                x, requested, req_id = decode_request(body, hlen, loaded.model)
                out = await server.infer(loaded, x, arrived, _gone_check(receive))
                payload, out_header = encode_response(loaded.model, out, requested, req_id)
                if out_header is not None:
                    ctype = BINARY_TYPE
        except ServeError as exc:
            status, outcome = exc.status, exc.outcome
            payload = orjson.dumps({"error": str(exc)})
        except Exception:  # noqa: BLE001 - a bug must cost one request, not the server
            log.exception("request %s failed", rid)
            status, outcome = 500, "error"
            payload = orjson.dumps({"error": f"internal server error (request id {rid}); see "
                                             f"the server log"})
        out_headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(payload)),
                       (b"x-request-id", rid.encode("latin-1"))]
        if out_header is not None:
            out_headers.append((b"inference-header-content-length", b"%d" % out_header))
        if status == 413:  # the unread rest of the body would be taken for the next request
            out_headers.append((b"connection", b"close"))
        if status != 499:
            await send({"type": "http.response.start", "status": status,
                        "headers": out_headers})
            await send({"type": "http.response.body", "body": payload})
        server.finish(loaded, name, outcome, arrived, {
            "request_id": rid, "method": "POST", "path": scope["path"], "status": status,
            "protocol": "http"})


def _header_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"Inference-Header-Content-Length must be an integer, found "
                                f"{value!r:.40}") from None
