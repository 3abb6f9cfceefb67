/**
 * A read-only description of one flow, for statistics dumps (SIGUSR1, `--stats`):
 * plain data built on demand from the translators' flow tables, never kept on the
 * datapath.
 *
 * @module
 */

import { type FlowKey, FlowKeyFields } from "./flow_table.ts";
import { ipv4ToString, ipv6ToString } from "../../../ffi/ip_address_text.ts";

/** One flow as shown in a statistics dump. */
export interface FlowInfo {
  /** "tcp", "udp", "icmp" (echo over IPv4) or "icmpv6" (echo over IPv6). */
  readonly protocol: "tcp" | "udp" | "icmp" | "icmpv6";
  /** The guest's end: "address:port" (IPv6 in brackets); for echo flows "address" id N. */
  readonly guest: string;
  /** The far end as the guest addresses it, same form as {@link guest}. */
  readonly remote: string;
  /** The host-side end the flow is translated to (host name or address and port). */
  readonly host: string;
  /** Protocol state: TCP's ("established", …), "active" or "denied" for UDP, "active" for echo. */
  readonly state: string;
  /** Payload bytes from the guest passed on to the host. */
  readonly bytesFromGuest: number;
  /** Payload bytes from the host delivered to (TCP: acknowledged by) the guest. */
  readonly bytesToGuest: number;
  /** Milliseconds since the flow was created. */
  readonly ageMs: number;
  /** Milliseconds since the flow last carried something. */
  readonly idleMs: number;
}

/** Index of the bytes from the guest in {@link CountedFlowFields}' counts. */
const BYTES_FROM_GUEST = 0;
/** Index of the bytes toward the guest. */
const BYTES_TO_GUEST = 1;

/**
 * A flow's identity fields and its two byte counts (statistics), the counts in a
 * Float64Array: a number field starts in V8's small-integer representation and changes
 * it when a count first passes 2^30 (1 GiB), which deoptimises the code that handles
 * every flow (README, design: "Counters that never change shape"). Typed-array
 * elements never change.
 */
export class CountedFlowFields extends FlowKeyFields {
  readonly #byteCounts = new Float64Array(2);

  /** Payload bytes from the guest passed on toward the host (see {@link FlowInfo}). */
  get bytesFromGuest(): number {
    return this.#byteCounts[BYTES_FROM_GUEST];
  }
  set bytesFromGuest(count: number) {
    this.#byteCounts[BYTES_FROM_GUEST] = count;
  }

  /** Payload bytes from the host delivered to (TCP: acknowledged by) the guest. */
  get bytesToGuest(): number {
    return this.#byteCounts[BYTES_TO_GUEST];
  }
  set bytesToGuest(count: number) {
    this.#byteCounts[BYTES_TO_GUEST] = count;
  }
}

/** "address:port" with IPv6 addresses in brackets (RFC 3986 §3.2.2). */
export function formatEndpoint(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The guest end and the remote end of a flow key, as {@link formatEndpoint} shows them. */
export function flowKeyEnds(key: FlowKey): { guest: string; remote: string } {
  if (key.family === 4) {
    return {
      guest: formatEndpoint(ipv4ToString(key.guest4), key.guestPort),
      remote: formatEndpoint(ipv4ToString(key.remote4), key.remotePort),
    };
  }
  return {
    guest: formatEndpoint(ipv6ToString(key.guest6!), key.guestPort),
    remote: formatEndpoint(ipv6ToString(key.remote6!), key.remotePort),
  };
}

/** A duration for a log line: "350 ms" below a second, else "2.5 s". */
export function formatDuration(ms: number): string {
  const clamped = Math.max(0, ms);
  return clamped < 1000 ? `${Math.round(clamped)} ms` : `${(clamped / 1000).toFixed(1)} s`;
}

/** What {@link describeFlow} reads of a flow besides its key. */
export interface FlowActivity {
  readonly bytesFromGuest: number;
  readonly bytesToGuest: number;
  /** When the flow was created (the translator's clock, ms). */
  readonly createdAt: number;
}

/**
 * The {@link FlowInfo} of a TCP or UDP flow `f`, translated to `host`:`hostPort`, in
 * `state`, last active at `lastActivity`, at time `now`.
 */
export function describeFlow(
  protocol: "tcp" | "udp",
  f: FlowKey & FlowActivity,
  host: string,
  hostPort: number,
  state: string,
  lastActivity: number,
  now: number,
): FlowInfo {
  return {
    protocol,
    ...flowKeyEnds(f),
    host: formatEndpoint(host, hostPort),
    state,
    bytesFromGuest: f.bytesFromGuest,
    bytesToGuest: f.bytesToGuest,
    ageMs: Math.max(0, now - f.createdAt),
    idleMs: Math.max(0, now - lastActivity),
  };
}
