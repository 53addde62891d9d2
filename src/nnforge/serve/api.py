"""FastAPI routes: health, metadata, model repository administration, metrics, OpenAPI.

Keys: one rule for REST and gRPC. With an API key set, every route needs it (in
`Authorization: Bearer <key>` or `X-API-Key: <key>`; X-API-Key wins when both come) except:

- the probes /v2/health/live and /v2/health/ready (gRPC ServerLive and ServerReady): Kubernetes
  and load balancers call them without credentials, and they tell nothing but up and ready;
- /metrics: Prometheus scrapes it without credentials (the pod annotations in
  deploy/kubernetes), as it scrapes Triton's and TorchServe's metrics. Its labels do name the
  models and versions: where those are secret, keep the port off untrusted networks.

The model repository routes (/v2/repository/..., gRPC Repository*) need the admin key instead,
and are off (403) while there is none. Everything else (the index /, metadata, readiness of a
model, statistics, /docs, /redoc, /openapi.json, paths that match no route) answers 401 without
the key, before any model is looked up: nothing tells a client without the key which models
exist. One gate in front of the router applies the rule (inference checks in rest.RestCall), so
a route added later is covered too.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException

from .. import __version__
from .core import CHALLENGE, InferenceServer, presented_key
from .errors import InvalidInputError, ServeError, UnavailableError
from .metrics import CONTENT_TYPE
from .repository import LoadedVersion
from .v2 import parse_json

log = logging.getLogger("nnforge.serve")
#: the raw inference handler: (kind, model, version), then the ASGI scope, receive, send
InferenceHandler = Callable[[tuple[str, "str | None", "str | None"], Any, Any, Any],
                            Awaitable[None]]
#: the paths that answer without a key, and where the admin key's paths begin (see above)
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
ADMIN_PREFIX = "/v2/repository/"
#: a V2 health route's "false": the protocol says 200 for true and a 4xx for false (a 503
#: reads as a broken server to clients and proxies); 400 is what Triton answers. An unknown
#: model or version is a 404, an unloaded model too: also 4xx, also "not ready".
#: Metadata and inference of a known model with no version ready are an error instead, 503
#: (UnavailableError; gRPC UNAVAILABLE), as in Triton: its "version is not at ready state" is
#: UNAVAILABLE, which its HTTP front end answers 503; V2 only asks for an error object there,
#: and a 503 tells clients and load balancers to retry elsewhere or later.
NOT_READY = 400

# -- documented bodies (the handlers parse with orjson; these feed /openapi.json) -------------
class ErrorBody(BaseModel):
    """Every error: a message naming what was expected and what was found."""

    error: str


class SimpleRequest(BaseModel):
    """One sample or a list of samples, under 'instances' or 'data' (exactly one of them)."""

    instances: list[Any] | None = Field(None, examples=[[[0.0, 1.5, 3.0]]], description=(
        "Samples (or one sample) of numbers; null marks a missing value where the model has "
        "an Imputer"))
    data: list[Any] | None = Field(None, description="the same as 'instances'")


class SimpleResponse(BaseModel):
    """One answer per sample: class, label, probabilities / probability / value(s)."""

    model_name: str
    model_version: str
    predictions: list[dict[str, Any]]


class V2Tensor(BaseModel):
    """A V2 tensor: row-major data (flat or nested), or a binary_data_size parameter."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2RequestedOutput(BaseModel):
    """An output to return; parameters.binary_data asks for it as binary data."""

    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """A V2 inference request (JSON; with the binary extension, the JSON header part)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(BaseModel):
    """A V2 inference response."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class LoadRequest(BaseModel):
    """Triton's repository load request (parameters are accepted and ignored)."""

    parameters: dict[str, Any] | None = None


class IndexRequest(BaseModel):
    """Triton's repository index request (one repository: repository_name is ignored)."""

    repository_name: str | None = None
    ready: bool = False


BodyT = TypeVar("BodyT", bound=BaseModel)


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    response = _json({"error": message}, status)
    if status == 401:
        response.raw_headers.append(CHALLENGE)
    return response


class _Raw(Response):
    """A response that hands the request to the raw inference handler."""

    def __init__(self, run: Callable[..., Awaitable[None]]) -> None:
        self.run, self.background = run, None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.run(scope, receive, send)


