/**
 * Typed payloads of vhost-user requests, both ways: the backend decodes what the
 * front-end sends (vring state, vring addresses, memory regions, log description),
 * and the encoders write the same layouts (the test front-end and fuzzers send
 * them; the round trip is checked in payload_codec_test.ts). Decoders read a
 * payload whose size the caller has checked; a u64 field that must be an address or
 * size is read as a number and refused at 2^53 or above ({@link readU64}).
 *
 * Spec: QEMU docs/interop/vhost-user.rst, "Message Specification" (vring state
 * description, vring address description, memory region description, log description).
 *
 * @module
 */

import {
  LOG_DESCRIPTION_SIZE,
  LOG_OFFSET,
  LOG_SIZE,
  MEMORY_NREGIONS,
  MEMORY_REGIONS,
  REGION_ENTRY_SIZE,
  REGION_GUEST_ADDRESS,
  REGION_MMAP_OFFSET,
  REGION_SIZE,
  REGION_USER_ADDRESS,
  SINGLE_REGION_ENTRY,
  SINGLE_REGION_SIZE,
  U64_PAYLOAD_SIZE,
  VHOST_VRING_F_LOG,
  VRING_ADDR_AVAILABLE,
  VRING_ADDR_DESCRIPTOR,
  VRING_ADDR_FLAGS,
  VRING_ADDR_INDEX,
  VRING_ADDR_LOG,
  VRING_ADDR_SIZE,
  VRING_ADDR_USED,
  VRING_STATE_INDEX,
  VRING_STATE_NUM,
  VRING_STATE_SIZE,
} from "./protocol.ts";
import { readU64 } from "./message_codec.ts";
import type { RegionDescription } from "./guest_memory_map.ts";

/** The vring address flags word with only VHOST_VRING_F_LOG set (spec "Migration"). */
export const VRING_FLAGS_LOG = 1 << VHOST_VRING_F_LOG;

// --- decoding ----------------------------------------------------------------------

/** A vring state description (SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE). */
export interface VringState {
  readonly index: number;
  readonly num: number;
}

/** Decodes a vring state description. */
export function decodeVringState(payload: DataView): VringState {
  return {
    index: payload.getUint32(VRING_STATE_INDEX, true),
    num: payload.getUint32(VRING_STATE_NUM, true),
  };
}

/** A vring address description (SET_VRING_ADDR): front-end addresses of the ring's areas. */
export interface VringAddress {
  readonly index: number;
  /** The flags word as sent (only {@link VRING_FLAGS_LOG} is defined). */
  readonly flags: number;
  readonly descriptor: number;
  readonly used: number;
  readonly available: number;
  /** Guest address of the used ring for dirty logging; 0 unless VHOST_VRING_F_LOG is set. */
  readonly log: number;
}

/**
 * Decodes a vring address description.
 * @throws ProtocolError when an address is 2^53 or above
 */
export function decodeVringAddress(payload: DataView, request: number): VringAddress {
  const flags = payload.getUint32(VRING_ADDR_FLAGS, true);
  return {
    index: payload.getUint32(VRING_ADDR_INDEX, true),
    flags,
    log: (flags & VRING_FLAGS_LOG) !== 0
      ? readU64(payload, VRING_ADDR_LOG, "log guest address", request)
      : 0,
    descriptor: readU64(payload, VRING_ADDR_DESCRIPTOR, "descriptor table address", request),
    used: readU64(payload, VRING_ADDR_USED, "used ring address", request),
    available: readU64(payload, VRING_ADDR_AVAILABLE, "available ring address", request),
  };
}

/**
 * Decodes the memory region description at `offset` of `payload` (an entry of
 * SET_MEM_TABLE's table, or {@link SINGLE_REGION_ENTRY} for ADD/REM_MEM_REG).
 * @throws ProtocolError when a field is 2^53 or above
 */
export function decodeRegion(
  payload: DataView,
  offset: number,
  request: number,
): RegionDescription {
  return {
    guestAddress: readU64(payload, offset + REGION_GUEST_ADDRESS, "region guest address", request),
    size: readU64(payload, offset + REGION_SIZE, "region size", request),
    userAddress: readU64(payload, offset + REGION_USER_ADDRESS, "region user address", request),
    mmapOffset: readU64(payload, offset + REGION_MMAP_OFFSET, "region mmap offset", request),
  };
}

