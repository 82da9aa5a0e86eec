"""Parsing requests so that malformed bytes become an error naming the field."""

from collections import defaultdict
from typing import TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

_M = TypeVar("_M", bound=Message)


class MalformedRequest:
    """Stands in for a request that could not be parsed.

    gRPC would answer a parser exception with INTERNAL; handing the servicer this instead
    lets it answer INVALID_ARGUMENT naming the field.
    """

    def __init__(self, field: str) -> None:
        """Records the path of the offending field."""
        self.field = field


def parse(message_type: type[_M], data: bytes) -> _M | MalformedRequest:
    """Parses a request, or describes where it is malformed."""
    try:
        return message_type.FromString(data)
    except DecodeError:
        descriptor = cast(Descriptor, message_type.DESCRIPTOR)
        return MalformedRequest(_invalid_field(descriptor, data) or "request")


def _invalid_field(descriptor: Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The path of the first string field that is not UTF-8, or of the malformed field."""
    seen: defaultdict[int, int] = defaultdict(int)
    position = 0
    try:
        while position < len(data):
            tag, position = _varint(data, position)
            number, wire_type = tag >> 3, tag & 7
            field = descriptor.fields_by_number.get(number)
            path = prefix + (field.name if field else f"field {number}")
            if field is not None and field.is_repeated:
                path += f"[{seen[number]}]"
                seen[number] += 1
            if wire_type == 0:
                _, position = _varint(data, position)
            elif wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                length, position = _varint(data, position)
                chunk, position = data[position : position + length], position + length
                if len(chunk) < length:
                    return path
                if field is None:
                    continue
                if field.type == FieldDescriptor.TYPE_STRING:
                    chunk.decode("utf-8")
                elif field.message_type is not None:
                    found = _invalid_field(field.message_type, chunk, path + ".")
                    if found:
                        return found
            else:
                return path
            if position > len(data):
                return path
    except UnicodeDecodeError:
        return path
    except IndexError:
        return prefix.rstrip(".") or None
    return None


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
