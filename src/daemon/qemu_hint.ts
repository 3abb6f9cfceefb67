/**
 * The QEMU command-line options that connect a VM to a listening tpasst, printed at
 * start (unless `--quiet`) so they can be pasted into a QEMU command.
 *
 * @module
 */

import type { FrontendMode } from "../config/config.ts";

/** Guest RAM size put in the vhost-user hint; it must match QEMU's `-m`. */
export const HINT_GUEST_RAM = "1G";

/** The QEMU options for `mode` with the socket at `socketPath`, on one line. */
export function qemuOptions(mode: FrontendMode, socketPath: string): string {
  if (mode === "vhost-user") {
    // vhost-user needs guest RAM shared through a file descriptor (memfd, share=on).
    return `-object memory-backend-memfd,id=mem,size=${HINT_GUEST_RAM},share=on ` +
      `-numa node,memdev=mem -chardev socket,id=chr0,path=${socketPath} ` +
      `-netdev vhost-user,id=netdev0,chardev=chr0 -device virtio-net-pci,netdev=netdev0`;
  }
  return `-device virtio-net-pci,netdev=s ` +
    `-netdev stream,id=s,server=off,addr.type=unix,addr.path=${socketPath}`;
}

/** The lines printed at start: where tpasst listens and how to start QEMU against it. */
export function qemuHintLines(mode: FrontendMode, socketPath: string): string[] {
  const lines = [
    `${mode === "vhost-user" ? "vhost-user" : "Stream protocol"} socket listening at ${socketPath}`,
    "Start QEMU with these options:",
    `    ${qemuOptions(mode, socketPath)}`,
  ];
  if (mode === "vhost-user") {
    lines.push(`(size=${HINT_GUEST_RAM} must equal the guest RAM given with -m)`);
  }
  return lines;
}
