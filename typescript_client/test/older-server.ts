import {
  type ClientHttp2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  connect,
  constants,
  createServer,
} from "node:http2";
import type { AddressInfo } from "node:net";

/** A server as one of an older release sees it: `missing` methods unknown, the rest served. */
export interface OlderServer {
  /** Where to reach it, as `host:port`. */
  readonly target: string;
  /** Calls of a missing method it refused with UNIMPLEMENTED, by gRPC path. */
  readonly refused: Map<string, number>;
  close(): Promise<void>;
}

/**
 * An HTTP/2 relay in front of a real server that answers calls of `missing` methods (gRPC
 * paths such as `/lgcheckpoint.v1.CheckpointService/BatchGetCheckpoints`) as a gRPC server
 * without them does, UNIMPLEMENTED in a trailers-only response, and passes every other call,
 * headers, messages and trailers, to `upstream` (`host:port`) unchanged.
 */
export async function olderServer(upstream: string, missing: string[]): Promise<OlderServer> {
  const session: ClientHttp2Session = connect(`http://${upstream}`);
  const refused = new Map<string, number>();
  const server = createServer();
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (accepted) => {
    sessions.add(accepted);
    accepted.once("close", () => sessions.delete(accepted));
  });
  server.on("stream", (stream, headers) => {
    const path = String(headers[constants.HTTP2_HEADER_PATH]);
    if (missing.includes(path)) {
      refused.set(path, (refused.get(path) ?? 0) + 1);
      stream.resume();
      stream.respond(
        {
          ":status": 200,
          "content-type": "application/grpc",
          "grpc-status": "12",
          "grpc-message": "Method not found!",
        },
        { endStream: true },
      );
      return;
    }
    const { [constants.HTTP2_HEADER_AUTHORITY]: _, ...forwarded } = headers;
    const relayed = session.request(forwarded);
    stream.pipe(relayed);
    let trailers: IncomingHttpHeaders = {};
    relayed.on("trailers", (received) => (trailers = received));
    relayed.on("response", (received) => {
      // A trailers-only answer carries its status in the headers and ends there.
      if (received["grpc-status"] !== undefined) {
        stream.respond(received, { endStream: true });
        return;
      }
      stream.respond(received, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers(trailers));
      relayed.pipe(stream);
    });
    relayed.on("error", () => stream.close(constants.NGHTTP2_INTERNAL_ERROR));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    target: `127.0.0.1:${port}`,
    refused,
    close: () =>
      new Promise<void>((resolve) => {
        session.close();
        for (const accepted of sessions) accepted.destroy();
        server.close(() => resolve());
      }),
  };
}
