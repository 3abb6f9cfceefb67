/**
 * Packet capture (`-p FILE`): writes every frame in both directions to a file in
 * libpcap format (magic 0xa1b2c3d4, version 2.4, snaplen 65535, link type 1
 * Ethernet), readable by tcpdump and Wireshark.
 *
 * Capture is a decorator around the transport/stack seam: wrap the stack's
 * {@link FrameHandler} with {@link withPcap} and any transport gets capture of the
 * frames the guest sends (handleFrame) and of the frames sent to it (the
 * {@link GuestLink} handed to linkUp is wrapped too). Records are buffered and
 * written once per batch.
 *
 * Format reference: https://wiki.wireshark.org/Development/LibpcapFileFormat
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import { log as defaultLogger } from "../log/logger.ts";
import {
  type FrameHandler,
  type FrameSpace,
  gatherFrame,
  type GuestLink,
  MAX_FRAME_LENGTH,
  SendResult,
} from "./frame_transport.ts";

/** Magic number of a microsecond-resolution pcap file, written in host (little-endian) order. */
export const PCAP_MAGIC = 0xa1b2c3d4;
/** File format major version. */
export const PCAP_VERSION_MAJOR = 2;
/** File format minor version. */
export const PCAP_VERSION_MINOR = 4;
/** Largest captured length per frame. */
export const PCAP_SNAPLEN = 65535;
/** LINKTYPE_ETHERNET. */
export const PCAP_LINKTYPE_ETHERNET = 1;
/** Size of the global header: magic, major, minor, thiszone, sigfigs, snaplen, network. */
export const PCAP_GLOBAL_HEADER_BYTES = 24;
/** Size of a record header: ts_sec, ts_usec, incl_len, orig_len. */
export const PCAP_RECORD_HEADER_BYTES = 16;

const GLOBAL_MAGIC = 0;
const GLOBAL_VERSION_MAJOR = 4;
const GLOBAL_VERSION_MINOR = 6;
const GLOBAL_THISZONE = 8;
const GLOBAL_SIGFIGS = 12;
const GLOBAL_SNAPLEN = 16;
const GLOBAL_NETWORK = 20;
const RECORD_TS_SEC = 0;
const RECORD_TS_USEC = 4;
const RECORD_INCL_LEN = 8;
const RECORD_ORIG_LEN = 12;

/** Where capture bytes go: ffi/output_file.ts's OutputFile fits. */
export interface PcapSink {
  /** Writes all of `bytes` or throws. */
  write(bytes: Uint8Array): void;
}

/** Options of a {@link PcapWriter}. */
export interface PcapWriterOptions {
  /**
   * Wall-clock time in milliseconds since the epoch, fractions included (default:
   * performance.timeOrigin + performance.now(), so records get microsecond stamps).
   */
  readonly wallClock?: () => number;
  /** Bytes buffered before a write is forced (default 1 MiB). */
  readonly bufferBytes?: number;
  /** Where a failed write is reported (the process-wide logger by default). */
  readonly logger?: Logger;
}

/** Writes pcap records to a sink, buffered; stops capturing (one log line) if the sink fails. */
export class PcapWriter {
  readonly #sink: PcapSink;
  readonly #clock: () => number;
  readonly #logger: Logger;
  readonly #buffer: Uint8Array;
  readonly #view: DataView;
  #used = 0;
  #failed = false;
  #frames = 0;

  /** Writes the global header to `sink` at once. */
  constructor(sink: PcapSink, options: PcapWriterOptions = {}) {
    this.#sink = sink;
    this.#clock = options.wallClock ?? (() => performance.timeOrigin + performance.now());
    this.#logger = options.logger ?? defaultLogger;
    const size = Math.max(
      options.bufferBytes ?? 1 << 20,
      PCAP_RECORD_HEADER_BYTES + PCAP_SNAPLEN,
    );
    this.#buffer = new Uint8Array(size);
    this.#view = new DataView(this.#buffer.buffer);
    const v = this.#view;
    v.setUint32(GLOBAL_MAGIC, PCAP_MAGIC, true);
    v.setUint16(GLOBAL_VERSION_MAJOR, PCAP_VERSION_MAJOR, true);
    v.setUint16(GLOBAL_VERSION_MINOR, PCAP_VERSION_MINOR, true);
    v.setInt32(GLOBAL_THISZONE, 0, true);
    v.setUint32(GLOBAL_SIGFIGS, 0, true);
    v.setUint32(GLOBAL_SNAPLEN, PCAP_SNAPLEN, true);
    v.setUint32(GLOBAL_NETWORK, PCAP_LINKTYPE_ETHERNET, true);
    this.#used = PCAP_GLOBAL_HEADER_BYTES;
    this.flush();
  }

  /** Number of frames recorded. */
  get frames(): number {
    return this.#frames;
  }

