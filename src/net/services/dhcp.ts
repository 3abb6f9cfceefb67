/**
 * DHCPv4 server (RFC 2131, options RFC 2132) handing the guest the single address
 * of the network plan with an infinite lease. DISCOVER → OFFER (or ACK with Rapid
 * Commit, RFC 4039), REQUEST → ACK (NAK for another address), INFORM → ACK without
 * lease. Options are sent in the order of the client's Parameter Request List,
 * followed by the others we always give. Messages whose options run past the end
 * are dropped (the stack counts the reason). With `--fqdn`, the Client FQDN option
 * (RFC 4702) is sent to a client that asks for it (its own option 81, or 81 in its
 * parameter request list). Each exchange is one debug line.
 *
 * @module
 */

import {
  ipv4PrefixMask,
  ipv4SameSubnet,
  MAC_BROADCAST,
  macToString,
  readIpv4,
  readMac,
  writeIpv4,
} from "../wire/address.ts";
import { encodeDomainList, encodeDomainListCompressed } from "../wire/dns_name.ts";
import { log as defaultLog, type Logger } from "../../log/logger.ts";
import type { GuestSender } from "../guest_sender.ts";
import { L4_OFFSET_V4 } from "../guest_sender.ts";
import type { NetworkPlan } from "../plan/network_plan.ts";
import { buildUdp, UDP_HEADER_LENGTH } from "../wire/udp.ts";
import { IPPROTO_UDP } from "../wire/ip_protocol.ts";
import { ipv4ToString } from "../../../ffi/ip_address_text.ts";

/** UDP port of the DHCP server (RFC 2131 §4.1). */
export const DHCP_SERVER_PORT = 67;
/** UDP port of the DHCP client. */
export const DHCP_CLIENT_PORT = 68;

/** Offset of op (1 BOOTREQUEST, 2 BOOTREPLY) (RFC 2131 §2, Figure 1). */
export const DHCP_OP = 0;
/** Offset of the hardware address type. */
export const DHCP_HTYPE = 1;
/** Offset of the hardware address length. */
export const DHCP_HLEN = 2;
/** Offset of the relay hop count. */
export const DHCP_HOPS = 3;
/** Offset of the transaction id. */
export const DHCP_XID = 4;
/** Offset of seconds elapsed. */
export const DHCP_SECS = 8;
/** Offset of the flags (bit 15: broadcast). */
export const DHCP_FLAGS = 10;
/** Offset of the client address (ciaddr). */
export const DHCP_CIADDR = 12;
/** Offset of "your" address (yiaddr). */
export const DHCP_YIADDR = 16;
/** Offset of the next server address (siaddr). */
export const DHCP_SIADDR = 20;
/** Offset of the relay agent address (giaddr). */
export const DHCP_GIADDR = 24;
/** Offset of the client hardware address (16 bytes). */
export const DHCP_CHADDR = 28;
/** Offset of the server host name (64 bytes). */
export const DHCP_SNAME = 44;
/** Offset of the boot file name (128 bytes). */
export const DHCP_FILE = 108;
/** Offset of the magic cookie (RFC 2131 §3). */
export const DHCP_COOKIE = 236;
/** Offset of the first option. */
export const DHCP_OPTIONS = 240;
/** The magic cookie 99.130.83.99 (RFC 2131 §3). */
export const DHCP_MAGIC_COOKIE = 0x63825363;
/** Broadcast bit in the flags (RFC 2131 §2). */
export const DHCP_FLAG_BROADCAST = 0x8000;
/** Smallest BOOTP message (RFC 1542 §2.1): replies are padded to it. */
export const DHCP_MIN_MESSAGE = 300;
/** Smallest IP datagram every DHCP client accepts (RFC 2131 §2, RFC 2132 §9.10). */
export const DHCP_MIN_DATAGRAM = 576;
/** Largest DHCP message a client accepts without option 57: 576 − IP (20) − UDP (8). */
export const DHCP_DEFAULT_MAX_MESSAGE = DHCP_MIN_DATAGRAM - 28;
/** Largest reply we build whatever option 57 says. */
export const DHCP_MAX_REPLY = 1472;
/** Op code of client messages (RFC 951, RFC 2131 §2). */
export const BOOTREQUEST = 1;
/** Op code of server messages. */
export const BOOTREPLY = 2;

