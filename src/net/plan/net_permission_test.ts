import assert from "node:assert/strict";
import {
  addressPermissionGranted,
  netPermissionAddress,
  netPermissionGranted,
  requireNetPermission,
} from "./net_permission.ts";

Deno.test("`netPermissionAddress()` brackets IPv6 once and leaves IPv4 alone", () => {
  assert.equal(netPermissionAddress("::1"), "[::1]");
  assert.equal(netPermissionAddress("[::1]"), "[::1]");
  assert.equal(netPermissionAddress("127.0.0.1"), "127.0.0.1");
});

Deno.test(
  "`requireNetPermission()` and `netPermissionGranted()` take a bracketed IPv6 host as it is",
  {
    permissions: { net: ["[::1]:7"] },
  },
  () => {
    requireNetPermission("[::1]", 7, "connect");
    requireNetPermission("::1", 7, "connect");
    assert.throws(() => requireNetPermission("[::1]", 8, "connect"), Deno.errors.NotCapable);
    assert.equal(netPermissionGranted("::1", 7), true);
    assert.equal(netPermissionGranted("[::1]", 7), true);
    assert.equal(netPermissionGranted("::1", 8), false);
    assert.equal(addressPermissionGranted("::1"), false, "one port is not the whole address");
  },
);

Deno.test("`requireNetPermission()` names the refused address, port and operation as Deno does", {
  permissions: { net: ["127.0.0.1:7"] },
}, () => {
  assert.throws(
    () => requireNetPermission("::1", 7, "listen"),
    (e: unknown) =>
      e instanceof Deno.errors.NotCapable &&
      e.message ===
        'Requires net access to "[::1]:7" to listen, run again with the --allow-net flag',
  );
});
