/**
 * End-to-end scenarios against tpasst: vhost-user (default ring features and plain rings)
 * and the stream socket. Ignored until the daemon carries traffic: set
 * `TPASST_DATAPATH_WIRED` in backends.ts to true (or run with TPASST_E2E=1) to enable.
 * @module
 */
import { TPASST_DATAPATH_WIRED, TPASST_IGNORE_REASON } from "./backends.ts";
import { registerE2eSuite } from "./e2e_suite.ts";

const ignoreReason = TPASST_DATAPATH_WIRED || Deno.env.get("TPASST_E2E") === "1"
  ? null
  : TPASST_IGNORE_REASON;

registerE2eSuite("tpasst-vhost", { ignoreReason });
registerE2eSuite("tpasst-vhost", {
  ignoreReason,
  plainRings: true,
  label: "tpasst-vhost plain rings",
});
registerE2eSuite("tpasst-stream", { ignoreReason });
