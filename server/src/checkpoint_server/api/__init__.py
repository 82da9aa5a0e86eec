"""The gRPC layer: the only part of the server that knows the generated stubs."""
