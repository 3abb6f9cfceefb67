/**
 * Encodes front-end → back-end requests: what QEMU sends. Used by the test harness
 * (tests/support/frontend/) and the backend's unit tests; the daemon itself never sends requests.
 *
 * Spec: QEMU docs/interop/vhost-user.rst, "Message Specification".
 *
 * @module
 */

import {
  FLAGS_NEED_REPLY,
  FLAGS_VERSION,
  HEADER_FLAGS,
  HEADER_REQUEST,
  HEADER_SIZE,
  HEADER_SIZE_FIELD,
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
} from "../../../src/vhost_user/protocol.ts";
import type { RegionDescription } from "../../../src/vhost_user/guest_memory_map.ts";

/** Options for an encoded request. */
export interface EncodeOptions {
  /** Set NEED_REPLY (flags bit 3). */
  needReply?: boolean;
  /** Override the whole flags word (fuzzing). */
  flags?: number;
  /** Override the header's size field (fuzzing). */
  sizeField?: number;
}

/** Encodes a request with `payload` (copied after the 12-byte header). */
export function encodeRequest(
  request: number,
  payload: Uint8Array = new Uint8Array(0),
  options: EncodeOptions = {},
): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(HEADER_REQUEST, request, true);
  view.setUint32(
    HEADER_FLAGS,
    options.flags ?? (FLAGS_VERSION | (options.needReply ? FLAGS_NEED_REPLY : 0)),
    true,
  );
  view.setUint32(HEADER_SIZE_FIELD, options.sizeField ?? payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

function setU64(view: DataView, offset: number, value: number | bigint): void {
  view.setBigUint64(offset, BigInt(value), true);
}

/** A u64 payload. */
export function u64Payload(value: number | bigint): Uint8Array {
  const out = new Uint8Array(8);
  setU64(new DataView(out.buffer), 0, value);
  return out;
}

/** A vring state payload (index, num). */
export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(VRING_STATE_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(VRING_STATE_INDEX, index, true);
  view.setUint32(VRING_STATE_NUM, num, true);
  return out;
}

/** Front-end user addresses of one ring's three areas. */
export interface RingAddresses {
  descriptor: number | bigint;
  used: number | bigint;
  available: number | bigint;
}

/**
 * A vring address payload; `logAddress` is the used ring's guest address for dirty
 * logging (sent with the VHOST_VRING_F_LOG flag).
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

/** A log description payload (SET_LOG_BASE): bitmap size and offset in the fd. */
export function logPayload(size: number | bigint, offset: number | bigint = 0): Uint8Array {
  const out = new Uint8Array(LOG_DESCRIPTION_SIZE);
  const view = new DataView(out.buffer);
  setU64(view, LOG_SIZE, size);
  setU64(view, LOG_OFFSET, offset);
  return out;
}

/** A region as encoded: fields may be out of range (for tests). */
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

/** A memory table payload as QEMU sends it: nregions, padding, then exactly the regions. */
export function memTablePayload(
  regions: readonly (RawRegion | RegionDescription)[],
  nregions = regions.length,
): Uint8Array {
  const out = new Uint8Array(MEMORY_REGIONS + regions.length * REGION_ENTRY_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(MEMORY_NREGIONS, nregions, true);
  regions.forEach((region, i) => writeRegion(view, MEMORY_REGIONS + i * REGION_ENTRY_SIZE, region));
  return out;
}

/** A single memory region payload (ADD_MEM_REG / REM_MEM_REG). */
export function singleRegionPayload(region: RawRegion | RegionDescription): Uint8Array {
  const out = new Uint8Array(SINGLE_REGION_SIZE);
  writeRegion(new DataView(out.buffer), SINGLE_REGION_ENTRY, region);
  return out;
}
