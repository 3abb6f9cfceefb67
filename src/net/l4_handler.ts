/**
 * The contract between the network stack (which parses Ethernet and IP, and owns
 * ARP/DHCP/NDP/DHCPv6/ICMP echo) and the transport-protocol translators (TCP, UDP)
 * that register with it through `NetworkStack.registerL4()`.
 *
 * @module
 */

import type { ScatteredFrame } from "../tap/frame_transport.ts";
import type { FlowInfo } from "./flows/flow_info.ts";
import type { Logger } from "../log/logger.ts";
import type { UdpHeader } from "./wire/udp.ts";

/** Options every transport translator (TCP, UDP) takes; each names its defaults. */
export interface TranslatorOptions {
  /** Maximum number of flows (default 16384). */
  maxFlows?: number;
  /** Where log lines go (the process-wide logger by default). */
  logger?: Logger;
  /** Clock for events that arrive from host sockets (default performance.now). */
  clock?: () => number;
  /** Idle timeout in ms after which a flow is closed (the translator names its default). */
  idleTimeoutMs?: number;
  /** Verify the checksum of what the guest sends (default true). */
  verifyChecksums?: boolean;
  /** Called when a timer earlier than the earliest one so far is armed. */
  onTimersChanged?: () => void;
}

/**
 * One IP packet from the guest, as handed to an {@link L4Handler}. The object and
 * its address arrays are reused for the next packet, and `frame` may be a view into
 * guest memory valid only during the call: copy whatever must be kept, and read each
 * byte of the frame once.
 */
export interface L4Packet {
  /** 4 or 6. */
  family: 4 | 6;
  /** IP protocol number of the upper layer (6 TCP, 17 UDP). */
  protocol: number;
  /** IPv4 source address (unsigned 32-bit), 0 for IPv6. */
  src4: number;
  /** IPv4 destination address, 0 for IPv6. */
  dst4: number;
  /** IPv6 source address (16 bytes, reused), unspecified content for IPv4. */
  src6: Uint8Array;
  /** IPv6 destination address (16 bytes, reused). */
  dst6: Uint8Array;
  /** TTL / hop limit. */
  ttl: number;
  /** Type of service / traffic class byte. */
  tos: number;
  /** The whole Ethernet frame. */
  frame: Uint8Array;
  /** Offset of the IP header in `frame` (for quoting it in ICMP errors). */
  ipOffset: number;
  /** Offset of the upper-layer header in `frame`. */
  l4Offset: number;
  /** Length of the upper-layer header plus data (IP length, not the frame's). */
  l4Length: number;
  /**
   * The guest left the upper-layer checksum for the device to complete (virtio-net
   * NEEDS_CSUM): it is not to be verified.
   */
  checksumPending: boolean;
  /**
   * TCP only: the frame's payload is still in guest memory (`frame` holds its headers
   * and is complete only after `scattered.gather()`); null when `frame` is whole.
   */
  scattered: ScatteredFrame | null;
  /**
   * UDP only: the datagram's header as the stack parsed it (its length field checked
   * against `l4Length`, reused for the next frame); null for other protocols.
   */
  udp: UdpHeader | null;
}

/** Creates an empty packet object (the stack fills one per frame). */
export function newL4Packet(): L4Packet {
  return {
    family: 4,
    protocol: 0,
    src4: 0,
    dst4: 0,
    src6: new Uint8Array(16),
    dst6: new Uint8Array(16),
    ttl: 0,
    tos: 0,
    frame: new Uint8Array(0),
    ipOffset: 0,
    l4Offset: 0,
    l4Length: 0,
    checksumPending: false,
    scattered: null,
    udp: null,
  };
}

/** A transport-protocol translator registered with the stack for one IP protocol. */
export interface L4Handler {
  /**
   * The handler's event counters (numbers by name), summed up in the stack's
   * diagnostics ({@link NetworkStack.describeCounters}, logged at debug level when the
   * link goes down).
   */
  readonly counters?: object;
  /**
   * The handler's flows as plain objects, for a statistics dump (SIGUSR1, `--stats`);
   * built on demand, never on the datapath.
   * @param now the clock's current time, for ages
   */
  describeFlows?(now: number): FlowInfo[];
  /** How many flows the handler holds now (cheap: a table's size). */
  flowCount?(): number;
  /**
   * Handles one packet from the guest. May throw: the stack catches, counts and logs
   * (rate-limited), but a handler should validate instead.
   */
  handlePacket(packet: L4Packet, now: number): void;
  /** Called after each batch of guest frames (flush coalesced work). */
  endOfBatch?(now: number): void;
  /** The guest link came up. */
  linkUp?(now: number): void;
  /** The guest link went away (the front-end may still be connected: a paused VM). */
  linkDown?(now: number): void;
  /** The front-end disconnected (after linkDown): see FrameHandler.frontendGone. */
  frontendGone?(now: number): void;
  /** Room appeared toward the guest after a SendResult.NoRoom. */
  linkWritable?(now: number): void;
  /** Runs due timers; called by `NetworkStack.tick()`. */
  tick?(now: number): void;
  /** Earliest time `tick` needs to run again (Infinity when no timer is pending). */
  nextTimerAt?(): number;
}
