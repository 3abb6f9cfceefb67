/**
 * A well-behaved guest's first words to the daemon: connect as a fresh vhost-user
 * frontend, negotiate as QEMU does, post RX buffers, ask for the gateway's MAC with
 * an ARP request and wait for the reply. Used after hostile sessions to check that
 * the daemon still serves guests promptly.
 *
 * @module
 */

import {
  ARP_LENGTH,
  ARP_OP_REPLY,
  ARP_OP_REQUEST,
  buildArp,
  parseArp,
} from "../../src/net/services/arp.ts";
import { MAC_BROADCAST } from "../../src/net/wire/address.ts";
import {
  buildEthernet,
  ETH_HEADER_LENGTH,
  ETHERTYPE_ARP,
  newEthernetHeader,
  parseEthernet,
} from "../../src/net/wire/ethernet.ts";
import { newArpMessage } from "../../src/net/services/arp.ts";
import { RX, VhostUserFrontend } from "../support/frontend/vhost_user_frontend.ts";
import { parseIpv4 } from "../../ffi/ip_address_text.ts";

/** The guest's address and the gateway's, as the fuzz daemon is started with (-a, -g). */
export const GUEST_IPV4 = "10.0.2.15";
export const GATEWAY_IPV4 = "10.0.2.2";
/** The guest's MAC (locally administered, QEMU's default prefix). */
export const GUEST_MAC = 0x52_54_00_12_34_56;
/** Shortest Ethernet frame without FCS (IEEE 802.3 §3.2.8): ARP requests are padded to it. */
const MIN_FRAME_LENGTH = 60;
/** RX buffers the probe posts: the daemon may send other frames (e.g. router advertisements) first. */
const PROBE_RX_BUFFERS = 64;
/** Harness memory per probe: rings of 256 and 64 RX buffers fit easily. */
const PROBE_REGION_SIZE = 1 << 20;
/** How often the probe looks at the RX used ring. */
const POLL_MS = 1;

function ipv4(text: string): number {
  const address = parseIpv4(text);
  if (address === null) throw new Error(`bad IPv4 address ${text}`);
  return address;
}

/** An Ethernet frame carrying the guest's ARP request for the gateway's MAC. */
export function gatewayArpRequest(): Uint8Array {
  const frame = new Uint8Array(MIN_FRAME_LENGTH);
  buildEthernet(frame, 0, MAC_BROADCAST, GUEST_MAC, ETHERTYPE_ARP);
  buildArp(frame, ETH_HEADER_LENGTH, {
    op: ARP_OP_REQUEST,
    senderMac: GUEST_MAC,
    senderIp: ipv4(GUEST_IPV4),
    targetMac: 0,
    targetIp: ipv4(GATEWAY_IPV4),
  });
  return frame;
}

/** Whether `frame` is the gateway's ARP reply to the guest. */
export function isGatewayArpReply(frame: Uint8Array): boolean {
  const ethernet = newEthernetHeader();
  if (parseEthernet(frame, ethernet) !== "ok" || ethernet.etherType !== ETHERTYPE_ARP) return false;
  const arp = newArpMessage();
  if (parseArp(frame, ETH_HEADER_LENGTH, ETH_HEADER_LENGTH + ARP_LENGTH, arp) !== "ok") {
    return false;
  }
  return arp.op === ARP_OP_REPLY && arp.senderIp === ipv4(GATEWAY_IPV4) &&
    arp.targetIp === ipv4(GUEST_IPV4) && arp.targetMac === GUEST_MAC &&
    ethernet.dst === GUEST_MAC;
}

/** What the probe saw. */
export interface ProbeResult {
  /** The ARP reply arrived. */
  readonly answered: boolean;
  /** Milliseconds from connecting to the reply (or to giving up). */
  readonly elapsedMs: number;
  /** Why it failed, when it did. */
  readonly error?: string;
}

/**
 * Connects to `socketPath` as a fresh frontend with memfds named `memfdPrefix`N, and
 * asks for the gateway's MAC. Gives up after `limitMs` (the harness's own waits are
 * bounded too). `whileConnected` runs once the negotiation is done (self-checks of
 * the observer). Closes everything it opened before returning.
 */
export async function probeGateway(
  socketPath: string,
  memfdPrefix: string,
  limitMs: number,
  whileConnected?: () => void,
): Promise<ProbeResult> {
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  let frontend: VhostUserFrontend | null = null;
  try {
    frontend = VhostUserFrontend.connect(socketPath, {
      regionSize: PROBE_REGION_SIZE,
      namePrefix: memfdPrefix,
    });
    await frontend.negotiate();
    whileConnected?.();
    frontend.postRxBuffers(PROBE_RX_BUFFERS);
    frontend.sendFrame(gatewayArpRequest());
    const deadline = started + limitMs;
    while (performance.now() < deadline) {
      const used = frontend.vrings[RX].takeUsedChains();
      if (used.length > 0 && frontend.rxFrames(used).some(isGatewayArpReply)) {
        return { answered: true, elapsedMs: elapsed() };
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    return { answered: false, elapsedMs: elapsed(), error: `no ARP reply within ${limitMs} ms` };
  } catch (error) {
    return { answered: false, elapsedMs: elapsed(), error: (error as Error).message };
  } finally {
    frontend?.close();
  }
}
