import fc from "fast-check";
import { assertEquals, assertThrows, assertTrue } from "../../tests/support/assert.ts";
import {
  crc32,
  decodeMigrationState,
  encodeMigrationState,
  FLOW_RECORD_SIZE,
  GUEST_SIZE,
  HEADER_SIZE,
  MAX_MIGRATED_FLOWS,
  MAX_QUEUE_BYTES,
  type MigratedTcpFlow,
  type MigrationState,
  MigrationStateError,
  OPTION_SACK,
  OPTION_TIMESTAMPS,
  OPTION_WSCALE,
  TRAILER_SIZE,
} from "./migration_state.ts";

function sampleFlow(overrides: Partial<MigratedTcpFlow> = {}): MigratedTcpFlow {
  return {
    family: 4,
    inbound: false,
    guestAddress: new Uint8Array([10, 0, 2, 15]),
    guestPort: 40000,
    remoteAddress: new Uint8Array([10, 0, 2, 2]),
    remotePort: 8080,
    localAddress: new Uint8Array([127, 0, 0, 1]),
    localPort: 51234,
    peerAddress: new Uint8Array([127, 0, 0, 1]),
    peerPort: 8080,
    rcvNxt: 0xfffffff0,
    rcvWndRight: 0x10,
    iss: 12345,
    sndUna: 99999,
    sndMax: 99999 + 20,
    sndWndRight: 100000 + 65535,
    ourShift: 7,
    guestShift: 9,
    guestMss: 1460,
    socket: {
      sendSeq: 0x80000000,
      recvSeq: 77,
      mss: 65483,
      sndWscale: 7,
      rcvWscale: 7,
      options: OPTION_TIMESTAMPS | OPTION_SACK | OPTION_WSCALE,
      timestamp: 0xdeadbeef,
      sndWl1: 1,
      sndWnd: 2,
      maxWindow: 3,
      rcvWnd: 4,
      rcvWup: 5,
      sendQueue: new TextEncoder().encode("to the peer"),
      recvQueue: new TextEncoder().encode("to the guest, not yet acknowledged"),
    },
    ...overrides,
  };
}

function sampleState(): MigrationState {
  const v6 = new Uint8Array(16);
  v6.set([0x20, 0x01, 0x0d, 0xb8], 0);
  v6[15] = 5;
  const ll = new Uint8Array(16);
  ll.set([0xfe, 0x80], 0);
  ll[15] = 7;
  return {
    guest: { mac: 0x525400123456, ipv4: 0x0a00020f, ipv6: v6, ipv6LinkLocal: ll },
    tcp: [
      sampleFlow(),
      sampleFlow({
        family: 6,
        inbound: true,
        guestAddress: v6,
        remoteAddress: ll,
        localAddress: new Uint8Array(16).fill(0).map((_, i) => (i === 15 ? 1 : 0)),
        peerAddress: new Uint8Array(16).fill(0).map((_, i) => (i === 15 ? 1 : 0)),
      }),
      // an IPv6 guest flow over an IPv4 host socket
      sampleFlow({ family: 6, guestAddress: v6, remoteAddress: ll }),
    ],
  };
}

/** Recomputes the trailer's CRC after a test altered a field on purpose. */
function resealed(bytes: Uint8Array): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  view.setUint32(bytes.length - 4, crc32(bytes.subarray(0, bytes.length - 4)));
  return bytes;
}