/** DHCP option codes (RFC 2132 §3-9, RFC 3397, RFC 3442, RFC 4039). */
export const DhcpOption = {
  Pad: 0,
  SubnetMask: 1,
  Router: 3,
  DomainNameServer: 6,
  HostName: 12,
  DomainName: 15,
  InterfaceMtu: 26,
  RequestedAddress: 50,
  LeaseTime: 51,
  Overload: 52,
  MessageType: 53,
  MaxMessageSize: 57,
  ServerIdentifier: 54,
  ParameterRequestList: 55,
  RapidCommit: 80,
  ClientFqdn: 81,
  DomainSearch: 119,
  ClasslessStaticRoute: 121,
  End: 255,
} as const;

/** DHCP message types, option 53 (RFC 2132 §9.6). */
export const DhcpMessageType = {
  Discover: 1,
  Offer: 2,
  Request: 3,
  Decline: 4,
  Ack: 5,
  Nak: 6,
  Release: 7,
  Inform: 8,
} as const;

/** Infinite lease time (RFC 2131 §3.3). */
export const DHCP_INFINITE_LEASE = 0xffffffff;

/**
 * Flags of the Client FQDN option (RFC 4702 §2.1): S (the server updates the A
 * record), O (the server overrode the client's S), E (canonical wire-format name),
 * N (no DNS updates by the server).
 */
export const FqdnFlag = { S: 0x01, O: 0x02, E: 0x04, N: 0x08 } as const;

/** RCODE1 and RCODE2 as servers send them (RFC 4702 §2.2: 255). */
export const FQDN_RCODE = 255;

/** Result of {@link DhcpServer.handle}. */
export type DhcpStatus =
  | "ok"
  | "dhcp-truncated"
  | "dhcp-not-request"
  | "dhcp-bad-hardware"
  | "dhcp-bad-cookie"
  | "dhcp-bad-options"
  | "dhcp-no-message-type";

/** Counters of the DHCP server. */
export interface DhcpCounters {
  offers: number;
  acks: number;
  naks: number;
  ignored: number;
  /** Options left out because they did not fit the client's maximum message size. */
  optionsOmitted: number;
}

/** Options found in a client message (offset/length into the frame, -1 when absent). */
interface ClientOptions {
  messageType: number;
  requestedAddress: number;
  hasRequestedAddress: boolean;
  serverId: number;
  hasServerId: boolean;
  prlOffset: number;
  prlLength: number;
  rapidCommit: boolean;
  /** Largest DHCP message (UDP payload) the client accepts. */
  maxMessage: number;
  /** Flags of the client's Client FQDN option (RFC 4702), -1 when it sent none. */
  fqdnFlags: number;
}

const MESSAGE_NAMES: Readonly<Record<number, string>> = {
  [DhcpMessageType.Discover]: "discover",
  [DhcpMessageType.Offer]: "offer",
  [DhcpMessageType.Request]: "request",
  [DhcpMessageType.Decline]: "decline",
  [DhcpMessageType.Ack]: "ack",
  [DhcpMessageType.Nak]: "nak",
  [DhcpMessageType.Release]: "release",
  [DhcpMessageType.Inform]: "inform",
};

function messageName(type: number): string {
  return MESSAGE_NAMES[type] ?? `type ${type}`;
}

