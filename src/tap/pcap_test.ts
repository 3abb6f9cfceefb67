import assert from "node:assert/strict";
import { OutputFile } from "../../ffi/output_file.ts";
import { Logger } from "../log/logger.ts";
import { ScratchFrame } from "./scratch_frame.ts";
import {
  type FrameHandler,
  FrameInfo,
  type FrameSpace,
  type GuestLink,
  MAX_FRAME_LENGTH,
  SendResult,
} from "./frame_transport.ts";
import {
  PCAP_GLOBAL_HEADER_BYTES,
  PCAP_RECORD_HEADER_BYTES,
  PcapFrameHandler,
  PcapGuestLink,
  PcapWriter,
  withPcap,
} from "./pcap.ts";

/** An Ethernet/IPv4/UDP frame from 10.0.2.15:1234 to 10.0.2.2:5678 with `payload` bytes. */
function udpFrame(payload: number, id: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + payload);
  const v = new DataView(f.buffer);
  f.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x9a, 0x55, 0x4a, 0xb0, 0x2f, 0x01]);
  v.setUint16(12, 0x0800);
  v.setUint8(14, 0x45);
  v.setUint16(16, 20 + 8 + payload);
  v.setUint16(18, id);
  v.setUint8(22, 64);
  v.setUint8(23, 17);
  f.set([10, 0, 2, 15, 10, 0, 2, 2], 26);
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(24, ~sum & 0xffff);
  v.setUint16(34, 1234);
  v.setUint16(36, 5678);
  v.setUint16(38, 8 + payload);
  return f;
}

class MemorySink {
  chunks: Uint8Array[] = [];
  write(bytes: Uint8Array): void {
    this.chunks.push(bytes.slice());
  }
  get bytes(): Uint8Array {
    const out = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

class FakeLink implements GuestLink {
  readonly kind = "fake";
  readonly maxFrameLength = MAX_FRAME_LENGTH;
  readonly l4ChecksumsOptional = false;
  readonly tcpSegmentation = 0;
  readonly deviceMtu = 0;
  sent: Uint8Array[] = [];
  full = false;
  sendFrame(frame: Uint8Array): SendResult {
    if (this.full) return SendResult.NoRoom;
    this.sent.push(frame.slice());
    return SendResult.Sent;
  }
  readonly scratch = new ScratchFrame();
  reserveFrame(space: FrameSpace, maxLength: number): SendResult {
    if (this.full) return SendResult.NoRoom;
    return this.scratch.reserve(space, maxLength);
  }
  commitFrame(length: number): SendResult {
    const frame = this.scratch.take(length);
    return frame === null ? SendResult.Dropped : this.sendFrame(frame);
  }
  cancelFrame(): void {
    this.scratch.cancel();
  }
  flush(): void {}
  onWritable(): void {}
}

/** A stack double that answers each frame with the same frame, reversed in id. */
class EchoStack implements FrameHandler {
  link: GuestLink | null = null;
  received = 0;
  handleFrame(frame: Uint8Array): void {
    this.received++;
    this.link?.sendFrame(udpFrame(frame.length - 42, 1000 + this.received));
  }
  endOfBatch(): void {
    this.link?.flush();
  }
  linkUp(link: GuestLink): void {
    this.link = link;
  }
  linkDown(): void {
    this.link = null;
  }
}

Deno.test("PcapWriter writes the libpcap global header and records", () => {
  const sink = new MemorySink();
  const writer = new PcapWriter(sink, { wallClock: () => 1_700_000_000_250.5 });
  const frame = udpFrame(10, 1);
  writer.record(frame);
  writer.flush();
  const bytes = sink.bytes;
  const v = new DataView(bytes.buffer);
  assert.equal(v.getUint32(0, true), 0xa1b2c3d4);
  assert.equal(v.getUint16(4, true), 2);
  assert.equal(v.getUint16(6, true), 4);
  assert.equal(v.getUint32(16, true), 65535);
  assert.equal(v.getUint32(20, true), 1);
  const r = PCAP_GLOBAL_HEADER_BYTES;
  assert.equal(v.getUint32(r, true), 1_700_000_000);
  assert.equal(v.getUint32(r + 4, true), 250_500);
  assert.equal(v.getUint32(r + 8, true), frame.length);
  assert.equal(v.getUint32(r + 12, true), frame.length);
  assert.deepEqual(bytes.subarray(r + PCAP_RECORD_HEADER_BYTES), frame);
});

Deno.test("PcapWriter stops capturing with one log line when the sink fails", () => {
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_l, line) => lines.push(line));
  let calls = 0;
  const writer = new PcapWriter({
    write() {
      if (++calls > 1) throw new Error("disk full");
    },
  }, { logger });
  writer.record(udpFrame(1, 1));
  writer.flush();
  writer.record(udpFrame(1, 2));
  writer.flush();
  assert.equal(calls, 2);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /disk full/);
});

