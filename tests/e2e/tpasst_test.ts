/**
 * End-to-end scenarios against tpasst: vhost-user with QEMU's default ring features, the
 * stream socket, vhost-user with each of mrg_rxbuf/event_idx/indirect_desc turned off
 * alone and all three together, vhost-user over packed rings (packed=on, with the default
 * ring features and with all three off), and pcap captures checked with tshark (vhost-user and
 * stream). Lifecycle scenarios (reconnects, --one-off) are in lifecycle_test.ts.
 * @module
 */
import { LIGHT_BULK_BYTES, LIGHT_PHASES, registerE2eSuite } from "./e2e_suite.ts";

registerE2eSuite("tpasst-vhost");
registerE2eSuite("tpasst-stream");
registerE2eSuite("tpasst-vhost", {
  deviceOptions: "mrg_rxbuf=off,event_idx=off,indirect_desc=off",
  label: "tpasst-vhost plain rings (mrg_rxbuf, event_idx, indirect_desc off)",
});
// Packed virtqueues (VIRTIO_F_RING_PACKED): the whole scenario set, once with QEMU's
// default ring features and once with all of them off.
registerE2eSuite("tpasst-vhost", {
  deviceOptions: "packed=on",
  expectRingLayout: "packed",
  label: "tpasst-vhost packed rings",
});
registerE2eSuite("tpasst-vhost", {
  deviceOptions: "packed=on,mrg_rxbuf=off,event_idx=off,indirect_desc=off",
  expectRingLayout: "packed",
  phases: LIGHT_PHASES,
  bulkBytes: LIGHT_BULK_BYTES,
  label: "tpasst-vhost packed plain rings (mrg_rxbuf, event_idx, indirect_desc off)",
});
for (const option of ["mrg_rxbuf=off", "event_idx=off", "indirect_desc=off"]) {
  registerE2eSuite("tpasst-vhost", {
    deviceOptions: option,
    phases: LIGHT_PHASES,
    bulkBytes: LIGHT_BULK_BYTES,
    label: `tpasst-vhost ${option}`,
  });
}
for (const kind of ["tpasst-vhost", "tpasst-stream"] as const) {
  registerE2eSuite(kind, {
    pcap: true,
    phases: LIGHT_PHASES,
    bulkBytes: LIGHT_BULK_BYTES,
    label: `${kind} with -p (pcap)`,
  });
}
