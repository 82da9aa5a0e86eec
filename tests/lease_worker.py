"""A worker process for tests/test_leases.py: runs turns of one graph on one shared thread.

``python -m tests.lease_worker TARGET NAMESPACE THREAD NAME TURNS PERIOD MODE`` prints
``{"ready": true}`` once connected, reads a start time (seconds since the epoch) from stdin,
runs turn k at ``START + k * PERIOD`` (wall clock, so that two workers start each turn
together), and prints one JSON line per turn: ``{"turn": k, "won": bool, "error": ...}``.
MODE is ``lease`` (each turn inside ``saver.lease``), ``plain`` (no lease) or ``hang`` (lease;
the second turn's node never returns, so the test can kill the worker while it holds it).
"""

from __future__ import annotations

import json
import operator
import sys
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import START, StateGraph

from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError

# Long enough that two runs started together overlap: both read the same latest checkpoint.
NODE_SECONDS = 0.4


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def graph(saver: GrpcSaver, name: str, *, hang: bool = False) -> Any:
    """START -> work: logs ``name:turn``; with ``hang``, never returns on the second turn."""

    def work(state: Log) -> Log:
        turn = len(state["log"])
        if hang and any(e.startswith(f"{name}:") for e in state["log"]):
            print(json.dumps({"holding": True}), flush=True)
            time.sleep(3600)
        time.sleep(NODE_SECONDS)
        return {"log": [f"{name}:{turn}"]}

    builder = StateGraph(Log)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    return builder.compile(checkpointer=saver)


def main(argv: list[str]) -> None:
    target, namespace, thread_id, name, turns, period, mode = argv
    config: Any = {"configurable": {"thread_id": thread_id}}
    with GrpcSaver.from_conn_string(target, namespace=namespace) as saver:
        app = graph(saver, name, hang=mode == "hang")
        app.get_state(config)  # connected, and every import done
        print(json.dumps({"ready": True}), flush=True)
        start = float(sys.stdin.readline())
        for turn in range(int(turns)):
            time.sleep(max(0.0, start + turn * float(period) - time.time()))
            try:
                if mode == "plain":
                    app.invoke({"log": []}, config)
                else:
                    with saver.lease(thread_id, ttl=2):
                        app.invoke({"log": []}, config)
            except GrpcSaverError as error:
                print(json.dumps({"turn": turn, "won": False, "error": error.details}), flush=True)
                continue
            print(json.dumps({"turn": turn, "won": True, "error": None}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
