"""Domain errors, raised below the API layer and mapped to gRPC status codes there."""


class ServiceError(Exception):
    """Base class of the errors a client caused and can act on."""


class InvalidArgument(ServiceError):
    """A request field is missing or malformed.

    Attributes:
        field: The path of the offending field, such as ``new_values[2].channel``.

    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def within(self, outer: str) -> "InvalidArgument":
        """The same error for this field as part of the field ``outer`` (a batch's item)."""
        return InvalidArgument(f"{outer}.{self.field}", self.problem)


class NotFound(ServiceError):
    """The resource a request names does not exist."""


class AlreadyExists(ServiceError):
    """The resource a request would create exists already."""


class ResourceExhausted(ServiceError):
    """A request or response exceeds a limit of the server."""


class FailedPrecondition(ServiceError):
    """The stored data is not in a state the request can work on (a parent chain that loops)."""


class OutOfRange(ServiceError):
    """A position the request names is outside what the server keeps."""


class Aborted(ServiceError):
    """The request ran into concurrent changes it could not get past; retrying may succeed."""
