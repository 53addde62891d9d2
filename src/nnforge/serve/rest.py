"""One REST inference request, whichever HTTP layer carries it (ASGI or the fast protocol).

The steps: `RestCall(...)` reads the headers and checks the key and the declared size; once
the body is in, `submit(body)` decodes it and queues it on the model's batcher (for a small
body, no await between choosing the version and queueing, so a reload cannot swap it out in
between; a large body is decoded on a thread, and the version is looked up again after);
`answer(outputs)` or `fail(exc)` make the response body; `finish()` counts and logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import orjson

from .core import CHALLENGE, InferenceServer, decode_simple
from .errors import (
    InvalidInputError,
    PayloadTooLargeError,
    ServeError,
    UnavailableError,
    UnsupportedMediaTypeError,
    out_of_memory_error,
)
from .model import Outputs
from .repository import LoadedVersion
from .v2 import NUMPY, Requested, decode_request, encode_response, parse_json

log = logging.getLogger("nnforge.serve")
JSON_TYPE = b"application/json"
BINARY_TYPE = b"application/octet-stream"
Route = tuple[str, "str | None", "str | None"]
#: bodies up to this size are decoded on the event loop. JSON decoding (orjson, then packing
#: the numbers) costs about 11 ns a byte: 256 KiB stall the loop for about 3 ms, like one
#: small batch's forward pass, while a thread hop costs about 0.1 ms, a few percent of that.
#: A 16 MiB body would stall every other request for 0.2 to 1 s. Compressed bodies always go
#: to the thread: their decoded size is unknown up front, and zlib releases the GIL.
INLINE_DECODE_BYTES = 256 * 1024
_decoder: ThreadPoolExecutor | None = None


def _decode_executor() -> ThreadPoolExecutor:
    """The thread that decodes large bodies (one: decoding holds the GIL most of the time,
    so more threads would not decode faster, only take more of the event loop's turns)."""
    global _decoder
    if _decoder is None:
        _decoder = ThreadPoolExecutor(1, thread_name_prefix="nnforge-decode")
    return _decoder


def match_inference(path: str) -> Route | None:
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


def _int_header(name: str, value: bytes | None) -> int | None:
    if value is None:
        return None
    digits = value.strip()
    if not digits.removeprefix(b"-").isdigit() or len(digits) > 19:  # int() takes "1_0" too
        raise InvalidInputError(f"{name} must be an integer, found "
                                f"{value.decode('latin-1')!r:.40}")
    return int(digits)


class RestCall:
    """The state of one REST inference request."""

    __slots__ = ("server", "route", "path", "arrived", "rid", "length", "key", "encoding",
                 "header_length", "loaded", "status", "outcome", "content_type", "out_header",
                 "requested", "request_id")

    def __init__(self, server: InferenceServer, route: Route, path: str,
                 headers: list[tuple[bytes, bytes]], arrived: float | None = None) -> None:
        self.server, self.route, self.path = server, route, path
        self.arrived = time.perf_counter() if arrived is None else arrived
        self.length = self.key = self.encoding = self.header_length = None
        rid = None
        for k, v in headers:  # names are lower case (uvicorn and httptools both do that)
            if k == b"content-length":
                self.length = v
            elif k == b"inference-header-content-length":
                self.header_length = v
            elif k == b"x-request-id":
                rid = v.decode("latin-1")
            elif k == b"content-encoding":
                self.encoding = v
            elif k == b"x-api-key":
                self.key = v
            elif k == b"authorization" and self.key is None:
                self.key = v[7:] if v[:7].lower() == b"bearer " else v
        self.rid = server.request_id(rid)
        self.loaded: LoadedVersion | None = None
        self.status, self.outcome = 200, "success"
        self.content_type, self.out_header = JSON_TYPE, None
        self.requested: Requested | None = None
        self.request_id = None

    def check(self, limit: int) -> int | None:
        """Key and declared body size, before the body is read; the declared size."""
        self.server.check_api_key(self.key)
        declared = _int_header("Content-Length", self.length)
        if declared is not None and declared > limit:
            raise PayloadTooLargeError(f"the body may hold at most {limit} bytes, found a "
                                       f"Content-Length of {declared}")
        return declared

    def submit(self, body: bytes, limit: int,
               gone: Callable[[], bool] | None = None) -> asyncio.Future:
        """Decode the body and queue it on the model's batcher (a future of the outputs)."""
        if self.encoding is None and len(body) <= INLINE_DECODE_BYTES:
            x = self.decode(body, limit, self._resolve())
            return self.server.submit(self.loaded, x, self.arrived, gone, self._timeout())
        return asyncio.ensure_future(self._submit_large(body, limit, gone))

    async def _submit_large(self, body: bytes, limit: int,
                            gone: Callable[[], bool] | None) -> asyncio.Future:
        loaded = self._resolve()  # an unknown model is a 404 before any decoding
        loop = asyncio.get_running_loop()
        x = await loop.run_in_executor(_decode_executor(), self.decode, body, limit, loaded)
        # the version may have been swapped meanwhile: its successor takes the rows when it
        # reads the same input and outputs (what a new version of a model usually does)
        current = self._resolve()
        if current is not loaded and (current.model.input != loaded.model.input or [
                s.name for s in current.model.outputs] != [s.name for s in loaded.model.outputs]):
            raise UnavailableError("the model version changed while the request was decoded; "
                                   "retry")
        return await self.server.submit(current, x, self.arrived, gone, self._timeout())

    def _timeout(self) -> float | None:
        """The request's own timeout (V2 parameter 'timeout'), when it gave one."""
        return self.requested.timeout_s if self.requested is not None else None

    def _resolve(self) -> LoadedVersion:
        """The version the route names (or the only model's), as self.loaded."""
        kind, name, version = self.route
        repo = self.server.repository
        if kind == "simple" and name is None:
            name = repo.only_model()
        self.loaded = repo.get(name or "", version)
        return self.loaded

    def decode(self, body: bytes, limit: int, loaded: LoadedVersion) -> np.ndarray:
        """The model's input rows from the body (it may run on a thread: it touches no
        shared state, only this call's)."""
        if self.encoding is not None:
            body = decompress(body, self.encoding, limit)
        if self.route[0] == "simple":
            maybe_bools = body.find(b"true") >= 0 or body.find(b"false") >= 0
            return decode_simple(parse_json(body), loaded.model, maybe_bools)
        hlen = _int_header("Inference-Header-Content-Length", self.header_length)
        x, self.requested, self.request_id = decode_request(body, hlen, loaded.model)
        return x

    def answer(self, out: Outputs) -> bytes:
        """The response body for the model's outputs."""
        assert self.loaded is not None
        model = self.loaded.model
        if self.requested is None:
            return orjson.dumps({"model_name": model.name, "model_version": model.version,
                                 "predictions": model.rows(out)}, option=NUMPY)
        payload, self.out_header = encode_response(model, out, self.requested,
                                                   self.request_id)
        if self.out_header is not None:
            self.content_type = BINARY_TYPE
        return payload

    def fail(self, exc: BaseException) -> bytes:
        """The error response body; the status and outcome follow the error."""
        if isinstance(exc, MemoryError):  # decoding or encoding: the server's fault, not a bug
            exc = out_of_memory_error(exc)
        if isinstance(exc, ServeError):
            self.status, self.outcome = exc.status, exc.outcome
            return orjson.dumps({"error": str(exc)})
        log.error("request %s failed", self.rid, exc_info=exc)
        self.status, self.outcome = 500, "error"
        return orjson.dumps({"error": f"internal server error (request id {self.rid}); see "
                                      f"the server log"})

    def headers(self, payload: bytes) -> list[tuple[bytes, bytes]]:
        """Response headers (a 413 closes the connection: its unread body would follow)."""
        out = [(b"content-type", self.content_type), (b"content-length", b"%d" % len(payload)),
               (b"x-request-id", self.rid.encode("latin-1"))]
        if self.out_header is not None:
            out.append((b"inference-header-content-length", b"%d" % self.out_header))
        if self.status == 413:
            out.append((b"connection", b"close"))
        elif self.status == 401:
            out.append(CHALLENGE)
        return out

    def finish(self) -> None:
        """Count the outcome and write the access record."""
        self.server.finish(self.loaded, self.route[1], self.outcome, self.arrived, {
            "request_id": self.rid, "method": "POST", "path": self.path,
            "status": self.status, "protocol": "http"})
