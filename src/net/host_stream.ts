/**
 * The contract between the TCP translator and the host side of its connections: a
 * byte stream per connection, something that opens them (outbound) and something
 * that accepts them (inbound `-t` forwards). Two implementations: Deno's own TCP API
 * (the defaults here, used by unit tests) and the helper's nonblocking sockets driven
 * by the event loop (src/net/native_host_tcp.ts, used by the daemon), which can
 * also reset a connection and bind its source.
 *
 * @module
 */

/** One host connection (Deno.TcpConn satisfies it; tests may substitute it). */
export interface HostStream {
  /** Reads into `p`: the byte count, or null at the end of the peer's stream. Rejects on a reset. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes from `p`: the bytes taken (possibly fewer). */
  write(p: Uint8Array): Promise<number>;
  /** Ends our direction (the peer sees a FIN). */
  closeWrite(): Promise<void>;
  /** Closes the connection (FIN after unsent data). */
  close(): void;
  /** Closes the connection so that the peer sees a RST, where the implementation can. */
  reset?(): void;
  /** Sets TCP_NODELAY where the implementation has not already. */
  setNoDelay?(noDelay?: boolean): void;
}

/** Opens a host connection to `hostname` (an address literal) port `port`; rejects like Deno.connect. */
export type HostConnector = (hostname: string, port: number) => Promise<HostStream>;

/** A connection accepted by a {@link HostListener}. */
export interface AcceptedStream {
  readonly stream: HostStream;
  /** The peer's address as text ("127.0.0.1", "::1", "::ffff:127.0.0.1"). */
  readonly peerHostname: string;
  readonly peerPort: number;
}

/** A listening host socket. */
export interface HostListener {
  /** The local port (the one the kernel chose when asked for port 0). */
  readonly port: number;
  /** The next connection; rejects once the listener is closed. */
  accept(): Promise<AcceptedStream>;
  /** Stops listening. */
  close(): void;
}

/**
 * Opens a listener on `hostname`:`port`, only on interface `interfaceName` when
 * given; throws like Deno.listen (address in use, permission).
 */
export type HostListen = (
  hostname: string,
  port: number,
  interfaceName?: string | null,
) => HostListener;

/** {@link HostConnector} over Deno.connect. */
export const denoConnect: HostConnector = (hostname, port) =>
  Deno.connect({ hostname, port, transport: "tcp" });

/** {@link HostListen} over Deno.listen (no interface binding). */
export const denoListen: HostListen = (hostname, port, interfaceName) => {
  if (interfaceName) {
    throw new Error(`Cannot listen on interface ${interfaceName}: Deno.listen cannot bind to one`);
  }
  const listener = Deno.listen({ hostname, port, transport: "tcp" });
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async accept(): Promise<AcceptedStream> {
      const conn = await listener.accept();
      const peer = conn.remoteAddr as Deno.NetAddr;
      return { stream: conn, peerHostname: peer.hostname, peerPort: peer.port };
    },
    close(): void {
      listener.close();
    },
  };
};
