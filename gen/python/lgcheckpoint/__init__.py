"""Generated Protobuf and gRPC stubs of the checkpoint service."""