/** Answers the guest's DHCP messages from the network plan. */
export class DhcpServer {
  /** Event counters for diagnostics. */
  readonly counters: DhcpCounters = {
    offers: 0,
    acks: 0,
    naks: 0,
    ignored: 0,
    optionsOmitted: 0,
  };
  readonly #sender: GuestSender;
  readonly #log: Logger;
  readonly #address: number;
  readonly #prefix: number;
  readonly #serverId: number;
  /** `--fqdn` as RFC 1035 wire format and as text (RFC 4702 §2.3), or null. */
  readonly #fqdnWire: Uint8Array | null;
  readonly #fqdnText: Uint8Array | null;
  /** Pre-encoded option payloads by code, in our default order. */
  readonly #options = new Map<number, Uint8Array>();
  /** The plan's MTU (0: option 26 is not sent). */
  readonly #configuredMtu: number;
  /** Option 26's value (RFC 2132 §5.1), rewritten per reply. */
  readonly #mtuBytes = new Uint8Array(2);
  readonly #opts: ClientOptions = {
    messageType: 0,
    requestedAddress: 0,
    hasRequestedAddress: false,
    serverId: 0,
    hasServerId: false,
    prlOffset: -1,
    prlLength: 0,
    rapidCommit: false,
    maxMessage: DHCP_DEFAULT_MAX_MESSAGE,
    fqdnFlags: -1,
  };
  readonly #emitted = new Uint8Array(256);

  /** @throws Error when the plan has no IPv4 part */
  constructor(plan: NetworkPlan, sender: GuestSender, logger: Logger = defaultLog) {
    const v4 = plan.ipv4;
    if (!v4) throw new Error("Cannot start the DHCP server: the plan has no IPv4 configuration");
    this.#sender = sender;
    this.#log = logger;
    this.#address = v4.address;
    this.#prefix = v4.prefix;
    this.#serverId = v4.gateway;
    const wire = plan.fqdn ? encodeDomainList([plan.fqdn]) : null;
    this.#fqdnWire = wire !== null && wire.length > 0 ? wire : null;
    this.#fqdnText = this.#fqdnWire && plan.fqdn
      ? new TextEncoder().encode(plan.fqdn.replace(/\.$/, ""))
      : null;
    const u32 = (...vals: number[]) => {
      const b = new Uint8Array(vals.length * 4);
      vals.forEach((v, i) => writeIpv4(b, i * 4, v));
      return b;
    };
    const onLink = ipv4SameSubnet(v4.address, v4.gateway, v4.prefix) &&
      v4.gateway !== v4.address;
    this.#options.set(DhcpOption.SubnetMask, u32(ipv4PrefixMask(v4.prefix)));
    this.#options.set(DhcpOption.Router, u32(v4.gateway));
    if (plan.advertiseDns && v4.dns.length > 0) {
      this.#options.set(DhcpOption.DomainNameServer, u32(...v4.dns));
    }
    const hostName = plan.hostname ?? plan.fqdn?.split(".")[0] ?? null;
    if (hostName) this.#options.set(DhcpOption.HostName, new TextEncoder().encode(hostName));
    if (plan.advertiseSearch && plan.search.length > 0) {
      this.#options.set(DhcpOption.DomainName, new TextEncoder().encode(plan.search[0]));
      const list = encodeDomainListCompressed(plan.search);
      if (list.length > 0) this.#options.set(DhcpOption.DomainSearch, list);
    }
    this.#configuredMtu = plan.mtu;
    if (plan.mtu) {
      // The value is filled per reply (#mtuOption): the device's MTU may bound it.
      this.#options.set(DhcpOption.InterfaceMtu, this.#mtuBytes);
    }
    this.#options.set(DhcpOption.LeaseTime, u32(DHCP_INFINITE_LEASE));
    if (!onLink) {
      // RFC 3442: a host route to the gateway (on-link, router 0.0.0.0), then the default
      // route through it. Clients ignore option 3 when 121 is present, so both are needed.
      const gw = v4.gateway;
      const r = new Uint8Array(1 + 4 + 4 + 1 + 4);
      r[0] = 32;
      writeIpv4(r, 1, gw);
      writeIpv4(r, 5, 0);
      r[9] = 0;
      writeIpv4(r, 10, gw);
      this.#options.set(DhcpOption.ClasslessStaticRoute, r);
    }
  }

  /**
   * Handles one DHCP message at `frame[offset, offset+length)` (the UDP payload).
   * @returns "ok" when answered or deliberately ignored, else why it was dropped
   */
  handle(frame: Uint8Array, offset: number, length: number, _now: number): DhcpStatus {
    if (offset < 0 || length < DHCP_OPTIONS || offset + length > frame.length) {
      return "dhcp-truncated";
    }
    if (frame[offset + DHCP_OP] !== BOOTREQUEST) return "dhcp-not-request";
    if (frame[offset + DHCP_HTYPE] !== 1 || frame[offset + DHCP_HLEN] !== 6) {
      return "dhcp-bad-hardware";
    }
    if (readIpv4(frame, offset + DHCP_COOKIE) !== DHCP_MAGIC_COOKIE) return "dhcp-bad-cookie";
    const o = this.#opts;
    const st = this.#parseOptions(frame, offset + DHCP_OPTIONS, offset + length, o);
    if (st !== "ok") return st;
    if (o.messageType === 0) return "dhcp-no-message-type";
    const xid = readIpv4(frame, offset + DHCP_XID);
    const flags = (frame[offset + DHCP_FLAGS] << 8) | frame[offset + DHCP_FLAGS + 1];
    const ciaddr = readIpv4(frame, offset + DHCP_CIADDR);
    const chaddr = readMac(frame, offset + DHCP_CHADDR);
    switch (o.messageType) {
      case DhcpMessageType.Discover:
        if (o.rapidCommit) {
          this.#reply(frame, DhcpMessageType.Ack, xid, flags, 0, chaddr, true);
          this.counters.acks++;
          this.#logExchange(o.messageType, DhcpMessageType.Ack, chaddr, " (rapid commit)");
        } else {
          this.#reply(frame, DhcpMessageType.Offer, xid, flags, 0, chaddr, false);
          this.counters.offers++;
          this.#logExchange(o.messageType, DhcpMessageType.Offer, chaddr, "");
        }
        return "ok";
      case DhcpMessageType.Request: {
        // A REQUEST naming another server means the client chose that one (RFC 2131 §4.3.2).
        if (o.hasServerId && o.serverId !== this.#serverId) {
          this.counters.ignored++;
          if (this.#log.enabled("debug")) {
            this.#log.debug(
              `DHCP: request from ${macToString(chaddr)} for server ` +
                `${ipv4ToString(o.serverId)} ignored`,
            );
          }
          return "ok";
        }
        const wanted = o.hasRequestedAddress ? o.requestedAddress : ciaddr;
        if (wanted !== 0 && wanted !== this.#address) {
          this.#reply(frame, DhcpMessageType.Nak, xid, flags, 0, chaddr, false);
          this.counters.naks++;
          if (this.#log.enabled("debug")) {
            this.#log.debug(
              `DHCP: nak to request from ${macToString(chaddr)} for ` +
                `${ipv4ToString(wanted)} (the guest's address is ${ipv4ToString(this.#address)})`,
            );
          }
          return "ok";
        }
        this.#reply(frame, DhcpMessageType.Ack, xid, flags, ciaddr, chaddr, false);
        this.counters.acks++;
        this.#logExchange(o.messageType, DhcpMessageType.Ack, chaddr, "");
        return "ok";
      }
      case DhcpMessageType.Inform:
        this.#reply(frame, DhcpMessageType.Ack, xid, flags, ciaddr, chaddr, false, true);
        this.counters.acks++;
        if (this.#log.enabled("debug")) {
          this.#log.debug(
            `DHCP: ack to inform from ${macToString(chaddr)} at ${ipv4ToString(ciaddr)}`,
          );
        }
        return "ok";
      default:
        // DECLINE, RELEASE (and server-side types): nothing to do with one fixed address.
        this.counters.ignored++;
        if (this.#log.enabled("debug")) {
          this.#log.debug(
            `DHCP: ${messageName(o.messageType)} from ${macToString(chaddr)} ignored`,
          );
        }
        return "ok";
    }
  }

  /** One debug line for an exchange that assigned the address. */
  #logExchange(request: number, reply: number, chaddr: number, note: string): void {
    if (!this.#log.enabled("debug")) return;
    this.#log.debug(
      `DHCP: ${messageName(reply)} to ${messageName(request)} from ${macToString(chaddr)}: ` +
        `${ipv4ToString(this.#address)}/${this.#prefix}, router ${ipv4ToString(this.#serverId)}` +
        note,
    );
  }

  /**
   * The Client FQDN option for this reply (RFC 4702 §4), or null when we have no
   * `--fqdn` or the client did not ask for it. We perform no DNS updates: N is set
   * and S clear, O marks that a client's request for S is overridden, and the name is
   * encoded as the client encoded its own (E), canonical wire format by default.
   */
  /** Option 26's value: the plan's MTU bounded by the guest device's (GuestSender.mtuFor). */
  #mtuOption(): Uint8Array | undefined {
    if (!this.#configuredMtu) return undefined;
    const mtu = this.#sender.mtuFor(this.#configuredMtu);
    this.#mtuBytes[0] = mtu >> 8;
    this.#mtuBytes[1] = mtu & 0xff;
    return this.#mtuBytes;
  }

  #fqdnOption(req: Uint8Array, o: ClientOptions): Uint8Array | null {
    if (this.#fqdnWire === null || this.#fqdnText === null) return null;
    let asked = o.fqdnFlags >= 0;
    for (let i = 0; !asked && i < o.prlLength; i++) {
      asked = req[o.prlOffset + i] === DhcpOption.ClientFqdn;
    }
    if (!asked) return null;
    const wire = o.fqdnFlags < 0 || (o.fqdnFlags & FqdnFlag.E) !== 0;
    const name = wire ? this.#fqdnWire : this.#fqdnText;
    const out = new Uint8Array(3 + name.length);
    out[0] = FqdnFlag.N | (wire ? FqdnFlag.E : 0) |
      (o.fqdnFlags >= 0 && (o.fqdnFlags & FqdnFlag.S) !== 0 ? FqdnFlag.O : 0);
    out[1] = FQDN_RCODE;
    out[2] = FQDN_RCODE;
    out.set(name, 3);
    return out;
  }

  #parseOptions(buf: Uint8Array, p: number, end: number, o: ClientOptions): DhcpStatus {
    o.messageType = 0;
    o.hasRequestedAddress = false;
    o.hasServerId = false;
    o.prlOffset = -1;
    o.prlLength = 0;
    o.rapidCommit = false;
    o.maxMessage = DHCP_DEFAULT_MAX_MESSAGE;
    o.fqdnFlags = -1;
    while (p < end) {
      const code = buf[p];
      if (code === DhcpOption.Pad) {
        p++;
        continue;
      }
      if (code === DhcpOption.End) return "ok";
      if (p + 2 > end) return "dhcp-bad-options";
      const len = buf[p + 1];
      const v = p + 2;
      if (v + len > end) return "dhcp-bad-options";
      switch (code) {
        case DhcpOption.MessageType:
          if (len === 1) o.messageType = buf[v];
          break;
        case DhcpOption.RequestedAddress:
          if (len === 4) {
            o.requestedAddress = readIpv4(buf, v);
            o.hasRequestedAddress = true;
          }
          break;
        case DhcpOption.ServerIdentifier:
          if (len === 4) {
            o.serverId = readIpv4(buf, v);
            o.hasServerId = true;
          }
          break;
        case DhcpOption.ParameterRequestList:
          o.prlOffset = v;
          o.prlLength = len;
          break;
        case DhcpOption.MaxMessageSize:
          // The size is of the whole IP datagram, at least 576 (RFC 2132 §9.10).
          if (len === 2) {
            const ip = (buf[v] << 8) | buf[v + 1];
            if (ip >= DHCP_MIN_DATAGRAM) o.maxMessage = Math.min(ip - 28, DHCP_MAX_REPLY);
          }
          break;
        case DhcpOption.RapidCommit:
          o.rapidCommit = true;
          break;
        case DhcpOption.ClientFqdn:
          // Flags, RCODE1, RCODE2, name (RFC 4702 §2): at least the three fixed bytes.
          if (len >= 3) o.fqdnFlags = buf[v];
          break;
      }
      p = v + len;
    }
    // No End option: tolerated (some clients pad to the end of the packet).
    return "ok";
  }

  #reply(
    req: Uint8Array,
    type: number,
    xid: number,
    flags: number,
    ciaddr: number,
    chaddr: number,
    rapid: boolean,
    inform = false,
  ): void {
    const s = this.#sender;
    const b = s.buffer;
    const base = L4_OFFSET_V4 + UDP_HEADER_LENGTH;
    const o = this.#opts;
    b.fill(0, base, base + DHCP_OPTIONS);
    b[base + DHCP_OP] = BOOTREPLY;
    b[base + DHCP_HTYPE] = 1;
    b[base + DHCP_HLEN] = 6;
    writeIpv4(b, base + DHCP_XID, xid);
    b[base + DHCP_FLAGS] = flags >> 8;
    b[base + DHCP_FLAGS + 1] = flags;
    writeIpv4(b, base + DHCP_CIADDR, ciaddr);
    if (type !== DhcpMessageType.Nak && !inform) writeIpv4(b, base + DHCP_YIADDR, this.#address);
    // chaddr: the client's MAC (the other 10 bytes stay zero from the fill above).
    b[base + DHCP_CHADDR] = Math.floor(chaddr / 0x10000000000) & 0xff;
    b[base + DHCP_CHADDR + 1] = Math.floor(chaddr / 0x100000000) & 0xff;
    writeIpv4(b, base + DHCP_CHADDR + 2, chaddr >>> 0);
    writeIpv4(b, base + DHCP_COOKIE, DHCP_MAGIC_COOKIE);
    let p = base + DHCP_OPTIONS;
    b[p++] = DhcpOption.MessageType;
    b[p++] = 1;
    b[p++] = type;
    b[p++] = DhcpOption.ServerIdentifier;
    b[p++] = 4;
    writeIpv4(b, p, this.#serverId);
    p += 4;
    if (type !== DhcpMessageType.Nak) {
      if (rapid) {
        b[p++] = DhcpOption.RapidCommit;
        b[p++] = 0;
      }
      const emitted = this.#emitted;
      emitted.fill(0);
      // Room for options, keeping one byte for End.
      const limit = base + o.maxMessage - 1;
      const fqdn = this.#fqdnOption(req, o);
      const put = (code: number) => {
        if (emitted[code]) return;
        const data = code === DhcpOption.ClientFqdn
          ? fqdn
          : code === DhcpOption.InterfaceMtu
          ? this.#mtuOption()
          : this.#options.get(code);
        if (!data) return;
        if (inform && code === DhcpOption.LeaseTime) return; // RFC 2131 §4.3.5
        emitted[code] = 1;
        // What does not fit the client's maximum message is left out (RFC 2131 §4.3.1).
        if (p + data.length + 2 * Math.ceil(Math.max(data.length, 1) / 255) > limit) {
          this.counters.optionsOmitted++;
          return;
        }
        // Long values are split over several options (RFC 3396 §7).
        for (let i = 0; i < data.length || i === 0; i += 255) {
          const n = Math.min(255, data.length - i);
          b[p++] = code;
          b[p++] = n;
          b.set(data.subarray(i, i + n), p);
          p += n;
        }
      };
      if (o.prlOffset >= 0) {
        for (let i = 0; i < o.prlLength; i++) put(req[o.prlOffset + i]);
      }
      for (const code of this.#options.keys()) put(code);
      put(DhcpOption.ClientFqdn);
    }
    b[p++] = DhcpOption.End;
    let length = p - base;
    if (length < DHCP_MIN_MESSAGE) {
      b.fill(0, p, base + DHCP_MIN_MESSAGE);
      length = DHCP_MIN_MESSAGE;
    }
    // Destination (RFC 2131 §4.1): the client's address if it has one, broadcast when
    // it asked for it or for a NAK, else the offered address at the client's MAC.
    let dst: number, dstMac: number;
    if (type === DhcpMessageType.Nak || (ciaddr === 0 && (flags & DHCP_FLAG_BROADCAST))) {
      dst = 0xffffffff;
      dstMac = MAC_BROADCAST;
    } else {
      dst = ciaddr !== 0 ? ciaddr : this.#address;
      dstMac = chaddr;
    }
    buildUdp(b, L4_OFFSET_V4, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, length);
    s.sendIpv4(IPPROTO_UDP, this.#serverId, dst, UDP_HEADER_LENGTH + length, { dstMac });
  }
}
