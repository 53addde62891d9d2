"""The HTTP side: a lean ASGI handler for the inference routes, FastAPI for everything else.

Inference requests are the hot path. Normally they never reach ASGI: the server's protocol
(fasthttp.py) answers them from the HTTP parser. When they do come through ASGI (that protocol
switched off, or a uvicorn without the internals it needs), the front app matches their paths
itself and handles them as raw ASGI (orjson in and out, no validation layer, no per-request
thread), skipping FastAPI's router and dependency machinery. Both ways share `rest.RestCall`.
FastAPI still declares those routes (served by the same handler) so that /openapi.json and
/docs describe them."""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Awaitable, Callable

from .core import InferenceServer
from .errors import ClientGoneError, PayloadTooLargeError
from .rest import RestCall, Route, match_inference

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: routes whose requests are not written to the access log (probes and scrapes every few seconds)
QUIET_PREFIXES = ("/v2/health/", "/metrics")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes."""
    message = await receive()
    body = message.get("body", b"")
    if len(body) > limit:
        raise PayloadTooLargeError(f"the body may hold at most {limit} bytes, found more")
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

        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"),
                     None)
        try:
            await self.api(scope, receive, capture)
        finally:
            self.server.access_log.write({
                "request_id": self.server.request_id(given), "method": scope["method"],
                "path": scope["path"], "status": status[0], "protocol": "http",
                "latency_ms": round((time.perf_counter() - arrived) * 1000, 3)})

    async def handle_inference(self, route: Route, scope: Scope, receive: Receive,
                               send: Send) -> None:
        """POST /predict, /v1/models/{m}[/versions/{v}]:predict, /v2/models/{m}[...]/infer."""
        call = RestCall(self.server, route, scope["path"], scope["headers"])
        try:
            call.check(self.limit)
            body = await read_body(receive, self.limit)
            payload = call.answer(await call.submit(body, self.limit, _gone_check(receive)))
        except Exception as exc:  # noqa: BLE001 - a bug must cost one request, not the server
            payload = call.fail(exc)
        if call.status != 499:  # 499: the client is gone, nobody reads an answer
            await send({"type": "http.response.start", "status": call.status,
                        "headers": call.headers(payload)})
            await send({"type": "http.response.body", "body": payload})
        call.finish()