Deno.test("crc32() matches the IEEE check value", () => {
  assertEquals(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

Deno.test("encodeMigrationState() round-trips through decodeMigrationState()", () => {
  const state = sampleState();
  const bytes = encodeMigrationState(state);
  assertEquals(
    bytes.length,
    HEADER_SIZE + GUEST_SIZE + TRAILER_SIZE +
      state.tcp.reduce(
        (n, f) => n + FLOW_RECORD_SIZE + f.socket.sendQueue.length + f.socket.recvQueue.length,
        0,
      ),
  );
  assertEquals(decodeMigrationState(bytes), state);
});

Deno.test("encodeMigrationState() keeps 'nothing seen' apart from real values", () => {
  const state: MigrationState = {
    guest: { mac: null, ipv4: 0, ipv6: null, ipv6LinkLocal: null },
    tcp: [],
  };
  assertEquals(decodeMigrationState(encodeMigrationState(state)), state);
});

const address4 = fc.uint8Array({ minLength: 4, maxLength: 4 });
const address16 = fc.uint8Array({ minLength: 16, maxLength: 16 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const port = fc.integer({ min: 1, max: 65535 });
const shift = fc.integer({ min: 0, max: 14 });
const queue = fc.uint8Array({ maxLength: 300 });

const flowArbitrary: fc.Arbitrary<MigratedTcpFlow> = fc.record({
  family: fc.constantFrom(4 as const, 6 as const),
  hostFamily: fc.constantFrom(4, 6),
  inbound: fc.boolean(),
  a4: fc.tuple(address4, address4),
  a16: fc.tuple(address16, address16),
  h4: fc.tuple(address4, address4),
  h16: fc.tuple(address16, address16),
  ports: fc.tuple(port, port, port, port),
  seqs: fc.tuple(u32, u32, u32, u32, u32),
  shifts: fc.tuple(shift, shift, shift, shift),
  guestMss: fc.integer({ min: 64, max: 65535 }),
  socketMss: fc.integer({ min: 1, max: 65535 }),
  options: fc.integer({ min: 0, max: 7 }),
  words: fc.tuple(u32, u32, u32, u32, u32, u32, u32, u32),
  sendQueue: queue,
  recvQueue: queue,
  sent: fc.double({ min: 0, max: 1, noNaN: true }),
}).map((r) => {
  const [guestAddress, remoteAddress] = r.family === 4 ? r.a4 : r.a16;
  const [localAddress, peerAddress] = r.hostFamily === 4 ? r.h4 : r.h16;
  return {
    family: r.family,
    inbound: r.inbound,
    guestAddress,
    guestPort: r.ports[0],
    remoteAddress,
    remotePort: r.ports[1],
    localAddress,
    localPort: r.ports[2],
    peerAddress,
    peerPort: r.ports[3],
    rcvNxt: r.seqs[0],
    rcvWndRight: r.seqs[1],
    iss: r.seqs[2],
    sndUna: r.seqs[3],
    sndMax: (r.seqs[3] + Math.floor(r.sent * r.recvQueue.length)) >>> 0,
    sndWndRight: r.seqs[4],
    ourShift: r.shifts[0],
    guestShift: r.shifts[1],
    guestMss: r.guestMss,
    socket: {
      sendSeq: r.words[0],
      recvSeq: r.words[1],
      mss: r.socketMss,
      sndWscale: r.shifts[2],
      rcvWscale: r.shifts[3],
      options: r.options,
      timestamp: r.words[2],
      sndWl1: r.words[3],
      sndWnd: r.words[4],
      maxWindow: r.words[5],
      rcvWnd: r.words[6],
      rcvWup: r.words[7],
      sendQueue: r.sendQueue,
      recvQueue: r.recvQueue,
    },
  };
});

const stateArbitrary: fc.Arbitrary<MigrationState> = fc.record({
  guest: fc.record({
    mac: fc.option(fc.integer({ min: 0, max: 0xfffffffffffe }), { nil: null }),
    ipv4: u32,
    // all-zero addresses mean "none": the generator leaves them out
    ipv6: fc.option(address16.filter((a) => a.some((b) => b !== 0)), { nil: null }),
    ipv6LinkLocal: fc.option(address16.filter((a) => a.some((b) => b !== 0)), { nil: null }),
  }),
  tcp: fc.array(flowArbitrary, { maxLength: 5 }),
});

Deno.test("decodeMigrationState() returns what encodeMigrationState() was given (property)", () => {
  fc.assert(
    fc.property(stateArbitrary, (generated) => {
      const state = structuredClone(generated); // plain objects, as the decoder makes
      assertEquals(decodeMigrationState(encodeMigrationState(state)), state);
    }),
    { numRuns: 300 },
  );
});

Deno.test("decodeMigrationState() refuses every truncation of a stream", () => {
  const bytes = encodeMigrationState(sampleState());
  for (let length = 0; length < bytes.length; length++) {
    const error = assertThrows(() => decodeMigrationState(bytes.subarray(0, length)));
    assertTrue(error instanceof MigrationStateError, `length ${length}: ${error}`);
  }
});

Deno.test("decodeMigrationState() refuses bytes after the trailer", () => {
  const bytes = encodeMigrationState(sampleState());
  const longer = new Uint8Array(bytes.length + 3);
  longer.set(bytes);
  assertThrows(() => decodeMigrationState(longer), /does not end with the trailer/);
  // Two whole streams back to back are no state either.
  const twice = new Uint8Array(bytes.length * 2);
  twice.set(bytes);
  twice.set(bytes, bytes.length);
  assertThrows(() => decodeMigrationState(twice), /CRC-32|bytes after/);
});

Deno.test("decodeMigrationState() refuses any single altered byte (property)", () => {
  const bytes = encodeMigrationState(sampleState());
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: bytes.length - 1 }),
      fc.integer({ min: 1, max: 255 }),
      (index, xor) => {
        const altered = bytes.slice();
        altered[index] ^= xor;
        const error = assertThrows(() => decodeMigrationState(altered));
        assertTrue(error instanceof MigrationStateError, String(error));
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("decodeMigrationState() never throws anything but MigrationStateError on random input (property)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      try {
        decodeMigrationState(bytes);
      } catch (error) {
        assertTrue(error instanceof MigrationStateError, String(error));
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("decodeMigrationState() names magic, version and out-of-range fields even under a valid CRC", () => {
  const bytes = () => encodeMigrationState(sampleState());
  const at = (b: Uint8Array) => new DataView(b.buffer);
  let b = bytes();
  at(b).setUint32(0, 0x12345678);
  assertThrows(() => decodeMigrationState(resealed(b)), /magic 0x12345678/);
  b = bytes();
  at(b).setUint16(4, 2);
  assertThrows(() => decodeMigrationState(resealed(b)), /version 2 is not supported/);
  b = bytes();
  at(b).setUint32(8, MAX_MIGRATED_FLOWS + 1);
  assertThrows(() => decodeMigrationState(resealed(b)), /16385 TCP flows exceed/);
  b = bytes();
  at(b).setUint32(8, 4); // one flow more than the stream holds
  assertThrows(() => decodeMigrationState(resealed(b)), /truncated: TCP flow 3 of 4/);
  b = bytes();
  at(b).setUint32(8, 2); // one flow fewer: the third record is left over
  assertThrows(() => decodeMigrationState(resealed(b)), /bytes after the last of 2 TCP flows/);
  const flow0 = HEADER_SIZE + GUEST_SIZE;
  b = bytes();
  b[flow0] = 5;
  assertThrows(() => decodeMigrationState(resealed(b)), /TCP flow 0: family 5/);
  b = bytes();
  at(b).setUint16(flow0 + 2, 0);
  assertThrows(() => decodeMigrationState(resealed(b)), /TCP flow 0: guest port 0/);
  b = bytes();
  b[flow0 + 97] = 15;
  assertThrows(() => decodeMigrationState(resealed(b)), /guest window shift 15 is not in 0..14/);
  b = bytes();
  at(b).setUint32(flow0 + 140, MAX_QUEUE_BYTES + 1);
  assertThrows(() => decodeMigrationState(resealed(b)), /send queue length 33554433/);
  b = bytes();
  at(b).setUint32(flow0 + 144, 1_000_000);
  assertThrows(() => decodeMigrationState(resealed(b)), /truncated: TCP flow 0 has/);
  b = bytes();
  b[flow0 + 12 + 5] = 1; // an IPv4 guest address with bytes past its 4
  assertThrows(() => decodeMigrationState(resealed(b)), /guest address has bytes past/);
  b = bytes();
  at(b).setUint32(flow0 + 112, 8);
  assertThrows(() => decodeMigrationState(resealed(b)), /unknown option bits 0x8/);
  b = bytes();
  at(b).setUint32(flow0 + 148, at(b).getUint32(flow0 + 88) + 1000);
  assertThrows(() => decodeMigrationState(resealed(b)), /bytes sent to the guest .* 1000/);
});

Deno.test("encodeMigrationState() refuses values the format cannot carry", () => {
  assertThrows(
    () =>
      encodeMigrationState({
        guest: { mac: null, ipv4: 0, ipv6: null, ipv6LinkLocal: null },
        tcp: [sampleFlow({ guestPort: 0 })],
      }),
    /guest port 0/,
  );
  assertThrows(
    () =>
      encodeMigrationState({
        guest: { mac: null, ipv4: 0, ipv6: null, ipv6LinkLocal: null },
        tcp: [sampleFlow({ localAddress: new Uint8Array(16) })],
      }),
    /differ in family/,
  );
});
