"""nnforge serve: the model server (simple REST, KServe V2 REST and gRPC, batching, metrics).

From the command line: ``nnforge serve PATH``. From Python::

    from nnforge.serve import serve
    serve("models/", port=8000, max_batch_size=32)   # blocks until SIGINT / SIGTERM
"""

from __future__ import annotations

import os
from typing import Any, Callable


def serve(path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          grpc_port: int | None = 8001,
          on_ready: Callable[[dict[str, Any]], None] | None = None, **settings: Any) -> None:
    """Serve a .nnf file or a model repository until interrupted.

    `settings` are ServeConfig fields (version_policy, poll_interval_s, api_key, ...) or
    BatchingConfig fields (max_batch_size, max_queue_delay_ms, ...). `on_ready` is called
    with {"http": url, "http_port", "grpc_port", "models"} once the server listens.
    With `workers=N` (N > 1) the worker processes are spawned fresh interpreters that import
    the calling script again: call serve() under `if __name__ == "__main__":`.
    """
    from dataclasses import fields  # noqa: PLC0415 - keep `import nnforge.serve` light

    from .batcher import BatchingConfig  # noqa: PLC0415
    from .config import ServeConfig, apply_environment  # noqa: PLC0415
    from .server import run  # noqa: PLC0415

    batch_keys = {f.name for f in fields(BatchingConfig)}
    config = ServeConfig(path=os.fspath(path), host=host, port=port, grpc_port=grpc_port,
                         **{k: v for k, v in settings.items() if k not in batch_keys})
    for key in batch_keys & set(settings):
        setattr(config.batching, key, settings[key])
    apply_environment(config)
    run(config, on_ready)


__all__ = ["serve"]
