"""nnforge serve: the model server (simple REST, KServe V2 REST and gRPC, batching, metrics)."""
