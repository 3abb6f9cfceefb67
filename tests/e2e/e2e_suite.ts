/**
 * Registers the end-to-end tests for one backend: one guest boot (an {@link E2eSession}
 * running every phase) shared by one Deno test per scenario, in the order the guest runs
 * them; the last test checks the clean power-off and releases everything.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type BackendKind, pingGatewayUnavailable } from "./backends.ts";
import { HELLO_BODY } from "./host_services.ts";
import {
  DNS_TEST_ADDRESS,
  DNS_TEST_NAME,
  E2eSession,
  GUEST_PAGE,
  GUEST_UDP_MESSAGE,
  HOST_TCP_MESSAGE,
  HOST_UDP_MESSAGE,
} from "./scenario.ts";

/** Options for {@link registerE2eSuite}. */
export interface SuiteOptions {
  /** Why every test of this backend is ignored (null: they run). */
  readonly ignoreReason?: string | null;
  /** tpasst vhost-user only: plain rings (no MRG_RXBUF/EVENT_IDX/INDIRECT_DESC). */
  readonly plainRings?: boolean;
  /** Name shown in test names (default: the backend kind). */
  readonly label?: string;
}

/** Time for QEMU to boot and the guest to get its lease (TCG on a loaded machine). */
const BOOT_TIMEOUT_MS = 180_000;
/** Time for any later phase's result. */
const PHASE_TIMEOUT_MS = 300_000;
/** Bytes per bulk transfer. */
const BULK_BYTES = 100 * 1024 * 1024;

/** Registers the scenario tests against backend `kind`. */
export function registerE2eSuite(kind: BackendKind, options: SuiteOptions = {}): void {
  const label = options.label ?? kind;
  let session: Promise<E2eSession> | null = null;
  const getSession = () => {
    session ??= E2eSession.start(kind, { bulkBytes: BULK_BYTES, plainRings: options.plainRings })
      .then((s) => (started = s));
    return session;
  };
  const closeSession = async () => {
    const current = session;
    session = null;
    if (current) await (await current.catch(() => null))?.close();
    started = null;
  };
  // If the closing test does not run (filtered, or the runner stops), QEMU and the
  // backend must not outlive the test process.
  let started: E2eSession | null = null;
  globalThis.addEventListener("unload", () => started?.abort());

  const define = (
    what: string,
    fn: (s: E2eSession) => Promise<void>,
    ignoreReason: string | null = null,
  ) => {
    const reason = options.ignoreReason ?? ignoreReason;
    Deno.test({
      name: `e2e ${label}: ${what}${reason ? ` (ignored: ${reason})` : ""}`,
      ignore: reason !== null,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => fn(await getSession()),
    });
  };

  define("the guest boots and gets a DHCP lease with the gateway as router", async (s) => {
    const ip = await s.result("dhcp-ip", BOOT_TIMEOUT_MS);
    assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
    assert.equal(await s.result("dhcp-router", PHASE_TIMEOUT_MS), s.backend.hostLoopback4);
  });

  define("the guest configures IPv6 by SLAAC from the router advertisement", async (s) => {
    const address = await s.result("slaac-addr", PHASE_TIMEOUT_MS);
    assert.match(address, /^[0-9a-f:]+\/64$/);
    assert.match(await s.result("ipv6-router", PHASE_TIMEOUT_MS), /^fe80:/);
  });

  define("the guest pings its gateway", async (s) => {
    assert.equal(await s.result("ping-gw", PHASE_TIMEOUT_MS), "ok");
  }, pingGatewayUnavailable(kind));

  define("the guest fetches a page from the host's loopback over IPv4", async (s) => {
    assert.equal(await s.result("http-get", PHASE_TIMEOUT_MS), HELLO_BODY.trim());
  });

  define("the guest fetches a page from the host's loopback over IPv6", async (s) => {
    assert.equal(await s.result("http6-get", PHASE_TIMEOUT_MS), HELLO_BODY.trim());
  });

  define("the guest resolves a name at the test's DNS responder on loopback", async (s) => {
    assert.equal(await s.result("dns-a", PHASE_TIMEOUT_MS), DNS_TEST_ADDRESS);
    assert.ok(s.dns.questions.some((q) => q.name === DNS_TEST_NAME && q.type === 1));
  });

  define("the guest sends UDP to the host and gets the answer", async (s) => {
    assert.equal(await s.result("udp-out", PHASE_TIMEOUT_MS), `echo:${GUEST_UDP_MESSAGE}`);
    assert.ok(s.udpEcho.received.includes(GUEST_UDP_MESSAGE));
  });

  define("the host reaches a forwarded guest TCP port, data both ways", async (s) => {
    assert.equal(await s.tcpIn, GUEST_PAGE);
    assert.equal(await s.result("tcp-in", PHASE_TIMEOUT_MS), HOST_TCP_MESSAGE.trim());
  });

  define("the host reaches a forwarded guest UDP port and gets the echo", async (s) => {
    assert.equal(await s.udpIn, `echo:${HOST_UDP_MESSAGE}`);
    assert.equal(await s.result("udp-in", PHASE_TIMEOUT_MS), HOST_UDP_MESSAGE);
  });

  define("100 MiB from guest to host arrive intact (SHA-256)", async (s) => {
    const guestSha = await s.result("bulk-up-sha256", PHASE_TIMEOUT_MS);
    await s.guest.waitUntil(() => s.sink.received.length > 0, "the sink to finish", 30_000);
    assert.deepEqual(s.sink.received[0], { bytes: s.bulkBytes, sha256: guestSha });
  });

  define("100 MiB from host to guest arrive intact (SHA-256)", async (s) => {
    const guestSha = await s.result("bulk-down-sha256", PHASE_TIMEOUT_MS);
    assert.equal(s.http.bulkSha256.length, 1);
    assert.equal(guestSha, s.http.bulkSha256[0]);
  });

  define("iperf3 runs guest→host and host→guest against the host's server", async (s) => {
    for (const mark of ["iperf-up-mbps", "iperf-down-mbps"]) {
      const mbps = Number(await s.result(mark, PHASE_TIMEOUT_MS));
      assert.ok(mbps > 0, `${mark} is ${mbps}`);
    }
  });

  define("the scenario script finishes and the guest powers off", async (s) => {
    try {
      assert.equal(await s.guest.waitForDone(PHASE_TIMEOUT_MS), 0);
      const status = await s.guest.waitForExit(30_000);
      assert.equal(status.code, 0);
    } finally {
      await closeSession();
    }
  });
}
