/**
 * Registers the end-to-end tests for one backend: one guest boot (an {@link E2eSession}
 * running every phase) shared by one Deno test per scenario, in the order the guest runs
 * them; the last test checks the clean power-off and releases everything.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type BackendKind,
  type BackendOptions,
  hostOwnAddresses,
  pingGatewayUnavailable,
  tcpEndUnsupported,
} from "./backends.ts";
import { HELLO_BODY } from "./host_services.ts";
import {
  DNS_TEST_ADDRESS,
  DNS_TEST_NAME,
  E2eSession,
  GUEST_HALF_CLOSE_MESSAGE,
  GUEST_PAGE,
  GUEST_UDP_MESSAGE,
  HOST_HALF_CLOSE_MESSAGE,
  HOST_TCP_MESSAGE,
  HOST_UDP_MESSAGE,
  type Phase,
  PHASES,
} from "./scenario.ts";
import { pcapSummary } from "./pcap.ts";

/** Options for {@link registerE2eSuite}. */
export interface SuiteOptions {
  /** Phases the guest runs (default: all); tests of other phases are not registered. */
  readonly phases?: readonly Phase[];
  /** Bytes per bulk transfer (default 100 MiB). */
  readonly bulkBytes?: number;
  /** tpasst vhost-user only: virtio-net device options, e.g. `mrg_rxbuf=off`. */
  readonly deviceOptions?: string;
  /** tpasst/passt: capture to a pcap file and check it with tshark after the run. */
  readonly pcap?: boolean;
  /**
   * tpasst vhost-user: queue pairs (`queues=N`, `mq=on`); the guest turns them all on
   * and a test checks that frames went over more than one pair each way.
   */
  readonly queues?: number;
  /** Name shown in test names (default: the backend kind). */
  readonly label?: string;
  /**
   * tpasst vhost-user: the ring layout the rings must run (the daemon's SIGUSR1 stats
   * show it), e.g. "packed" with `packed=on`: QEMU 10.0.2 silently turns `packed=on`
   * off when the backend does not offer VIRTIO_F_RING_PACKED.
   */
  readonly expectRingLayout?: "packed" | "split";
  /** The guest sets this MTU itself after DHCP (ScenarioOptions.guestMtu). */
  readonly guestMtu?: number;
  /**
   * Check at the end that the guest's interface has this MTU and that neither its
   * driver nor its TCP dropped a frame (rx errors, drops, length errors; TCP InErrs,
   * InCsumErrors).
   */
  readonly expectLinkMtu?: number;
  /**
   * tpasst vhost-user: check (SIGUSR1's stats-json line) that the link carried
   * segmented TCP frames in the directions given, and none in the others.
   */
  readonly expectSegmented?: { readonly fromGuest: boolean; readonly toGuest: boolean };
}

/**
 * Phases of the lighter boots (device options, pcap): configuration, pings, one fetch and
 * 10 MiB host→guest.
 */
export const LIGHT_PHASES: readonly Phase[] = [
  "dhcp",
  "slaac",
  "dhcpv6",
  "ping",
  "ping6",
  "http",
  "bulk-down",
];

/**
 * Why the pings are not run against Debian's passt: its ICMPv6 echo to the gateway gets no
 * answer (tried), i.e. this 2023 passt does not map ICMP to the host's loopback as it does
 * TCP and UDP, so its echo requests would go to the real gateway, off the host. The guest
 * script leaves the ping phases out for passt.
 */
export const PASST_PING_REASON =
  "Debian's passt (2023) does not map ICMP echo to the gateway onto host loopback: the pings would leave the host";

/** DHCP message types of a lease (RFC 2132 section 9.6). */
const DHCP_EXCHANGE = [[1, "Discover"], [2, "Offer"], [3, "Request"], [5, "ACK"]] as const;
/** DHCPv6 message types of an exchange (RFC 8415 section 7.3). */
const DHCPV6_EXCHANGE = [[1, "Solicit"], [2, "Advertise"], [3, "Request"], [7, "Reply"]] as const;

/** Bulk bytes of the lighter boots. */
export const LIGHT_BULK_BYTES = 10 * 1024 * 1024;

/** Time for QEMU to boot and the guest to get its lease (TCG on a loaded machine). */
const BOOT_TIMEOUT_MS = 180_000;
/** Time for any later phase's result. */
const PHASE_TIMEOUT_MS = 300_000;
/** Bytes per bulk transfer. */
const BULK_BYTES = 100 * 1024 * 1024;

