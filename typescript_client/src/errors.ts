import { Code, ConnectError } from "@connectrpc/connect";

/** The gRPC status code names, as the server and the Python client spell them. */
export type StatusName =
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

const NAMES: Record<Code, StatusName> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/**
 * The service refused a call: the one error type of the client.
 *
 * `code` is the numeric gRPC status (`Code` of `@connectrpc/connect`), `status` its name
 * (`"INVALID_ARGUMENT"`), and `details` the server's message naming the field or limit at
 * fault.
 */
export class GrpcSaverError extends Error {
  /** The numeric gRPC status code. */
  readonly code: Code;
  /** The status code's name, such as `"NOT_FOUND"`. */
  readonly status: StatusName;
  /** The server's message. */
  readonly details: string;

  constructor(code: Code, details: string) {
    super(`${NAMES[code]}: ${details}`);
    this.name = "GrpcSaverError";
    this.code = code;
    this.status = NAMES[code];
    this.details = details;
  }
}

/** The error a failed call raises to callers. */
export function rpcError(error: unknown): GrpcSaverError {
  if (error instanceof GrpcSaverError) return error;
  const connect = ConnectError.from(error);
  return new GrpcSaverError(connect.code, connect.rawMessage);
}
