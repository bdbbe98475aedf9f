/**
 * Opening a node's Thrift port: `Bun.listen` with the one handler set that every connection shares,
 * each socket event handed to the CacheServer (`onData`, `onDrain`) or its ConnectionLifecycle
 * (open, end, close, and the TLS handshake). The handlers are made once, here, and each calls the
 * server's method directly, as before. This is apart from cache-server.ts because it runs once,
 * when the server starts, while that file keeps the serving loop.
 */
import type { Socket, TCPSocketListener } from "bun";
import type { CacheServer } from "./cache-server.ts";
import type { Connection } from "./connection.ts";
import { listenError } from "./listen-error.ts";
import type { ServerOptions } from "./server-options.ts";

/**
 * listenThrift opens the Thrift port of `opts` (host, port, TLS files if any) for `server`, or
 * throws listenError's error saying why it could not.
 */
export function listenThrift(server: CacheServer, opts: ServerOptions): TCPSocketListener<Connection> {
  const tls = opts.tls === undefined ? undefined : { cert: opts.tls.cert, key: opts.tls.key };
  try {
    return Bun.listen<Connection>({
      hostname: opts.host,
      port: opts.port,
      ...(tls === undefined ? {} : { tls }),
      // A client's FIN ends only its side: what it sent before is still answered (`onEnd`).
      allowHalfOpen: true,
      socket: {
        binaryType: "uint8array",
        open(socket) {
          server.lifecycle.onOpen(socket);
        },
        data(socket, chunk) {
          server.onData(socket.data, chunk);
        },
        drain(socket) {
          server.onDrain(socket.data);
        },
        end(socket) {
          server.lifecycle.onEnd(socket.data);
        },
        close(socket) {
          server.lifecycle.onClose(socket.data);
        },
        error(socket, error) {
          opts.logger.debug("socket error", { conn: socket.data?.id, error: error.message });
        },
        // With a handshake handler, Bun opens a TLS socket as TCP accepts it, not once its
        // handshake is done: one that never finishes it is a connection like any other then,
        // counted against --max-connections and the idle timeout, and given HANDSHAKE_MS.
        ...(tls === undefined ? {} : {
          handshake(socket: Socket<Connection>, success: boolean, error: Error | null) {
            server.lifecycle.onHandshake(socket.data, success ? null : (error ?? new Error("handshake failed")));
          },
        }),
      },
    });
  } catch (e) {
    throw listenError("the Thrift port (--port)", opts.host, opts.port, e);
  }
}
