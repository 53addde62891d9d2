"""The KServe V2 gRPC service `inference.GRPCInferenceService` on grpc.aio.

Message classes come from the committed descriptor of proto/grpc_service.proto, added to a
private descriptor pool: the messages are `inference.*` as the protocol requires, yet they do
not collide with another package (tritonclient.grpc) registering the same names in protobuf's
default pool of the same process.

Keys follow the rule written in api.py: ServerLive and ServerReady answer without one, the
Repository* methods need the admin key, every other method the API key (metadata
`authorization: Bearer <key>` or `x-api-key: <key>`). The generic handler checks the key
before it parses the request (see _guard).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Awaitable, Callable

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from .core import InferenceServer, presented_key
from .errors import (
    InvalidInputError,
    NotFoundError,
    ServeError,
    UnavailableError,
    out_of_memory_error,
)
from .proto._descriptor import SERIALIZED
from .tensors import (
    DATATYPES,
    NUMERIC_TO_MODEL,
    bytes_tensor,
    check_kind,
    check_shape,
    to_model_rows,
)
from .v2 import classification_count, output_tensors, timeout_seconds

log = logging.getLogger("nnforge.serve")
SERVICE = "inference.GRPCInferenceService"
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(SERIALIZED))


def message(name: str) -> Any:
    """The message class `inference.<name>` (nested names with dots)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"inference.{name}"))


METHODS = {  # rpc name -> (request, response) message names
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse"),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse"),
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"),
}
MESSAGES = {n: message(n) for pair in METHODS.values() for n in pair}
#: typed contents field of each datatype (requests may use these instead of raw bytes)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_GRPC_CODES = {c.name: c for c in grpc.StatusCode}


def decode_infer(req: Any, spec: Any, model_name: str) -> np.ndarray:
    """The model's input rows from a ModelInferRequest (raw or typed contents)."""
    if len(req.inputs) != 1 or req.inputs[0].name != spec.name:
        found = [t.name for t in req.inputs]
        raise InvalidInputError(f"model {model_name!r} has one input, {spec.name!r}; found "
                                f"{found!r:.80}")
    t = req.inputs[0]
    what = f"input {spec.name!r}"
    shape = check_shape(list(t.shape), what)
    if t.datatype not in NUMERIC_TO_MODEL:
        raise InvalidInputError(f"{what}: expected one of {list(NUMERIC_TO_MODEL)}, found "
                                f"{t.datatype!r:.40}")
    dtype = DATATYPES[t.datatype]
    count = math.prod(shape)  # Python integers: a product of huge dimensions must not wrap
    if len(req.raw_input_contents):
        if len(req.raw_input_contents) != 1:
            raise InvalidInputError(f"expected 1 raw_input_contents entry, found "
                                    f"{len(req.raw_input_contents)}")
        if t.HasField("contents"):  # which of the two holds the tensor? (Triton refuses too)
            raise InvalidInputError(f"{what}: expected its values in raw_input_contents or in "
                                    f"contents, found both")
        raw = req.raw_input_contents[0]
        if len(raw) != count * dtype.itemsize:
            raise InvalidInputError(f"{what}: shape {shape} of {t.datatype} needs "
                                    f"{count * dtype.itemsize} bytes, found {len(raw)}")
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if t.datatype == "BOOL":  # one byte each: any byte but 0 is true, as in C
            arr = arr.view(np.uint8) != 0
    else:
        if t.datatype not in _CONTENTS:
            raise InvalidInputError(f"{what}: {t.datatype} tensors have no typed contents "
                                    f"field; send them in raw_input_contents")
        values = getattr(t.contents, _CONTENTS[t.datatype])
        if len(values) != count:
            raise InvalidInputError(f"{what}: shape {shape} needs {count} values in "
                                    f"contents.{_CONTENTS[t.datatype]}, found {len(values)}")
        arr = check_kind(np.array(values).reshape(shape), t.datatype, what)
    return to_model_rows(arr, spec, what, allow_single=False)


def encode_infer(model: Any, tensors: list[tuple[str, str, np.ndarray]], rid: str) -> Any:
    """A ModelInferResponse with every output in raw_output_contents (what clients read)."""
    resp = MESSAGES["ModelInferResponse"](model_name=model.name, model_version=model.version,
                                          id=rid)
    for name, datatype, arr in tensors:
        resp.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        resp.raw_output_contents.append(
            bytes_tensor(arr) if datatype == "BYTES"
            else np.ascontiguousarray(arr, DATATYPES[datatype]).tobytes())
    return resp


def _param(p: Any) -> Any:
    """The value of an InferParameter, whichever field of its oneof holds it."""
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _key(context: Any) -> bytes | None:
    return presented_key(context.invocation_metadata() or ())


