/**
 * The daemon's guest memory map over simulated drivers' rings, for the in-process
 * benches: one region per driver, as QEMU's memfds would be, mapped onto the driver's
 * own bytes. The map's class is passed in, so that a bench can build it from another
 * checkout's modules (`--tree DIR`).
 *
 * @module
 */

/** What the benches need of a driver: its bytes and their guest-physical address. */
export interface DriverRegion {
  readonly bytes: Uint8Array;
  readonly base: number;
}

/** What the benches need of `GuestMemoryMap`'s constructor. */
export type MemoryMapClass<M> = new (
  map: (fd: number, size: number) => { bytes: Uint8Array; unmap(): void },
  maxRegions: number,
) => M & {
  add(
    region: { guestAddress: number; size: number; userAddress: number; mmapOffset: number },
    fd: number,
  ): void;
};

/** Memory slots the map accepts (more than the benches use). */
const MAX_REGIONS = 8;
/** Where each driver's region sits in the front-end's address space (apart, as QEMU's). */
const USER_ADDRESS_STEP = 2 ** 30;

/** A `MapClass` map with one region per driver, each over that driver's bytes. */
export function memoryOverDrivers<M>(
  MapClass: MemoryMapClass<M>,
  drivers: readonly DriverRegion[],
): M {
  // Regions are told apart by size when mapped: the drivers' sizes must differ.
  if (new Set(drivers.map((d) => d.bytes.length)).size !== drivers.length) {
    throw new Error("Cannot map drivers of equal sizes: their regions would be confused");
  }
  const memory = new MapClass((_fd, size) => {
    const driver = drivers.find((d) => d.bytes.length === size);
    if (driver === undefined) throw new Error(`no driver region of ${size} bytes`);
    return { bytes: driver.bytes, unmap() {} };
  }, MAX_REGIONS);
  drivers.forEach((driver, i) => {
    memory.add({
      guestAddress: driver.base,
      size: driver.bytes.length,
      userAddress: i * USER_ADDRESS_STEP,
      mmapOffset: 0,
    }, 0);
  });
  return memory;
}
