/**
 * End-to-end scenarios against tpasst: vhost-user with QEMU's default ring features, the
 * stream socket, vhost-user with 4 queue pairs (`queues=4`, `mq=on`: every scenario, and
 * frames over more than one pair each way), vhost-user with each of
 * mrg_rxbuf/event_idx/indirect_desc turned off alone and all three together, vhost-user
 * over packed rings (packed=on, with the default ring features and with all three off),
 * and pcap captures checked with tshark (vhost-user and stream). Lifecycle scenarios
 * (reconnects, --one-off) are in lifecycle_test.ts.
 * @module
 */
import { LIGHT_BULK_BYTES, LIGHT_PHASES, registerE2eSuite } from "./e2e_suite.ts";

registerE2eSuite("tpasst-vhost");
registerE2eSuite("tpasst-stream");
registerE2eSuite("tpasst-vhost", {
  queues: 4,
  label: "tpasst-vhost multiqueue (queues=4, mq=on)",
});
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
// Guest MTU 1,500 set by the device (QEMU host_mtu, VIRTIO_NET_F_MTU / NET_SET_MTU), with
// TCP segmentation offload both ways, toward the guest only, from the guest only, and
// none (QEMU's device properties turn each offload off from the frontend side).
const HOST_OFFLOADS_OFF = "host_tso4=off,host_tso6=off,host_ecn=off";
const GUEST_OFFLOADS_OFF = "guest_tso4=off,guest_tso6=off,guest_ecn=off";
for (
  const [offloads, off, fromGuest, toGuest] of [
    ["on", "", true, true],
    ["guest→host off", `,${HOST_OFFLOADS_OFF}`, false, true],
    ["host→guest off", `,${GUEST_OFFLOADS_OFF}`, true, false],
    ["off", `,${HOST_OFFLOADS_OFF},${GUEST_OFFLOADS_OFF}`, false, false],
  ] as const
) {
  registerE2eSuite("tpasst-vhost", {
    deviceOptions: `host_mtu=1500${off}`,
    expectLinkMtu: 1500,
    expectSegmented: { fromGuest, toGuest },
    label: `tpasst-vhost MTU 1500 (host_mtu), offloads ${offloads}`,
  });
}
// A guest that fixes its MTU at 1,500 behind tpasst's back (no host_mtu, the lease says
// 65,520): its MSS keeps TCP in bounds, and nothing it receives is dropped.
registerE2eSuite("tpasst-vhost", {
  guestMtu: 1500,
  expectLinkMtu: 1500,
  bulkBytes: LIGHT_BULK_BYTES,
  label: "tpasst-vhost guest MTU fixed at 1500 (unknown to tpasst)",
});
for (const kind of ["tpasst-vhost", "tpasst-stream"] as const) {
  registerE2eSuite(kind, {
    pcap: true,
    phases: LIGHT_PHASES,
    bulkBytes: LIGHT_BULK_BYTES,
    label: `${kind} with -p (pcap)`,
  });
}