Deno.test("withPcap() records both directions and passes everything through", () => {
  const sink = new MemorySink();
  const writer = new PcapWriter(sink);
  const stack = new EchoStack();
  const handler = withPcap(stack, writer);
  const link = new FakeLink();
  handler.linkUp(link, 0);
  handler.handleFrame(udpFrame(20, 1), 0);
  handler.endOfBatch(0);
  link.full = true;
  handler.handleFrame(udpFrame(30, 2), 0); // the reply gets NoRoom: not recorded
  handler.endOfBatch(0);
  assert.equal(stack.received, 2);
  assert.equal(link.sent.length, 1);
  assert.equal(writer.frames, 3);
  assert.equal(stack.link?.kind, "fake");
});

Deno.test("withPcap() output written through OutputFile decodes with tshark", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/capture.pcap`;
  try {
    const file = OutputFile.open(path, { append: false });
    const writer = new PcapWriter(file);
    const stack = new EchoStack();
    const handler = withPcap(stack, writer);
    handler.linkUp(new FakeLink(), 0);
    for (let i = 0; i < 3; i++) handler.handleFrame(udpFrame(16 + i, 7 + i), 0);
    handler.handleFrame(udpFrame(65535 - 42, 99), 0);
    handler.endOfBatch(0);
    handler.linkDown(0);
    file.close();
    const out = await new Deno.Command("tshark", {
      args: [
        "-r",
        path,
        "-T",
        "fields",
        "-e",
        "eth.type",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "ip.id",
        "-e",
        "frame.len",
      ],
      stdout: "piped",
      stderr: "piped",
      env: { HOME: dir },
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const rows = text.trim().split("\n").map((line) => line.split("\t"));
    assert.equal(rows.length, 8, text);
    assert.deepEqual(rows[0], ["0x0800", "10.0.2.15", "10.0.2.2", "1234", "5678", "0x0007", "58"]);
    assert.deepEqual(rows[1][5], "0x03e9", "the reply, id 1001");
    assert.equal(rows[6][6], "65535");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PcapGuestLink.l4ChecksumsOptional is false even when the wrapped link's is true", () => {
  const inner = new FakeLink();
  const offloading: GuestLink = Object.assign(inner, { l4ChecksumsOptional: true });
  assert.equal(offloading.l4ChecksumsOptional, true);
  const wrapped = new PcapGuestLink(offloading, new PcapWriter(new MemorySink()));
  assert.equal(wrapped.l4ChecksumsOptional, false, "a capture must carry real checksums");
  assert.equal(wrapped.kind, "fake");
  // What the stack sees after withPcap: the wrapped link.
  const stack = new EchoStack();
  withPcap(stack, new PcapWriter(new MemorySink())).linkUp(offloading, 0);
  assert.equal(stack.link?.l4ChecksumsOptional, false);
});

Deno.test("PcapFrameHandler.handleFrame() passes the FrameInfo argument on", () => {
  const seen: (number | undefined)[] = [];
  const inner: FrameHandler = {
    handleFrame: (_frame: Uint8Array, _now: number, info?: number) => void seen.push(info),
    endOfBatch() {},
    linkUp() {},
    linkDown() {},
  };
  const writer = new PcapWriter(new MemorySink());
  const handler = new PcapFrameHandler(inner, writer);
  handler.handleFrame(udpFrame(4, 1), 0, FrameInfo.ChecksumPending);
  handler.handleFrame(udpFrame(4, 2), 0, FrameInfo.None);
  handler.handleFrame(udpFrame(4, 3), 0);
  withPcap(inner, writer).handleFrame(udpFrame(4, 4), 0, FrameInfo.ChecksumPending);
  assert.deepEqual(seen, [
    FrameInfo.ChecksumPending,
    FrameInfo.None,
    undefined,
    FrameInfo.ChecksumPending,
  ]);
  assert.equal(writer.frames, 4, "every frame recorded");
});
