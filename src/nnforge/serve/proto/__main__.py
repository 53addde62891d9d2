"""Regenerate `_descriptor.py` from `grpc_service.proto` (needs grpcio-tools)."""

from . import DESCRIPTOR_MODULE, compile_proto, render_module

if __name__ == "__main__":
    DESCRIPTOR_MODULE.write_text(render_module(compile_proto()))
    print(f"wrote {DESCRIPTOR_MODULE}")
