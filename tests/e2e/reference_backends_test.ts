/**
 * End-to-end scenarios against the reference backends (QEMU slirp and Debian's passt in
 * stream mode): they prove the guest image, the QEMU runner and the host-side peers.
 * @module
 */
import { registerE2eSuite } from "./e2e_suite.ts";

registerE2eSuite("slirp");
registerE2eSuite("passt");
