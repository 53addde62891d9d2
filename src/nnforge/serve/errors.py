"""What a request can fail with: each error knows its HTTP status, gRPC code and metrics outcome."""

from __future__ import annotations

import logging

from ..errors import NNForgeError, ResourceError, format_bytes, requested_bytes

log = logging.getLogger("nnforge.serve")


class ServeError(Exception):
    """A request that cannot be answered normally; the message goes to the client."""

    status = 500
    grpc_code = "INTERNAL"
    outcome = "error"


class InvalidInputError(ServeError):
    """The client sent something malformed: wrong JSON, shape, datatype, parameter."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"
    outcome = "invalid_input"


class NotFoundError(ServeError):
    """Unknown model, version or route."""

    status = 404
    grpc_code = "NOT_FOUND"
    outcome = "invalid_input"


class UnauthorizedError(ServeError):
    """A missing or wrong API key."""

    status = 401
    grpc_code = "UNAUTHENTICATED"
    outcome = "unauthorized"


class ForbiddenError(ServeError):
    """An administration endpoint while administration is switched off."""

    status = 403
    grpc_code = "PERMISSION_DENIED"
    outcome = "unauthorized"


class PayloadTooLargeError(ServeError):
    """The body is larger than the configured limit."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    outcome = "invalid_input"


class UnsupportedMediaTypeError(ServeError):
    """A content type or content encoding the server does not read."""

    status = 415
    grpc_code = "INVALID_ARGUMENT"
    outcome = "invalid_input"


class QueueFullError(ServeError):
    """The batcher's bounded queue is full: the client should back off and retry."""

    status = 503
    grpc_code = "UNAVAILABLE"
    outcome = "rejected_queue_full"


class UnavailableError(ServeError):
    """The model version is shutting down or not loaded yet."""

    status = 503
    grpc_code = "UNAVAILABLE"
    outcome = "error"


class ClientTooSlowError(ServeError):
    """The client did not send its whole request within the read timeout."""

    status = 408
    grpc_code = "DEADLINE_EXCEEDED"
    outcome = "timeout"


class RequestTimeoutError(ServeError):
    """The request waited longer than its timeout."""

    status = 504
    grpc_code = "DEADLINE_EXCEEDED"
    outcome = "timeout"


class ClientGoneError(ServeError):
    """The client disconnected before its request was computed; nobody reads this answer."""

    status = 499
    grpc_code = "CANCELLED"
    outcome = "cancelled"


class ResourceExhaustedError(ServeError):
    """The server ran out of memory computing a request that may well be valid.

    503, not 400: the request is not at fault, and a 503 tells clients and load balancers to
    retry later or on another replica (the batcher has already retried it alone).
    """

    status = 503
    grpc_code = "RESOURCE_EXHAUSTED"
    outcome = "error"


def out_of_memory_error(exc: MemoryError) -> ResourceExhaustedError:
    """What the client is told when the server runs out of memory; the log says it too."""
    if isinstance(exc, ResourceError) and exc.what:
        what, amount = exc.what, exc.amount
    else:  # a MemoryError outside the runtime: decoding, batching, encoding the answer
        nbytes = requested_bytes(exc)
        what = "computing the request"
        amount = "unknown size" if nbytes is None else format_bytes(nbytes)
    log.warning("out of memory %s (%s)", what, amount)  # operators need to see it, not only 503s
    return ResourceExhaustedError(f"the server ran out of memory {what} ({amount}); retry "
                                  f"later, or send fewer rows per request")


def model_error(exc: Exception) -> Exception:
    """The ServeError for what computing a request raised (other exceptions as they are)."""
    if isinstance(exc, MemoryError):  # a ResourceError too: the server's, not the request's
        return out_of_memory_error(exc)
    if isinstance(exc, NNForgeError):
        return InvalidInputError(str(exc))
    return exc