/** Registers the scenario tests against backend `kind`. */
export function registerE2eSuite(kind: BackendKind, options: SuiteOptions = {}): void {
  const label = options.label ?? kind;
  const phases = (options.phases ?? PHASES).filter((p) =>
    // only tpasst is started with --map-guest-addr: elsewhere the ping would leave the host
    (p !== "ping-host" || kind === "tpasst-vhost" || kind === "tpasst-stream") &&
    (kind !== "passt" || (p !== "ping" && p !== "ping6")) &&
    tcpEndUnsupported(kind, p) === null
  );
  const bulkBytes = options.bulkBytes ?? BULK_BYTES;
  const bulkText = `${bulkBytes / (1024 * 1024)} MiB`;
  let pcapDir: string | null = null;
  let session: Promise<E2eSession> | null = null;
  const getSession = () => {
    session ??= (async () => {
      const backend: Omit<BackendOptions, "forwards"> = {
        deviceOptions: options.deviceOptions,
        queues: options.queues,
        // -d: the link logs its per-pair frame counters when it goes down
        ...((options.queues ?? 1) > 1 || options.expectSegmented !== undefined
          ? { extraArgs: ["-d"] }
          : {}),
      };
      if (options.pcap) {
        pcapDir = await Deno.makeTempDir({ prefix: "tpasst-e2e-pcap-" });
        // passt drops to "nobody" before opening the file.
        if (kind === "passt") await Deno.chmod(pcapDir, 0o777);
        Object.assign(backend, { pcapPath: `${pcapDir}/guest.pcap` });
      }
      return await E2eSession.start(kind, {
        bulkBytes,
        phases,
        backend,
        guestMtu: options.guestMtu,
      });
    })().then((s) => (started = s));
    return session;
  };
  let closedSession: E2eSession | null = null;
  const closeSession = async () => {
    const current = session;
    session = null;
    closedSession = (await current?.catch(() => null)) ?? closedSession;
    if (current) await (await current.catch(() => null))?.close();
    started = null;
  };
  // If the closing test does not run (filtered, or the runner stops), QEMU and the
  // backend must not outlive the test process.
  let started: E2eSession | null = null;
  globalThis.addEventListener("unload", () => {
    started?.abort();
    if (pcapDir !== null) Deno.removeSync(pcapDir, { recursive: true });
  });
  const has = (phase: Phase) => phases.includes(phase);

  // `afterClose`: the test runs once the session is closed and must not start another.
  const define = (
    what: string,
    fn: (s: E2eSession) => Promise<void>,
    reason: string | null = null,
    afterClose = false,
  ) => {
    Deno.test({
      name: `e2e ${label}: ${what}${reason ? ` (ignored: ${reason})` : ""}`,
      ignore: reason !== null,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => afterClose ? fn(closedSession!) : fn(await getSession()),
    });
  };

  const queues = options.queues ?? 1;
  if (queues > 1) {
    define(`the guest's virtio-net turns on all ${queues} queue pairs`, async (s) => {
      assert.equal(await s.result("channels", BOOT_TIMEOUT_MS), `channels ${queues} of ${queues}`);
    });
  }

  define("the guest boots and gets a DHCP lease with the gateway as router", async (s) => {
    const ip = await s.result("dhcp-ip", BOOT_TIMEOUT_MS);
    assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
    assert.equal(await s.result("dhcp-router", PHASE_TIMEOUT_MS), s.backend.hostLoopback4);
    if (kind !== "slirp") {
      // passt semantics: the guest gets the host's own address.
      assert.equal(ip, (await hostOwnAddresses()).v4);
    }
    const dns4 = (s.backendOptions.dnsServers ?? []).filter((d) => !d.includes(":"));
    if (dns4.length > 0) {
      assert.equal(await s.result("dhcp-dns", PHASE_TIMEOUT_MS), dns4.join(" "));
    }
  });

  const layout = options.expectRingLayout;
  if (layout !== undefined) {
    define(`the rings run ${layout} (the daemon's SIGUSR1 stats name the layout)`, async (s) => {
      await s.result("dhcp-ip", BOOT_TIMEOUT_MS); // both rings run by now
      assert.ok(s.backend.pid !== null, "a tpasst daemon");
      const stated = /ringLayout[ =":]+(\w+)/;
      Deno.kill(s.backend.pid, "SIGUSR1");
      await s.guest.waitUntil(() => stated.test(s.backend.output()), "the stats lines", 30_000);
      assert.equal(s.backend.output().match(stated)![1], layout);
    });
  }

  if (has("slaac")) {
    define("the guest configures IPv6 by SLAAC from the router advertisement", async (s) => {
      const address = await s.result("slaac-addr", PHASE_TIMEOUT_MS);
      assert.match(address, /^[0-9a-f:]+\/64$/);
      assert.match(await s.result("ipv6-router", PHASE_TIMEOUT_MS), /^fe80:/);
    });
  }

  if (has("dhcpv6") && kind !== "slirp") {
    define(
      "DHCPv6 (solicit, advertise, request, reply) gives the host's IPv6 address and the DNS servers",
      async (s) => {
        const address = await s.result("dhcpv6-addr", PHASE_TIMEOUT_MS);
        assert.equal(address, (await hostOwnAddresses()).v6);
        const dns6 = (s.backendOptions.dnsServers ?? []).filter((d) => d.includes(":"));
        const reported = await s.result("dhcpv6-dns", PHASE_TIMEOUT_MS);
        if (dns6.length > 0) assert.equal(reported, dns6.join(" "));
      },
    );
  }

  const pingReason = kind === "passt" ? PASST_PING_REASON : pingGatewayUnavailable(kind);
  if (has("ping") || kind === "passt") {
    define("the guest pings its gateway (ICMP echo to the host's loopback)", async (s) => {
      assert.equal(await s.result("ping-gw", PHASE_TIMEOUT_MS), "ok");
    }, pingReason);
  }

  if (has("ping6") || kind === "passt") {
    define("the guest pings the IPv6 gateway (ICMPv6 echo to the host's ::1)", async (s) => {
      assert.equal(await s.result("ping6-gw", PHASE_TIMEOUT_MS), "ok");
    }, pingReason);
  }

  if ((kind === "tpasst-vhost" || kind === "tpasst-stream") && !options.phases) {
    define("the guest pings the host's own address through --map-guest-addr", async (s) => {
      assert.equal(await s.result("ping-host", PHASE_TIMEOUT_MS), "ok");
    }, pingReason);
  }

  if (has("http")) {
    define("the guest fetches a page from the host's loopback over IPv4", async (s) => {
      assert.equal(await s.result("http-get", PHASE_TIMEOUT_MS), HELLO_BODY.trim());
    });
  }

  if (has("http6")) {
    define("the guest fetches a page from the host's loopback over IPv6", async (s) => {
      assert.equal(await s.result("http6-get", PHASE_TIMEOUT_MS), HELLO_BODY.trim());
    });
  }

  if (has("dns")) {
    define("the guest resolves a name at the test's DNS responder on loopback", async (s) => {
      assert.equal(await s.result("dns-a", PHASE_TIMEOUT_MS), DNS_TEST_ADDRESS);
      assert.ok(s.dns.questions.some((q) => q.name === DNS_TEST_NAME && q.type === 1));
    });
  }

  if (has("udp-out")) {
    define("the guest sends UDP to the host and gets the answer", async (s) => {
      assert.equal(await s.result("udp-out", PHASE_TIMEOUT_MS), `echo:${GUEST_UDP_MESSAGE}`);
      assert.ok(s.udpEcho.received.includes(GUEST_UDP_MESSAGE));
    });
  }

  if (has("tcp-in")) {
    define("the host reaches a forwarded guest TCP port, data both ways", async (s) => {
      assert.equal(await s.tcpIn, GUEST_PAGE);
      assert.equal(await s.result("tcp-in", PHASE_TIMEOUT_MS), HOST_TCP_MESSAGE.trim());
    });
  }

  if (has("udp-in")) {
    define("the host reaches a forwarded guest UDP port and gets the echo", async (s) => {
      assert.equal(await s.udpIn, `echo:${HOST_UDP_MESSAGE}`);
      assert.equal(await s.result("udp-in", PHASE_TIMEOUT_MS), HOST_UDP_MESSAGE);
    });
  }

  // The TCP connection-end phases: registered whenever asked for, ignored with the reason
  // where the backend is known not to do it (the guest script then leaves the phase out).
  const wanted = (phase: Phase) => (options.phases ?? PHASES).includes(phase);
  const peers = (s: E2eSession) => {
    assert.ok(s.tcpEnds !== null, "the TCP connection-end peers were not started");
    return s.tcpEnds;
  };
  const settled = async <T>(s: E2eSession, results: T[], what: string): Promise<T> => {
    await s.guest.waitUntil(() => results.length > 0, what, 30_000);
    return results[0];
  };

  if (wanted("tcp-rst-out")) {
    define("a RST from the guest reaches the host peer as a RST", async (s) => {
      assert.equal(await s.result("tcp-rst-out", PHASE_TIMEOUT_MS), "sent-rst");
      const end = await settled(s, peers(s).endWatcher.results, "the host peer to see the end");
      assert.deepEqual(end, { received: "reset-me\n", end: "reset" });
    }, tcpEndUnsupported(kind, "tcp-rst-out"));
  }

  if (wanted("tcp-rst-in")) {
    define(
      "a RST from the host peer reaches the guest as a RST (ECONNRESET, not EOF)",
      async (s) => {
        assert.equal(await s.result("tcp-rst-in", PHASE_TIMEOUT_MS), "reset");
        assert.equal(await settled(s, peers(s).resetter.results, "the resetter"), "end-me\n");
      },
      tcpEndUnsupported(kind, "tcp-rst-in"),
    );
  }

  if (wanted("tcp-refused")) {
    define("a connection to a host port nobody listens on is refused (ECONNREFUSED)", async (s) => {
      assert.equal(await s.result("tcp-refused", PHASE_TIMEOUT_MS), "refused");
    }, tcpEndUnsupported(kind, "tcp-refused"));
  }

  if (wanted("tcp-half-close")) {
    define(
      "half-close works both ways (each side still reads after the other's FIN)",
      async (s) => {
        const guestFirst = await s.result("tcp-half-close-guest", PHASE_TIMEOUT_MS);
        assert.equal(guestFirst, `reply:${GUEST_HALF_CLOSE_MESSAGE}`);
        const atHost = await settled(s, peers(s).replyAfterEof.results, "the replying peer");
        assert.equal(atHost, GUEST_HALF_CLOSE_MESSAGE);
        const hostFirst = await s.result("tcp-half-close-host", PHASE_TIMEOUT_MS);
        assert.equal(hostFirst, HOST_HALF_CLOSE_MESSAGE);
        const answer = await settled(s, peers(s).halfCloser.results, "the half-closing peer");
        assert.equal(answer, `reply:${HOST_HALF_CLOSE_MESSAGE}`);
      },
      tcpEndUnsupported(kind, "tcp-half-close"),
    );
  }

  if (has("bulk-up")) {
    define(`${bulkText} from guest to host arrive intact (SHA-256)`, async (s) => {
      const guestSha = await s.result("bulk-up-sha256", PHASE_TIMEOUT_MS);
      await s.guest.waitUntil(
        () => s.sink.received.length > 0,
        "the sink to finish",
        30_000,
      );
      assert.deepEqual(s.sink.received[0], { bytes: s.bulkBytes, sha256: guestSha });
    });
  }

  if (has("bulk-down")) {
    define(`${bulkText} from host to guest arrive intact (SHA-256)`, async (s) => {
      const guestSha = await s.result("bulk-down-sha256", PHASE_TIMEOUT_MS);
      assert.equal(s.http.bulkSha256.length, 1);
      assert.equal(guestSha, s.http.bulkSha256[0]);
    });
  }

  if (has("iperf")) {
    define("iperf3 runs guest→host and host→guest against the host's server", async (s) => {
      for (const mark of ["iperf-up-mbps", "iperf-down-mbps"]) {
        const mbps = Number(await s.result(mark, PHASE_TIMEOUT_MS));
        assert.ok(mbps > 0, `${mark} is ${mbps}`);
      }
    });
  }

  if (options.expectLinkMtu !== undefined) {
    define(
      `the guest's link has MTU ${options.expectLinkMtu} and dropped no received frame`,
      async (s) => {
        assert.equal(await s.result("link-mtu", PHASE_TIMEOUT_MS), `${options.expectLinkMtu}`);
        assert.equal(
          await s.result("link-rx-drops", PHASE_TIMEOUT_MS),
          "0 0 0",
          "rx_errors rx_dropped rx_length_errors",
        );
        assert.equal(
          await s.result("tcp-in-errors", PHASE_TIMEOUT_MS),
          "0 0",
          "InErrs InCsumErrors",
        );
      },
    );
  }

  define("the scenario script finishes and the guest powers off", async (s) => {
    try {
      assert.equal(await s.guest.waitForDone(PHASE_TIMEOUT_MS), 0);
      const status = await s.guest.waitForExit(30_000);
      assert.equal(status.code, 0);
    } finally {
      await closeSession();
    }
  });

  /** The daemon's last output line holding `marker`, waited for up to 5 s (undefined if none). */
  const loggedLine = async (s: E2eSession, marker: string): Promise<string | undefined> => {
    // Complete lines only: the last piece may be a line the daemon is still writing.
    const find = () =>
      s.backend.output().split("\n").slice(0, -1).findLast((l) => l.includes(marker));
    for (let i = 0; i < 50 && find() === undefined; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return find();
  };

  const segmented = options.expectSegmented;
  if (segmented !== undefined) {
    define(
      `the link carried segmented TCP frames ${segmented.fromGuest ? "" : "not "}from the guest, ${
        segmented.toGuest ? "" : "not "
      }toward it (the daemon's link counters, -d)`,
      async (s) => {
        // The closing test stopped QEMU: the link went down and logged its counters (read
        // here rather than asked for while the guest runs: it may have powered off already).
        const line = await loggedLine(s, "vhost-user link: TX ");
        assert.ok(line !== undefined, "no link counters in the daemon's -d output");
        const count = (pattern: RegExp) => Number(pattern.exec(line)?.[1] ?? Number.NaN);
        const txSegmented = count(/TX \d+ frames \((\d+) segmented/);
        const rxSegmented = count(/RX \d+ frames \((\d+) segmented/);
        assert.ok(Number.isInteger(txSegmented) && Number.isInteger(rxSegmented), line);
        assert.equal(txSegmented > 0, segmented.fromGuest, `TX segmented: ${line}`);
        assert.equal(rxSegmented > 0, segmented.toGuest, `RX segmented: ${line}`);
      },
      null,
      true,
    );
  }

  if (queues > 1) {
    define(
      "frames went over more than one queue pair each way (the daemon's per-pair counters, -d)",
      async (s) => {
        // The closing test stopped QEMU: the link went down and logged its counters.
        const line = await loggedLine(s, "frames per queue pair");
        assert.ok(line !== undefined, "no per-pair counters in the daemon's -d output");
        const perPair = (direction: string) =>
          (new RegExp(`${direction} (\\d+(?:,\\d+)*)`).exec(line.split("frames per queue pair")[1])
            ?.[1] ?? "").split(",").map(Number);
        const rx = perPair("RX");
        const tx = perPair("TX");
        assert.equal(rx.length, queues, line);
        assert.ok(rx.filter((n) => n > 0).length > 1, `RX frames per pair ${rx}`);
        assert.ok(tx.filter((n) => n > 0).length > 1, `TX frames per pair ${tx}`);
        console.log(`frames per queue pair: RX ${rx.join(",")} TX ${tx.join(",")}`);
      },
      null,
      true,
    );
  }

  if (options.pcap) {
    define(
      "tshark decodes the pcap capture: DHCP, DHCPv6, router advertisement, nothing malformed",
      async () => {
        // The closing test stopped the backend: the file is complete.
        assert.ok(pcapDir !== null, "the session never started");
        const summary = await pcapSummary(`${pcapDir}/guest.pcap`);
        const seen = JSON.stringify(summary);
        const dhcp = new Set(summary.dhcpTypes);
        for (const [type, name] of DHCP_EXCHANGE) {
          assert.ok(dhcp.has(type), `no DHCP ${name} in ${seen}`);
        }
        assert.ok(summary.routerAdvertisements > 0, `no router advertisement in ${seen}`);
        if (has("dhcpv6")) {
          const dhcpv6 = new Set(summary.dhcpv6Types);
          for (const [type, name] of DHCPV6_EXCHANGE) {
            assert.ok(dhcpv6.has(type), `no DHCPv6 ${name} in ${seen}`);
          }
        }
        assert.deepEqual(summary.malformed, []);
      },
      null,
      true,
    );
  }
}
