/**
 * Deno `net` permission queries for what the guest reaches through the host: TCP and
 * UDP destinations and listeners (an address and a port), and pings (an address with
 * no port). A ping to an address is allowed when Deno grants `net` for that address as
 * a whole (every port): `--allow-net` unrestricted, or the address listed without a
 * port (`--allow-net=127.0.0.1,[::1]`). An entry with a port (`127.0.0.1:80`) lets
 * TCP and UDP reach that one port but not pings. Every query is answered now: a
 * "prompt" state counts as refused, the daemon never prompts.
 *
 * @module
 */

/** The host part of a `net` permission descriptor for `address`: IPv6 in brackets. */
export function netPermissionAddress(address: string): string {
  return address.includes(":") && !address.startsWith("[") ? `[${address}]` : address;
}

/** A `net` permission descriptor's host for `address`:`port` ("[::1]:53"). */
function netPermissionHost(address: string, port: number): string {
  return `${netPermissionAddress(address)}:${port}`;
}

/** Whether Deno's `net` permission is granted for every port of `address` right now. */
export function addressPermissionGranted(address: string): boolean {
  const host = netPermissionAddress(address);
  return Deno.permissions.querySync({ name: "net", host }).state === "granted";
}

/** Whether Deno's `net` permission is granted for `address`:`port` right now. */
export function netPermissionGranted(address: string, port: number): boolean {
  const host = netPermissionHost(address, port);
  return Deno.permissions.querySync({ name: "net", host }).state === "granted";
}

/**
 * Throws Deno.errors.NotCapable, worded as Deno's own refusal, unless Deno's `net`
 * permission is granted for `address`:`port` right now (see {@link netPermissionGranted}).
 * @param what the operation refused, for the message ("connect", "listen")
 */
export function requireNetPermission(address: string, port: number, what: string): void {
  if (!netPermissionGranted(address, port)) {
    throw new Deno.errors.NotCapable(
      `Requires net access to "${
        netPermissionHost(address, port)
      }" to ${what}, run again with the --allow-net flag`,
    );
  }
}