  /** Appends one frame record (truncated to the snaplen), timestamped now. */
  record(frame: Uint8Array): void {
    if (this.#failed) return;
    const captured = Math.min(frame.length, PCAP_SNAPLEN);
    if (this.#buffer.length - this.#used < PCAP_RECORD_HEADER_BYTES + captured) this.flush();
    if (this.#failed) return;
    const ms = this.#clock();
    const seconds = Math.floor(ms / 1000);
    const at = this.#used;
    const v = this.#view;
    v.setUint32(at + RECORD_TS_SEC, seconds >>> 0, true);
    v.setUint32(at + RECORD_TS_USEC, Math.floor((ms - seconds * 1000) * 1000), true);
    v.setUint32(at + RECORD_INCL_LEN, captured, true);
    v.setUint32(at + RECORD_ORIG_LEN, frame.length, true);
    this.#buffer.set(
      captured === frame.length ? frame : frame.subarray(0, captured),
      at + PCAP_RECORD_HEADER_BYTES,
    );
    this.#used = at + PCAP_RECORD_HEADER_BYTES + captured;
    this.#frames++;
  }

  /** Writes the buffered records to the sink. */
  flush(): void {
    if (this.#used === 0 || this.#failed) return;
    try {
      this.#sink.write(this.#buffer.subarray(0, this.#used));
    } catch (error) {
      this.#failed = true;
      this.#logger.error(`pcap: capture stopped, write failed: ${(error as Error).message}`);
    }
    this.#used = 0;
  }
}

/** A {@link GuestLink} that records every frame sent to the guest. */
export class PcapGuestLink implements GuestLink {
  readonly #inner: GuestLink;
  readonly #writer: PcapWriter;
  readonly #frame = new Uint8Array(MAX_FRAME_LENGTH);
  #space: FrameSpace | null = null;

  /** Wraps `inner`, recording to `writer`. */
  constructor(inner: GuestLink, writer: PcapWriter) {
    this.#inner = inner;
    this.#writer = writer;
  }

  /** The wrapped link's kind. */
  get kind(): string {
    return this.#inner.kind;
  }

  /** {@inheritDoc GuestLink.maxFrameLength} */
  get maxFrameLength(): number {
    return this.#inner.maxFrameLength;
  }

  /** {@inheritDoc GuestLink.l4ChecksumsOptional} Always false: captured frames carry real checksums. */
  readonly l4ChecksumsOptional = false;

  /** {@inheritDoc GuestLink.tcpSegmentation} None: captured frames are the segments the guest sees. */
  readonly tcpSegmentation = 0;

  /** {@inheritDoc GuestLink.deviceMtu} The wrapped link's. */
  get deviceMtu(): number {
    return this.#inner.deviceMtu;
  }

  /** {@inheritDoc GuestLink.sendFrame} Frames actually sent are recorded. */
  sendFrame(frame: Uint8Array, checksumStart?: number, checksumOffset?: number): SendResult {
    const result = this.#inner.sendFrame(frame, checksumStart, checksumOffset);
    if (result === 0) this.#writer.record(frame);
    return result;
  }

  /** {@inheritDoc GuestLink.reserveFrame} */
  reserveFrame(space: FrameSpace, maxLength: number, headerLength: number): SendResult {
    const result = this.#inner.reserveFrame(space, maxLength, headerLength);
    this.#space = result === SendResult.Sent ? space : null;
    return result;
  }

  /** {@inheritDoc GuestLink.commitFrame} The frame is recorded when the inner link took it. */
  commitFrame(length: number, checksumStart?: number, checksumOffset?: number): SendResult {
    const space = this.#space;
    this.#space = null;
    let copy: Uint8Array | null = null;
    if (space !== null && length <= space.length) {
      copy = this.#frame.subarray(0, length);
      gatherFrame(space, length, copy); // before the guest may own it
    }
    const result = this.#inner.commitFrame(length, checksumStart, checksumOffset);
    if (result === SendResult.Sent && copy !== null) this.#writer.record(copy);
    return result;
  }

  /** {@inheritDoc GuestLink.cancelFrame} */
  cancelFrame(): void {
    this.#space = null;
    this.#inner.cancelFrame();
  }

  /** {@inheritDoc GuestLink.flush} */
  flush(): void {
    this.#inner.flush();
    this.#writer.flush();
  }

  /** {@inheritDoc GuestLink.onWritable} */
  onWritable(callback: (now: number) => void): void {
    this.#inner.onWritable(callback);
  }
}

/** A {@link FrameHandler} that records the guest's frames, then passes everything on. */
export class PcapFrameHandler implements FrameHandler {
  readonly #inner: FrameHandler;
  readonly #writer: PcapWriter;

  /** Wraps `inner`, recording to `writer`. */
  constructor(inner: FrameHandler, writer: PcapWriter) {
    this.#inner = inner;
    this.#writer = writer;
  }

  /** {@inheritDoc FrameHandler.handleFrame} */
  handleFrame(frame: Uint8Array, now: number, info?: number): void {
    this.#writer.record(frame);
    this.#inner.handleFrame(frame, now, info);
  }

  /** {@inheritDoc FrameHandler.endOfBatch} */
  endOfBatch(now: number): void {
    this.#inner.endOfBatch(now);
    this.#writer.flush();
  }

  /** {@inheritDoc FrameHandler.linkUp} The link is wrapped so that frames to the guest are recorded. */
  linkUp(link: GuestLink, now: number): void {
    this.#inner.linkUp(new PcapGuestLink(link, this.#writer), now);
  }

  /** {@inheritDoc FrameHandler.linkDown} */
  linkDown(now: number): void {
    this.#writer.flush();
    this.#inner.linkDown(now);
  }

  /** {@inheritDoc FrameHandler.frontendGone} */
  frontendGone(now: number): void {
    this.#inner.frontendGone?.(now);
  }
}

/** Wraps the stack's frame handler so that every frame, both ways, is captured by `writer`. */
export function withPcap(handler: FrameHandler, writer: PcapWriter): FrameHandler {
  return new PcapFrameHandler(handler, writer);
}
