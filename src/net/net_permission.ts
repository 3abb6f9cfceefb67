/**
 * Deno `net` permission queries for destinations that have no port: the guest's
 * pings. A ping to an address is allowed when Deno grants `net` for that address as a
 * whole (every port): `--allow-net` unrestricted, or the address listed without a
 * port (`--allow-net=127.0.0.1,[::1]`). An entry with a port (`127.0.0.1:80`) lets
 * TCP and UDP reach that one port but not pings.
 *
 * @module
 */

/** The host part of a `net` permission descriptor for `address`: IPv6 in brackets. */
export function netPermissionAddress(address: string): string {
  return address.includes(":") && !address.startsWith("[") ? `[${address}]` : address;
}

/**
 * Whether Deno's `net` permission is granted for every port of `address` right now
 * (a "prompt" state counts as refused: the daemon never prompts).
 */
export function addressPermissionGranted(address: string): boolean {
  const host = netPermissionAddress(address);
  return Deno.permissions.querySync({ name: "net", host }).state === "granted";
}
