import { type Interceptor, type Transport, Code, ConnectError } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";

/** How the client reaches the service. */
export interface ConnectionOptions {
  /** A bearer token, sent as `authorization: Bearer <token>` with every call. */
  token?: string;
  /** For `grpcs://` targets: PEM CA bundle to trust, and a client certificate and key (mTLS). */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** The largest message sent or received (default 64 MiB); match the server's limit. */
  maxMessageBytes?: number;
  /** Attempts of an idempotent call that fails with UNAVAILABLE (default 5). */
  maxAttempts?: number;
}

export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2000;

/**
 * Splits `grpc://host:port`, `grpcs://host:port` (TLS) or a bare `host:port` into the URL
 * the HTTP/2 transport dials.
 */
export function baseUrl(target: string): string {
  for (const [scheme, http] of [
    ["grpcs://", "https://"],
    ["grpc://", "http://"],
  ] as const) {
    if (target.startsWith(scheme)) return http + target.slice(scheme.length);
  }
  if (target.includes("://")) {
    throw new TypeError(`unsupported target ${JSON.stringify(target)}: use grpc://host:port or grpcs://host:port`);
  }
  return `http://${target}`;
}

/**
 * Retries UNAVAILABLE on unary RPCs the contract declares idempotent or free of side
 * effects, as the Python client's channel does: a retry never duplicates anything there.
 * CreateThread declares neither, so a retried create cannot answer ALREADY_EXISTS for the
 * thread its first attempt made. Streams reconnect on their own (see `watch`).
 */
function retryUnavailable(maxAttempts: number): Interceptor {
  return (next) => async (request) => {
    const level = request.method.idempotency;
    const safe =
      level === MethodOptions_IdempotencyLevel.IDEMPOTENT || level === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS;
    if (request.stream || !safe) return next(request);
    let delay = FIRST_BACKOFF_MS;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await next(request);
      } catch (error) {
        const code = error instanceof ConnectError ? error.code : undefined;
        if (code !== Code.Unavailable || attempt >= maxAttempts || request.signal.aborted) throw error;
      }
      // Full jitter, so clients that lost one server do not come back in step.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * delay));
      delay = Math.min(delay * 2, MAX_BACKOFF_MS);
    }
  };
}

function withHeaders(headers: Record<string, string>): Interceptor {
  return (next) => (request) => {
    for (const [name, value] of Object.entries(headers)) request.header.set(name, value);
    return next(request);
  };
}

/** A gRPC transport over one HTTP/2 connection, and the function that closes it. */
export function openTransport(target: string, options: ConnectionOptions): { transport: Transport; close: () => void } {
  const url = baseUrl(target);
  const sessionManager = new Http2SessionManager(url, { idleConnectionTimeoutMs: 60_000 }, options.tls ?? {});
  const maxBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const interceptors: Interceptor[] = [retryUnavailable(options.maxAttempts ?? 5)];
  const headers = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (Object.keys(headers).length > 0) interceptors.push(withHeaders(headers));
  const transport = createGrpcTransport({
    baseUrl: url,
    sessionManager,
    interceptors,
    readMaxBytes: maxBytes,
    writeMaxBytes: maxBytes,
  });
  return { transport, close: () => sessionManager.abort() };
}
