/**
 * A tiny authoritative DNS responder for the end-to-end tests: answers A queries for a
 * fixed set of test names from a UDP socket on loopback, NOERROR/no data for other types
 * of known names, NXDOMAIN otherwise. It never forwards anything anywhere.
 *
 * @module
 */

import dgram from "node:dgram";
import { Buffer } from "node:buffer";

/** DNS header length (RFC 1035 §4.1.1). */
const HEADER_SIZE = 12;
/** Flag bits (RFC 1035 §4.1.1): QR response, AA authoritative, RD echoed, RA. */
const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_RD = 0x0100;
/** RCODEs (RFC 1035 §4.1.1). */
const RCODE_FORMERR = 1;
const RCODE_NXDOMAIN = 3;
/** Record type A and class IN (RFC 1035 §3.2.2, §3.2.4). */
const TYPE_A = 1;
const CLASS_IN = 1;
/** Pointer to the question name at offset 12 (RFC 1035 §4.1.4). */
const NAME_POINTER_TO_QUESTION = 0xc000 | HEADER_SIZE;
/** TTL of the answers, seconds. */
const ANSWER_TTL = 60;
/** Longest name label (RFC 1035 §2.3.4). */
const MAX_LABEL = 63;

/** A question the responder received. */
export interface DnsQuestion {
  readonly name: string;
  readonly type: number;
}

/** A parsed query: transaction id, flags, and its single question. */
export interface DnsQuery {
  readonly id: number;
  readonly flags: number;
  readonly question: DnsQuestion;
  /** Offset just past the question (where answers start). */
  readonly questionEnd: number;
}

/** Parses a DNS query with exactly one question; returns null if malformed. */
export function parseDnsQuery(packet: Uint8Array): DnsQuery | null {
  if (packet.length < HEADER_SIZE) return null;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const id = view.getUint16(0);
  const flags = view.getUint16(2);
  if ((flags & FLAG_QR) !== 0 || view.getUint16(4) !== 1) return null;
  const labels: string[] = [];
  let offset = HEADER_SIZE;
  for (;;) {
    if (offset >= packet.length) return null;
    const length = packet[offset++];
    if (length === 0) break;
    if (length > MAX_LABEL || offset + length > packet.length) return null;
    labels.push(new TextDecoder().decode(packet.subarray(offset, offset + length)));
    offset += length;
  }
  if (offset + 4 > packet.length) return null;
  const type = view.getUint16(offset);
  const questionEnd = offset + 4;
  return { id, flags, question: { name: labels.join(".").toLowerCase(), type }, questionEnd };
}

/** Builds the answer to `query` given `records` (lower-case name → IPv4 address). */
export function buildDnsAnswer(
  packet: Uint8Array,
  query: DnsQuery | null,
  records: ReadonlyMap<string, string>,
): Uint8Array {
  if (query === null) {
    const header = new Uint8Array(HEADER_SIZE);
    if (packet.length >= 2) header.set(packet.subarray(0, 2));
    new DataView(header.buffer).setUint16(2, FLAG_QR | RCODE_FORMERR);
    return header;
  }
  const address = records.get(query.question.name);
  const answer = address !== undefined && query.question.type === TYPE_A;
  const rcode = address === undefined ? RCODE_NXDOMAIN : 0;
  const out = new Uint8Array(query.questionEnd + (answer ? 16 : 0));
  out.set(packet.subarray(0, query.questionEnd));
  const view = new DataView(out.buffer);
  view.setUint16(2, FLAG_QR | FLAG_AA | (query.flags & FLAG_RD) | rcode);
  view.setUint16(4, 1); // QDCOUNT
  view.setUint16(6, answer ? 1 : 0); // ANCOUNT
  view.setUint16(8, 0); // NSCOUNT
  view.setUint16(10, 0); // ARCOUNT
  if (answer) {
    let at = query.questionEnd;
    view.setUint16(at, NAME_POINTER_TO_QUESTION);
    view.setUint16(at + 2, TYPE_A);
    view.setUint16(at + 4, CLASS_IN);
    view.setUint32(at + 6, ANSWER_TTL);
    view.setUint16(at + 10, 4);
    at += 12;
    for (const part of address.split(".")) out[at++] = Number(part);
  }
  return out;
}

/** A running responder. */
export interface DnsResponder {
  /** UDP port it listens on. */
  readonly port: number;
  /** Address it listens on. */
  readonly address: string;
  /** Questions received so far. */
  readonly questions: DnsQuestion[];
  /** Closes the socket. */
  close(): Promise<void>;
}

/**
 * Starts a responder on `address`:`port` (port 0 = any free port) answering A queries for
 * `records` (name → IPv4 address).
 */
export function startDnsResponder(
  records: Readonly<Record<string, string>>,
  address = "127.0.0.1",
  port = 0,
): Promise<DnsResponder> {
  const table = new Map(Object.entries(records).map(([k, v]) => [k.toLowerCase(), v]));
  const questions: DnsQuestion[] = [];
  const socket = dgram.createSocket(address.includes(":") ? "udp6" : "udp4");
  socket.on("message", (message: Buffer, remote: dgram.RemoteInfo) => {
    const packet = new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    const query = parseDnsQuery(packet);
    if (query !== null) questions.push(query.question);
    socket.send(buildDnsAnswer(packet, query, table), remote.port, remote.address);
  });
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, address, () => {
      socket.off("error", reject);
      resolve({
        port: socket.address().port,
        address,
        questions,
        close: () => new Promise((done) => socket.close(() => done())),
      });
    });
  });
}
