"""Benchmark of GrpcSaver against LangGraph's own SQLite and PostgreSQL savers.

Run with ``.venv/bin/python -m bench.run`` (add ``--quick`` for a short run).
"""
