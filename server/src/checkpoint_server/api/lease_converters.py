"""Lease fields of requests to store records and back, validating every field on the way in."""

from __future__ import annotations

import re

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from lgcheckpoint.v1 import checkpoint_pb2 as pb

from checkpoint_server.errors import InvalidArgument
from checkpoint_server.storage import Granted, Lease

# A lease ID is what AcquireLease issues: a UUID4 as 32 lowercase hexadecimal characters.
_LEASE_ID = re.compile(r"[0-9a-f]{32}")
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 3600
_MAX_FENCING = 2**63 - 1


def lease(field: str, message: pb.Lease, present: bool, *, required: bool = False) -> Lease | None:
    """The lease a request carries, or None when it carries none."""
    if not present:
        if required:
            raise InvalidArgument(field, "is required")
        return None
    if not _LEASE_ID.fullmatch(message.lease_id):
        raise InvalidArgument(
            f"{field}.lease_id", "is not a lease ID issued by AcquireLease (32 hex digits)"
        )
    if not 1 <= message.fencing <= _MAX_FENCING:
        raise InvalidArgument(f"{field}.fencing", "must be at least 1")
    return Lease(message.lease_id, message.fencing)


def ttl(field: str, duration: Duration, present: bool) -> float:
    """A lease's time to live in seconds: required, from 1 second to 1 hour."""
    if not present:
        raise InvalidArgument(field, "is required")
    if not 0 <= duration.nanos < 10**9 or duration.nanos % 1_000_000:
        raise InvalidArgument(field, "must be whole milliseconds")
    seconds = duration.seconds + duration.nanos / 10**9
    if not MIN_TTL_SECONDS <= seconds <= MAX_TTL_SECONDS:
        raise InvalidArgument(
            field, f"must be between {MIN_TTL_SECONDS} second and {MAX_TTL_SECONDS} seconds"
        )
    return seconds


def lease_message(granted: Granted) -> pb.Lease:
    """The proto form of a granted lease."""
    return pb.Lease(lease_id=granted.lease.lease_id, fencing=granted.lease.fencing)


def expire_time(granted: Granted) -> Timestamp:
    """When a granted lease expires, as a Timestamp."""
    stamp = Timestamp()
    stamp.FromNanoseconds(round(granted.expire_epoch * 10**9))
    return stamp
