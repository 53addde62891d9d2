"""A shorter HTTP/1.1 path for inference requests, inside uvicorn's httptools protocol.

For every request uvicorn builds an ASGI request/response cycle with an event, starts a task,
validates the headers of the response against regular expressions and writes the status line
and the body with two system calls. For the inference routes this protocol skips all of it:
it gathers the body in the parser callbacks, queues it on the batcher right there, and writes
the whole response with one call from the batch's completion callback; no task per request.
Everything else (other routes, keep-alive, timeouts, pipelining order, graceful shutdown,
bad requests) stays with uvicorn: an inference request takes the place of uvicorn's cycle
object, offering the attributes uvicorn's connection code uses.

When this uvicorn does not have the internals it relies on, `protocol_class` answers None
and the server uses uvicorn's own protocol; inference then goes through ASGI, same answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import ClientGoneError, ClientTooSlowError, PayloadTooLargeError, UnavailableError
from .rest import RestCall, Route, match_inference

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # no httptools: uvicorn's h11 protocol serves everything
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

#: what the protocol uses of uvicorn's HttpToolsProtocol (checked before it is used)
_NEEDED = ("on_headers_complete", "on_body", "on_message_complete", "on_response_complete",
           "shutdown", "connection_lost", "_start_asgi_task", "on_message_begin",
           "data_received", "connection_made", "timeout_keep_alive_handler")


class _NoEvent:
    """uvicorn calls cycle.message_event.set() to wake a cycle's reader; nothing waits here."""

    def set(self) -> None:
        """Nothing to wake."""


_NO_EVENT = _NoEvent()


class _InferenceCycle:
    """An inference request in the place of uvicorn's RequestResponseCycle."""

    __slots__ = ("protocol", "call", "chunks", "size", "error", "keep_alive", "more_body",
                 "response_complete", "disconnected", "queued", "message_event")

    def __init__(self, protocol: Any, call: RestCall, keep_alive: bool) -> None:
        self.protocol, self.call, self.keep_alive = protocol, call, keep_alive
        self.chunks: list[bytes] = []
        self.size = 0
        self.error: BaseException | None = None
        self.more_body, self.response_complete, self.disconnected = True, False, False
        self.queued = False  # waits behind another response on this connection (pipelining)
        self.message_event = _NO_EVENT

    def gone(self) -> bool:
        """Whether the client disconnected (uvicorn sets the flag)."""
        return self.disconnected

    async def run_asgi(self, app: Any) -> None:
        """uvicorn starts a pipelined cycle in its turn this way."""
        self.queued = False
        self.start()

    def start(self) -> None:
        """Queue the request on the batcher once its body is in and its turn has come."""
        if self.more_body or self.queued:
            return
        call = self.call
        if self.error is not None:
            self.respond(call.fail(self.error))
            return
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        try:
            future = call.submit(body, self.protocol.handler.limit, self.gone)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error response
            self.respond(call.fail(exc))
            return
        future.add_done_callback(self.done)

    def done(self, future: asyncio.Future) -> None:
        """The batch is computed (or the request failed): answer."""
        call = self.call
        try:
            payload = call.answer(future.result())
        except asyncio.CancelledError:
            payload = call.fail(ClientGoneError("the request was cancelled"))
        except Exception as exc:  # noqa: BLE001
            payload = call.fail(exc)
        self.respond(payload)

    def respond(self, payload: bytes) -> None:
        """Write status line, headers and body with one call; hand the connection back."""
        protocol, call = self.protocol, self.call
        keep_alive = self.keep_alive and call.status != 413
        if not self.disconnected and call.status != 499 and \
                not protocol.transport.is_closing():
            parts = [STATUS_LINE[call.status]]
            for name, value in (*protocol.server_state.default_headers, *call.headers(payload)):
                parts += (name, b": ", value, b"\r\n")
            if not keep_alive and call.status != 413:  # a 413 says so already
                parts.append(b"connection: close\r\n")
            parts += (b"\r\n", payload)
            protocol.transport.write(b"".join(parts))
        self.response_complete = True
        call.finish()
        if not keep_alive or self.disconnected:
            protocol.transport.close()
        protocol.on_response_complete()
        self.protocol = None  # the protocol keeps this cycle: break the reference loop