/** The region count of a memory table (SET_MEM_TABLE), before its regions. */
export function decodeRegionCount(payload: DataView): number {
  return payload.getUint32(MEMORY_NREGIONS, true);
}

/** Offset of region `i` of a memory table (SET_MEM_TABLE). */
export function regionEntryOffset(i: number): number {
  return MEMORY_REGIONS + i * REGION_ENTRY_SIZE;
}

/** A log description (SET_LOG_BASE): the dirty bitmap's size and its offset in the fd. */
export interface LogDescription {
  readonly size: number;
  readonly offset: number;
}

/**
 * Decodes a log description.
 * @throws ProtocolError when a field is 2^53 or above
 */
export function decodeLogDescription(payload: DataView, request: number): LogDescription {
  return {
    size: readU64(payload, LOG_SIZE, "log size", request),
    offset: readU64(payload, LOG_OFFSET, "log offset", request),
  };
}

// --- encoding ----------------------------------------------------------------------

function setU64(view: DataView, offset: number, value: number | bigint): void {
  view.setBigUint64(offset, BigInt(value), true);
}

/** Encodes a u64 payload (features, a vring fd's index and flags, ...). */
export function u64Payload(value: number | bigint): Uint8Array {
  const out = new Uint8Array(U64_PAYLOAD_SIZE);
  setU64(new DataView(out.buffer), 0, value);
  return out;
}

/** Encodes a vring state description. */
export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(VRING_STATE_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(VRING_STATE_INDEX, index, true);
  view.setUint32(VRING_STATE_NUM, num, true);
  return out;
}

/** Front-end user addresses of one ring's three areas (bigint: out of range on purpose). */
export interface RingAddresses {
  descriptor: number | bigint;
  used: number | bigint;
  available: number | bigint;
}

/**
 * Encodes a vring address description; `logAddress` is the used ring's guest address
 * for dirty logging (sent with the VHOST_VRING_F_LOG flag).
 */
export function vringAddrPayload(
  index: number,
  addresses: RingAddresses,
  flags = 0,
  logAddress: number | bigint = 0,
): Uint8Array {
  const out = new Uint8Array(VRING_ADDR_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(VRING_ADDR_INDEX, index, true);
  view.setUint32(VRING_ADDR_FLAGS, flags, true);
  setU64(view, VRING_ADDR_DESCRIPTOR, addresses.descriptor);
  setU64(view, VRING_ADDR_USED, addresses.used);
  setU64(view, VRING_ADDR_AVAILABLE, addresses.available);
  setU64(view, VRING_ADDR_LOG, logAddress);
  return out;
}

/** Encodes a log description (SET_LOG_BASE): bitmap size and offset in the fd. */
export function logPayload(size: number | bigint, offset: number | bigint = 0): Uint8Array {
  const out = new Uint8Array(LOG_DESCRIPTION_SIZE);
  const view = new DataView(out.buffer);
  setU64(view, LOG_SIZE, size);
  setU64(view, LOG_OFFSET, offset);
  return out;
}

/** A region as encoded: fields may be out of range (bigint, for tests of the refusal). */
export interface RawRegion {
  guestAddress: number | bigint;
  size: number | bigint;
  userAddress: number | bigint;
  mmapOffset: number | bigint;
}

function writeRegion(view: DataView, offset: number, region: RawRegion | RegionDescription): void {
  setU64(view, offset + REGION_GUEST_ADDRESS, region.guestAddress);
  setU64(view, offset + REGION_SIZE, region.size);
  setU64(view, offset + REGION_USER_ADDRESS, region.userAddress);
  setU64(view, offset + REGION_MMAP_OFFSET, region.mmapOffset);
}

/** Encodes a memory table as QEMU sends it: nregions, padding, then exactly the regions. */
export function memTablePayload(
  regions: readonly (RawRegion | RegionDescription)[],
  nregions = regions.length,
): Uint8Array {
  const out = new Uint8Array(MEMORY_REGIONS + regions.length * REGION_ENTRY_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(MEMORY_NREGIONS, nregions, true);
  regions.forEach((region, i) => writeRegion(view, regionEntryOffset(i), region));
  return out;
}

/** Encodes a single memory region (ADD_MEM_REG / REM_MEM_REG). */
export function singleRegionPayload(region: RawRegion | RegionDescription): Uint8Array {
  const out = new Uint8Array(SINGLE_REGION_SIZE);
  writeRegion(new DataView(out.buffer), SINGLE_REGION_ENTRY, region);
  return out;
}
