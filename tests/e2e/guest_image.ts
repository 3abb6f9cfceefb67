/**
 * Locates the end-to-end guest (kernel + initramfs) built by `tests/e2e/guest/build.sh`,
 * running the builder first (it is instant when the cached image is current).
 *
 * @module
 */

/** Paths of the guest kernel and initramfs. */
export interface GuestImage {
  readonly kernel: string;
  readonly initramfs: string;
  /** Cache key (kernel, busybox, iperf3, libc versions and a hash of the guest sources). */
  readonly key: string;
}

const BUILD_SCRIPT = new URL("./guest/build.sh", import.meta.url).pathname;
const MANIFEST = new URL("./.cache/guest.json", import.meta.url).pathname;

let cached: Promise<GuestImage> | null = null;

/** Builds the guest image if needed (once per process) and returns its paths. */
export function ensureGuestImage(): Promise<GuestImage> {
  cached ??= build();
  return cached;
}

async function build(): Promise<GuestImage> {
  const output = await new Deno.Command(BUILD_SCRIPT, { stdout: "piped", stderr: "piped" })
    .output();
  if (!output.success) {
    cached = null;
    throw new Error(
      `tests/e2e/guest/build.sh failed (exit ${output.code}):\n${
        new TextDecoder().decode(output.stderr)
      }`,
    );
  }
  const manifest = JSON.parse(await Deno.readTextFile(MANIFEST)) as GuestImage;
  return manifest;
}
