"""The gRPC transport of the sidecar."""

from sidecar.grpc.server import GrpcServer

__all__ = ["GrpcServer"]