if HttpToolsProtocol is not None:
    class FastHttpProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the inference routes answered directly."""

        handler: Any = None  # the ServeApp, set on the subclass made by protocol_class()
        read_timeout_s = 0.0  # set with the handler; 0: no limit
        _reading = False  # between the first byte of a request and its last
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # uvicorn arms its keep-alive timer only after a response: a connection that never
            # sends a byte would otherwise hold one of max_connections forever
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # a request still incomplete after this read gets read_timeout_s in all (slowloris
            # clients send a byte now and then); a whole request in one read costs one test
            if self._reading and self._read_timer is None and self.read_timeout_s and \
                    not self.transport.is_closing():
                self._read_timer = self.loop.call_later(self.read_timeout_s, self._too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading = True

        def _too_slow(self) -> None:
            """The client took over read_timeout_s to send its request: 408, close."""
            self._read_timer = None
            if not self._reading or self.transport.is_closing():
                return
            cycle, error = self.cycle, ClientTooSlowError(
                f"the whole request must arrive within {self.read_timeout_s:g} s")
            if type(cycle) is _InferenceCycle and cycle.more_body and not cycle.queued:
                cycle.keep_alive = False
                cycle.respond(cycle.call.fail(error))  # counted and logged like any request
                return
            if cycle is None or cycle.response_complete:  # still in the headers: no response
                body = b'{"error":"%s"}' % str(error).encode()  # is under way, answer here
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: "
                                     b"application/json\r\nconnection: close\r\n"
                                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()  # an ASGI app reading the body sees a disconnect

        def on_headers_complete(self) -> None:
            parser = self.parser
            if parser.get_method() == b"POST" and not parser.should_upgrade():
                path = httptools.parse_url(self.url).path
                # an escaped path (%xx) is rare here: uvicorn's own path decodes it
                route = None if b"%" in path else match_inference(path.decode("ascii"))
                if route is not None:
                    self._begin_inference(route, path.decode("ascii"))
                    return
            super().on_headers_complete()

        def _begin_inference(self, route: Route, path: str) -> None:
            handler, parser = self.handler, self.parser
            call = RestCall(handler.server, route, path, self.headers)
            keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"
            cycle = _InferenceCycle(self, call, keep_alive)
            previous, self.cycle = self.cycle, cycle
            if self.limit_concurrency is not None and \
                    len(self.connections) >= self.limit_concurrency:
                cycle.error = UnavailableError("the server has too many connections; retry")
            else:
                try:
                    call.check(handler.limit)
                except Exception as exc:  # noqa: BLE001 - answered once the body is in
                    cycle.error = exc
            if self.expect_100_continue and cycle.error is None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if previous is not None and not previous.response_complete:
                cycle.queued = True  # uvicorn starts it when the previous response is out
                self.flow.pause_reading()
                self.pipeline.appendleft((cycle, None))

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if type(cycle) is not _InferenceCycle:
                super().on_body(body)
                return
            if cycle.error is None:
                cycle.size += len(body)
                if cycle.size > self.handler.limit:
                    cycle.error = PayloadTooLargeError(
                        f"the body may hold at most {self.handler.limit} bytes, found more")
                    cycle.chunks = []
                else:
                    cycle.chunks.append(body)

        def on_message_complete(self) -> None:
            self._reading = False
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            cycle = self.cycle
            if type(cycle) is not _InferenceCycle:
                super().on_message_complete()
                return
            cycle.more_body = False
            cycle.start()


def protocol_class(app: Any) -> type | None:
    """uvicorn's `http` setting for the app: the fast protocol, or None to use uvicorn's."""
    if HttpToolsProtocol is None or not all(hasattr(HttpToolsProtocol, n) for n in _NEEDED):
        return None
    return type("NNForgeHttpProtocol", (FastHttpProtocol,),
                {"handler": app, "read_timeout_s": app.server.config.read_timeout_s})
