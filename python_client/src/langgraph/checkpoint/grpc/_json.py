"""JsonSerializer: values stored as JSON that LangGraph.js reads too.

It makes threads shared across languages possible. LangGraph's default serializer writes
msgpack naming Python classes, which JavaScript cannot read. This one writes ``("json", ...)``
in the form LangGraph.js's ``JsonPlusSerializer`` writes and reads: plain JSON for JSON types,
and LangChain's serialized constructor form for messages, under the ids LangGraph.js knows
(``["langchain_core", "messages", "HumanMessage"]``), which Python's LangChain loader maps back
to its classes. LangGraph's own types that JavaScript has no class for (``Send``,
``Interrupt``, ``Command``, sets, UUIDs, decimals) are written as the ``lc: 2`` constructor
records Python's ``JsonPlusSerializer`` revives, so a Python-only thread keeps working;
LangGraph.js leaves those records as plain objects.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from decimal import Decimal
from typing import Any

from langchain_core.load.serializable import Serializable
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command, Interrupt, Overwrite, Send

# LangChain's Python id of a message class (langchain.schema.messages.X) is unknown to
# LangGraph.js; its own id is, and Python's loader maps that id to the same class.
_PYTHON_MESSAGE_ID = ["langchain", "schema", "messages"]
_JS_MESSAGE_ID = ["langchain_core", "messages"]


def _constructor(
    cls: type, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A record Python's JsonPlusSerializer revives by calling ``cls(*args, **kwargs)``."""
    return {
        "lc": 2,
        "type": "constructor",
        "id": [*cls.__module__.split("."), cls.__name__],
        "method": None,
        "args": args or [],
        "kwargs": kwargs or {},
    }


def _encode(obj: Any) -> Any:
    """The JSON form of a value ``json`` cannot write by itself."""
    if isinstance(obj, BaseMessage):
        data: dict[str, Any] = dict(obj.to_json())
        if data.get("id", [])[:3] == _PYTHON_MESSAGE_ID:
            data["id"] = [*_JS_MESSAGE_ID, *data["id"][3:]]
        return data
    if isinstance(obj, Serializable):
        return obj.to_json()
    if isinstance(obj, Send):
        return _constructor(Send, kwargs={"node": obj.node, "arg": obj.arg})
    if isinstance(obj, Interrupt):
        return _constructor(Interrupt, kwargs={"value": obj.value, "id": obj.id})
    if isinstance(obj, Command | Overwrite):
        return _constructor(type(obj), kwargs={f.name: getattr(obj, f.name) for f in fields(obj)})
    if isinstance(obj, set | frozenset):
        return _constructor(type(obj), args=[sorted(obj, key=repr)])
    if isinstance(obj, uuid.UUID | Decimal):
        return _constructor(type(obj), args=[str(obj)])
    if isinstance(obj, BaseException):
        # LangGraph stores a failed task's exception; both languages read it back as empty.
        return _constructor(type(obj), args=[str(obj)])
    raise TypeError(
        f"JsonSerializer cannot store a {type(obj).__module__}.{type(obj).__qualname__}: "
        "use JSON types or LangChain messages (or LangGraph's default serializer for "
        "Python-only threads)"
    )


class JsonSerializer(SerializerProtocol):
    """A serializer whose values both the Python and the TypeScript client read.

    Pass it as ``GrpcSaver(..., serde=JsonSerializer())`` to share threads with LangGraph.js
    agents (whose default serializer already writes this form). What crosses: ``None``,
    booleans, numbers, strings, lists and dicts with string keys, ``bytes`` as a whole value,
    and LangChain messages (human, AI with tool calls, system, tool, and their chunks).
    Tuples come back as lists. Other values are refused with a ``TypeError`` rather than
    stored in a form that would read back as something else. Values stored by another
    serializer (msgpack) are still read, so a thread can switch.
    """

    def __init__(self) -> None:
        """Creates the serializer."""
        self._reader = JsonPlusSerializer()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """``("bytes", obj)`` for bytes, ``("json", utf-8 JSON)`` for everything else."""
        if isinstance(obj, bytes):
            return "bytes", obj
        text = json.dumps(
            obj, default=_encode, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return "json", text.encode()

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Reads what this serializer, LangGraph.js's or LangGraph's default one wrote."""
        return self._reader.loads_typed(data)
