"""RPC: grpc.aio server and client runtime with deadlines, metadata and metrics."""
