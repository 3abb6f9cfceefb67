/**
 * End-to-end scenarios against tpasst: vhost-user (default ring features and plain rings)
 * and the stream socket. Ignored until the integrator declares the datapath wired
 * (`TPASST_DATAPATH_WIRED` / `TPASST_PLAIN_RINGS_OK` in backends.ts); TPASST_E2E=1 runs
 * them regardless.
 * @module
 */
import {
  TPASST_DATAPATH_WIRED,
  TPASST_IGNORE_REASON,
  TPASST_PLAIN_RINGS_OK,
  TPASST_PLAIN_RINGS_REASON,
} from "./backends.ts";
import { registerE2eSuite } from "./e2e_suite.ts";

const forced = Deno.env.get("TPASST_E2E") === "1";
const ignoreReason = TPASST_DATAPATH_WIRED || forced ? null : TPASST_IGNORE_REASON;
const plainRingsReason = ignoreReason ??
  (TPASST_PLAIN_RINGS_OK || forced ? null : TPASST_PLAIN_RINGS_REASON);

registerE2eSuite("tpasst-vhost", { ignoreReason });
registerE2eSuite("tpasst-stream", { ignoreReason });
registerE2eSuite("tpasst-vhost", {
  ignoreReason: plainRingsReason,
  plainRings: true,
  label: "tpasst-vhost plain rings",
});