class _KeyGate:
    """ASGI middleware: the 401 or 403 of a request without the key its path needs."""

    def __init__(self, app: Any, server: InferenceServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        if scope["type"] == "http" and path not in OPEN_PATHS:
            key = presented_key(scope["headers"])
            try:
                if path.startswith(ADMIN_PREFIX):
                    self.server.check_admin_key(key)
                else:
                    self.server.check_api_key(key)
            except ServeError as exc:
                await _error(exc.status, str(exc))(scope, receive, send)
                return
        await self.app(scope, receive, send)


_ERRORS = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
           413: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def build_api(server: InferenceServer, inference: InferenceHandler) -> FastAPI:
    """The FastAPI application of every non-inference route (and inference, for the docs)."""
    app = FastAPI(title="nnforge serve", version=__version__,
                  description="Simple REST, KServe V2 REST (with the binary tensor data "
                              "extension), model repository administration and metrics. "
                              "The same models speak KServe V2 gRPC on the gRPC port.")
    repo = server.repository
    app.add_middleware(_KeyGate, server=server)

    @app.exception_handler(ServeError)
    async def serve_error(_: Request, exc: ServeError) -> Response:
        return _error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path}; see /docs")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal server error; see the server log")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, f"invalid request at {where or 'the body'}: "
                           f"{first.get('msg', 'malformed')}")

    # -- inference (the front app answers these paths itself; declared here for the docs) --
    for path, kind, body, answer, summary in (
            ("/predict", "simple", SimpleRequest, SimpleResponse,
             "Predict with the only served model"),
            ("/v1/models/{model}:predict", "simple", SimpleRequest, SimpleResponse,
             "Predict with a model (its latest served version)"),
            ("/v1/models/{model}/versions/{version}:predict", "simple", SimpleRequest,
             SimpleResponse, "Predict with one version of a model"),
            ("/v2/models/{model}/infer", "v2", V2InferRequest, V2InferResponse,
             "KServe V2 inference"),
            ("/v2/models/{model}/versions/{version}/infer", "v2", V2InferRequest,
             V2InferResponse, "KServe V2 inference with one version")):
        app.add_api_route(path, _inference_route(kind, inference), methods=["POST"],
                          summary=summary, response_model=answer, responses=_ERRORS,
                          openapi_extra={"requestBody": {"required": True, "content": {
                              "application/json": {"schema": {
                                  "$ref": f"#/components/schemas/{body.__name__}"}}}}})
    app.openapi = _with_request_schemas(app)  # type: ignore[method-assign]

    # -- health and metadata ----------------------------------------------------------------
    @app.get("/", summary="Server, models and where to start")
    async def index() -> Response:
        return _json({**server.server_metadata(), "models": sorted(repo.models),
                      "docs": "/docs", "health": "/v2/health/ready", "metrics": "/metrics"})

    # the probes answer HEAD too (some load balancers HEAD them): the same status and
    # headers, no body (Starlette drops a HEAD response's body); a HEAD route of its own, out
    # of the schema, as one GET+HEAD route would give /openapi.json a duplicate operationId.
    # The JSON bodies of GET are kept although V2 needs none: clients read the status only.
    @app.head("/v2/health/live", include_in_schema=False)
    @app.get("/v2/health/live", summary="Liveness",
             responses={NOT_READY: {"description": "draining: {\"live\": false}"}})
    async def live() -> Response:
        # server.live, as gRPC ServerLive: false while the server drains on shutdown
        return _json({"live": server.live}, 200 if server.live else NOT_READY)

    @app.head("/v2/health/ready", include_in_schema=False)
    @app.get("/v2/health/ready", summary="Readiness: every model has a version to serve",
             responses={NOT_READY: {"description": "not ready: {\"ready\": false}"}})
    async def ready() -> Response:
        ok = server.live and repo.ready()
        return _json({"ready": ok}, 200 if ok else NOT_READY)

    @app.get("/v2", summary="Server metadata")
    async def server_metadata() -> Response:
        return _json(server.server_metadata())

    # statistics first: /v2/models/stats is Triton's path for every model's statistics (no
    # model may be named "stats": repository.RESERVED_NAMES says why)
    @app.get("/v2/models/stats", summary="Statistics of every served version (Triton's)",
             responses=_ERRORS)
    @app.get("/v2/models/{model}/stats", summary="Statistics of a model's versions",
             responses=_ERRORS)
    @app.get("/v2/models/{model}/versions/{version}/stats",
             summary="Statistics of one model version", responses=_ERRORS)
    async def model_statistics(model: str | None = None, version: str | None = None
                               ) -> Response:
        return _json({"model_stats": await server.model_statistics(model, version)})

    @app.get("/v2/models/{model}", summary="Model metadata", responses=_ERRORS)
    @app.get("/v2/models/{model}/versions/{version}", summary="Model version metadata",
             responses=_ERRORS)
    async def model_metadata(model: str, version: str | None = None) -> Response:
        loaded = repo.get(model, version)
        return _json(loaded.model.metadata(_versions(server, model)))

    @app.get("/v2/models/{model}/ready", summary="Model readiness", responses=_ERRORS)
    @app.get("/v2/models/{model}/versions/{version}/ready", summary="Model version readiness",
             responses=_ERRORS)
    async def model_ready(model: str, version: str | None = None) -> Response:
        try:
            loaded = repo.get(model, version)
        except UnavailableError:  # known, but no version loaded yet (or all failed)
            return _json({"name": model, "ready": False}, NOT_READY)
        return _json({"name": model, "version": loaded.model.version, "ready": True})

    @app.get("/v2/models/{model}/config", summary="Model configuration (Triton's shape)",
             responses=_ERRORS)
    @app.get("/v2/models/{model}/versions/{version}/config",
             summary="Model version configuration", responses=_ERRORS)
    async def model_config(model: str, version: str | None = None) -> Response:
        return _json(_triton_config(repo.get(model, version), server))

    @app.get("/v1/models/{model}", summary="Model version status (TF Serving's shape)",
             responses=_ERRORS)
    @app.get("/v1/models/{model}/versions/{version}", summary="One version's status",
             responses=_ERRORS)
    async def model_status(model: str, version: str | None = None) -> Response:
        if version is not None:
            loaded = repo.get(model, version)
            return _json({"model_version_status": [_tf_status(loaded)],
                          "model": loaded.model.describe()})
        repo.get(model)  # 404 / 503 when there is nothing to describe
        entry = repo.models[model]
        return _json({"model_version_status": [_tf_status(v) for _, v in sorted(
            entry.versions.items(), key=lambda kv: -int(kv[0]))],
            "model": entry.versions[entry.default].model.describe() if entry.default else None})

    # -- model repository (Triton's API), behind the admin key -------------------------------
    # the bodies are read here, not by FastAPI: tritonclient.http sends its JSON body
    # without a Content-Type (and curl -d as a form), which FastAPI would refuse
    @app.post("/v2/repository/index", summary="Every model version on disk and its state",
              responses=_ERRORS, openapi_extra=_body_doc(IndexRequest))
    async def repository_index(request: Request) -> Response:
        body = await _admin_body(request, IndexRequest)
        return _json(await server.repository_index(body.ready))

    @app.post("/v2/repository/models/{model}/load",
              summary="Load (or reload) a model's versions from the repository",
              responses=_ERRORS, openapi_extra=_body_doc(LoadRequest))
    async def repository_load(model: str, request: Request) -> Response:
        await _admin_body(request, LoadRequest)
        await server.load_model(model)
        return _json({})

    @app.post("/v2/repository/models/{model}/unload", summary="Stop serving a model",
              responses=_ERRORS, openapi_extra=_body_doc(LoadRequest))
    async def repository_unload(model: str, request: Request) -> Response:
        await _admin_body(request, LoadRequest)
        await server.unload_model(model)
        return _json({})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response((await server.server_metrics()).render(), media_type=CONTENT_TYPE)

    return app