class InferenceService:
    """The rpc methods, answering from the shared InferenceServer."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - rpc names
        """Whether the process is up."""
        return MESSAGES["ServerLiveResponse"](live=self.server.live)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Whether every model has a version to serve."""
        return MESSAGES["ServerReadyResponse"](
            ready=self.server.live and self.server.repository.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Whether a model (version) can answer now."""
        try:
            self.server.repository.get(request.name, request.version or None)
        except (NotFoundError, UnavailableError, InvalidInputError):
            return MESSAGES["ModelReadyResponse"](ready=False)
        return MESSAGES["ModelReadyResponse"](ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Name, version and extensions of the server."""
        return MESSAGES["ServerMetadataResponse"](**self.server.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Inputs and outputs of a model (version)."""
        loaded = self.server.repository.get(request.name, request.version or None)
        doc = loaded.model.metadata(sorted(self.server.repository.models[request.name].versions,
                                           key=int))
        return MESSAGES["ModelMetadataResponse"](**doc)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Run a request through the model version's batcher."""
        arrived = time.perf_counter()
        server = self.server
        rid = server.request_id(request.id or None)
        loaded, outcome, status = None, "success", "OK"
        try:
            loaded = server.repository.get(request.model_name, request.model_version or None)
            model = loaded.model
            x = decode_infer(request, model.input, model.name)
            known = [s.name for s in model.outputs]
            names = [o.name for o in request.outputs] or known
            for name in names:
                if name not in known:
                    raise InvalidInputError(f"expected an output among {known}, found "
                                            f"{name!r:.60}")
            classify = {o.name: classification_count(
                model, o.name, _param(o.parameters["classification"]), f"output {o.name!r}")
                for o in request.outputs if "classification" in o.parameters}
            timeout = timeout_seconds(_param(request.parameters["timeout"]), "the request") \
                if "timeout" in request.parameters else None
            out = await server.infer(loaded, x, arrived, None, timeout)
            return encode_infer(model, output_tensors(model, out, names, classify), request.id)
        except (ServeError, MemoryError) as exc:  # MemoryError: RESOURCE_EXHAUSTED, as in REST
            err = exc if isinstance(exc, ServeError) else out_of_memory_error(exc)
            outcome, status = err.outcome, err.grpc_code
            await context.abort(_GRPC_CODES[err.grpc_code], str(err))
        except asyncio.CancelledError:
            outcome, status = "cancelled", "CANCELLED"
            raise
        except Exception:  # a bug must cost one request, not the connection
            log.exception("request %s failed", rid)
            outcome, status = "error", "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal server error (request id {rid}); see the server log")
        finally:
            server.finish(loaded, request.model_name, outcome, arrived, {
                "request_id": rid, "method": "ModelInfer", "path": SERVICE, "status": status,
                "protocol": "grpc"})


    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Triton's statistics of the served versions (of one model, or one version)."""
        docs = await self.server.model_statistics(request.name or None,
                                                  request.version or None)
        return MESSAGES["ModelStatisticsResponse"](model_stats=docs)

    # -- Triton's model repository extension, behind the admin key --------------------------
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Every version on disk or served, with its state."""
        resp = MESSAGES["RepositoryIndexResponse"]()
        for row in await self.server.repository_index(request.ready):
            resp.models.add(name=row["name"], version=row["version"],
                            state=row.get("state", ""), reason=row.get("reason", ""))
        return resp

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Load (or reload) a model's versions from the repository."""
        await self.server.load_model(request.model_name)
        return MESSAGES["RepositoryModelLoadResponse"]()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Stop serving a model until it is loaded again."""
        await self.server.unload_model(request.model_name)
        return MESSAGES["RepositoryModelUnloadResponse"]()


#: the rpcs that answer without a key (the probes) and those behind the admin key (api.py)
OPEN_RPCS = frozenset({"ServerLive", "ServerReady"})
ADMIN_RPCS = frozenset({"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"})


def _gate(server: InferenceServer, rpc: str) -> Callable[[Any], None] | None:
    """The key check of an rpc, on its metadata alone (None: the rpc needs no key)."""
    if rpc in OPEN_RPCS:
        return None
    check = server.check_admin_key if rpc in ADMIN_RPCS else server.check_api_key
    return lambda context: check(_key(context))


def _guard(fn: Callable[[Any, Any], Awaitable[Any]], parse: Callable[[bytes], Any],
           gate: Callable[[Any], None] | None,
           refused: Callable[[ServeError, float], None] | None = None
           ) -> Callable[[bytes, Any], Awaitable[Any]]:
    """Check the key, then parse the request here, then run the rpc; a ServeError becomes its
    code. The key comes first, from the metadata: a client without it must not make the server
    parse (or even look at) a message of up to the receive limit. Parsing here, not in grpc's
    deserializer, also makes a corrupt message INVALID_ARGUMENT instead of UNKNOWN."""
    async def call(data: bytes, context: Any) -> Any:
        arrived = time.perf_counter()
        try:
            if gate is not None:
                gate(context)
            request = parse(data)
        except ServeError as exc:
            if refused is not None:
                refused(exc, arrived)
            await context.abort(_GRPC_CODES[exc.grpc_code], str(exc))
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the request is not a valid protobuf message: {exc}")
        try:
            return await fn(request, context)
        except ServeError as exc:
            await context.abort(_GRPC_CODES[exc.grpc_code], str(exc))
    return call


def generic_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The service's method table for grpc.aio."""
    server = service.server

    def refused_infer(exc: ServeError, arrived: float) -> None:
        # counted and logged like a REST inference refused for its key (model not parsed)
        server.finish(None, None, exc.outcome, arrived, {
            "request_id": server.request_id(None), "method": "ModelInfer", "path": SERVICE,
            "status": exc.grpc_code, "protocol": "grpc"})

    table = {}
    for rpc, (req, resp) in METHODS.items():
        table[rpc] = grpc.unary_unary_rpc_method_handler(
            _guard(getattr(service, rpc), MESSAGES[req].FromString, _gate(server, rpc),
                   refused_infer if rpc == "ModelInfer" else None),
            response_serializer=MESSAGES[resp].SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE, table)
