"""The LangGraph checkpoint service: a gRPC server over SQLite or PostgreSQL."""