def _with_request_schemas(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """app.openapi, with the inference request bodies among the components: the routes refer
    to them by $ref, but FastAPI only defines the schemas of bodies that it parses itself."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            _, defs = models_json_schema([(SimpleRequest, "validation"),
                                          (V2InferRequest, "validation")],
                                         ref_template="#/components/schemas/{model}")
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                schemas.setdefault(name, schema)
        return app.openapi_schema
    return openapi


def _body_doc(body: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of an admin route (optional JSON of the given shape)."""
    return {"requestBody": {"required": False, "content": {
        "application/json": {"schema": body.model_json_schema()}}}}


async def _admin_body(request: Request, shape: type[BodyT]) -> BodyT:
    """An admin route's body as JSON whatever its Content-Type; an empty body is {}."""
    raw = await request.body()
    doc = parse_json(raw) if raw.strip() else None
    try:
        return shape.model_validate({} if doc is None else doc)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInputError(f"invalid request at {'body.' + where if where else 'body'}: "
                                f"{first.get('msg', 'malformed')}") from None


def _inference_route(kind: str, inference: InferenceHandler) -> Callable[..., Awaitable[Any]]:
    async def route(request: Request) -> Response:
        params = request.path_params
        return _Raw(partial_route(inference, (kind, params.get("model"),
                                              params.get("version"))))
    return route


def partial_route(inference: InferenceHandler, route: tuple[str, str | None, str | None]
                  ) -> Callable[..., Awaitable[None]]:
    """The raw handler bound to one parsed route."""
    async def run(scope: Any, receive: Any, send: Any) -> None:
        await inference(route, scope, receive, send)
    return run


def _versions(server: InferenceServer, model: str) -> list[str]:
    entry = server.repository.models.get(model)
    return sorted(entry.versions, key=int) if entry else []


def _tf_status(loaded: LoadedVersion) -> dict[str, Any]:
    return {"version": loaded.model.version, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}


def _triton_config(loaded: LoadedVersion, server: InferenceServer) -> dict[str, Any]:
    model, cfg = loaded.model, loaded.batcher.config

    def tensor(spec: Any) -> dict[str, Any]:
        return {"name": spec.name, "data_type": f"TYPE_{spec.datatype.replace('BYTES', 'STRING')}",
                "dims": list(spec.shape) or [1]}

    return {"name": model.name, "platform": "nnforge", "backend": "nnforge",
            "max_batch_size": cfg.max_batch_size,
            "input": [tensor(model.input)], "output": [tensor(s) for s in model.outputs],
            "dynamic_batching": {
                "max_queue_delay_microseconds": int(cfg.max_queue_delay_ms * 1000),
                "default_queue_policy": {"max_queue_size": cfg.max_queue_size,
                                         "default_timeout_microseconds":
                                             int(cfg.timeout_ms * 1000)}},
            "version_policy": str(server.repository.policy),
            "parameters": {"task": {"string_value": str(model.task)}}}
