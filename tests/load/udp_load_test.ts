/**
 * UDP load through the REAL daemon over vhost-user (the TypeScript front-end harness
 * with the scripted guest draining its RX ring): datagrams from the guest to a host
 * echo peer via the gateway and their echoes back, and datagrams from a host socket
 * to the guest through a `-u` forward (issue 16, item 5: half of them were lost).
 * Each datagram carries its index and a payload seeded by it: a corrupt one fails the
 * test, losses are counted and must stay under 2 % at a rate the guest can take.
 *
 * Environment: TPASST_LOAD_DATAGRAMS=N datagrams each way (default 20000),
 * TPASST_LOAD_UDP_RATE=N datagrams per second (default 10000).
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../../src/net/tcp_test_plan.ts";
import type { TestGuest } from "../../src/net/tcp_test_guest.ts";
import { withDaemon } from "../net/daemon_run.ts";
import { freeUdpPort, patternBytes, UdpPeer } from "../net/host_peers.ts";
import { mib, openFds, PeakSampler, printFigures, residentKiB, timeUntil } from "./load_support.ts";

/** Datagrams sent each way. */
const DATAGRAMS = Number(Deno.env.get("TPASST_LOAD_DATAGRAMS") ?? "20000");
/** Datagrams sent per second (a rate the scripted guest drains). */
const RATE = Number(Deno.env.get("TPASST_LOAD_UDP_RATE") ?? "10000");
/** Datagrams sent per timer tick. */
const PER_TICK = 50;
/** Smallest share of the datagrams that must arrive each way (issue 16: passt 98 %). */
const MIN_DELIVERY = 0.98;
/** Guest port the -u rule forwards to. */
const GUEST_UDP_PORT = 7000;
/** Bytes of the index at the start of each datagram. */
const INDEX_BYTES = 4;
/** Time the last datagrams get to arrive. */
const DRAIN_MS = 3_000;

/** Datagram `i` of stream `seed`: its index (u32 BE), then seeded bytes of a size that varies. */
function datagram(i: number, seed: number): Uint8Array {
  const body = patternBytes(32 + (i * 37) % 1400, seed * 1_000_003 + i);
  const d = new Uint8Array(INDEX_BYTES + body.length);
  new DataView(d.buffer).setUint32(0, i);
  d.set(body, INDEX_BYTES);
  return d;
}

/** Counts distinct intact datagrams of stream `seed`; anything else is corrupt. */
class Tally {
  readonly #seen = new Uint8Array(DATAGRAMS);
  delivered = 0;
  duplicates = 0;
  corrupt = 0;

  constructor(readonly seed: number) {}

  add(data: Uint8Array): void {
    if (data.length < INDEX_BYTES) {
      this.corrupt++;
      return;
    }
    const i = new DataView(data.buffer, data.byteOffset).getUint32(0);
    const want = i < DATAGRAMS ? datagram(i, this.seed) : null;
    if (want === null || want.length !== data.length || !want.every((b, k) => data[k] === b)) {
      this.corrupt++;
      return;
    }
    if (this.#seen[i]) this.duplicates++;
    else {
      this.#seen[i] = 1;
      this.delivered++;
    }
  }
}

/** Calls `send(i)` for i = 0..DATAGRAMS-1 at {@link RATE} per second. */
async function paced(send: (i: number) => void): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < DATAGRAMS;) {
    const due = Math.min(
      DATAGRAMS,
      Math.floor(((performance.now() - t0) / 1000) * RATE) + PER_TICK,
    );
    for (; i < due; i++) send(i);
    await new Promise((r) => setTimeout(r, (PER_TICK / RATE) * 1000));
  }
  return performance.now() - t0;
}

/** The datagrams `g` received on `port` since `from`, fed to `tally`; returns the new `from`. */
function takeGuestDatagrams(g: TestGuest, port: number, tally: Tally, from: number): number {
  const list = g.datagrams;
  for (let k = from; k < list.length; k++) if (list[k].toPort === port) tally.add(list[k].data);
  return list.length;
}

Deno.test({
  name: `load: ${DATAGRAMS} UDP datagrams from the guest to a host echo peer and back`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const peer = await UdpPeer.open("127.0.0.1", true);
    try {
      await withDaemon("vhost-user", [], async (d) => {
        const g = d.guest4;
        const pid = d.process.pid;
        const guestPort = await freeUdpPort();
        const idleRss = residentKiB(pid);
        const peaks = new PeakSampler(pid);
        const toHost = new Tally(1);
        const echoed = new Tally(1);
        let seenHost = 0;
        let seenGuest = 0;
        const sendMs = await paced((i) => {
          g.sendUdp(guestPort, TEST_GATEWAY4, peer.port, datagram(i, 1));
          if (i % 1000 === 0) {
            for (; seenHost < peer.received.length; seenHost++) {
              toHost.add(peer.received[seenHost].data);
            }
            seenGuest = takeGuestDatagrams(g, guestPort, echoed, seenGuest);
          }
        });
        await timeUntil(() => g.datagrams.length >= DATAGRAMS, DRAIN_MS);
        for (; seenHost < peer.received.length; seenHost++) {
          toHost.add(peer.received[seenHost].data);
        }
        takeGuestDatagrams(g, guestPort, echoed, seenGuest);
        peaks.stop();
        printFigures("udp-guest-to-host-and-back", {
          sent: DATAGRAMS,
          ratePerS: RATE,
          sendMs: Math.round(sendMs),
          hostReceived: toHost.delivered,
          hostCorrupt: toHost.corrupt,
          guestReceivedEchoes: echoed.delivered,
          guestCorrupt: echoed.corrupt,
          deliveredToHostPct: (100 * toHost.delivered) / DATAGRAMS,
          echoesDeliveredPct: (100 * echoed.delivered) / Math.max(1, toHost.delivered),
          fdsPeak: peaks.peakFds,
          fdsAfter: openFds(pid),
          rssIdleMiB: mib(idleRss),
          rssPeakMiB: mib(peaks.peakRssKiB),
          rssAfterMiB: mib(residentKiB(pid)),
        });
        assert.equal(toHost.corrupt, 0, "corrupt datagrams at the host");
        assert.equal(echoed.corrupt, 0, "corrupt datagrams at the guest");
        assert.ok(
          toHost.delivered >= DATAGRAMS * MIN_DELIVERY,
          `guest → host: ${toHost.delivered} of ${DATAGRAMS}`,
        );
        assert.ok(
          echoed.delivered >= toHost.delivered * MIN_DELIVERY,
          `host → guest (echoes): ${echoed.delivered} of ${toHost.delivered}`,
        );
      });
    } finally {
      await peer.close();
    }
  },
});

Deno.test({
  name: `load: ${DATAGRAMS} UDP datagrams from a host socket to the guest through -u`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = await freeUdpPort();
    const sender = await UdpPeer.open("127.0.0.1", false);
    try {
      await withDaemon("vhost-user", ["-u", `127.0.0.1/${port}:${GUEST_UDP_PORT}`], async (d) => {
        const g = d.guest4;
        const pid = d.process.pid;
        const idleRss = residentKiB(pid);
        const peaks = new PeakSampler(pid);
        const tally = new Tally(2);
        let seen = 0;
        const sendMs = await paced((i) => {
          sender.send(datagram(i, 2), port, "127.0.0.1");
          if (i % 1000 === 0) seen = takeGuestDatagrams(g, GUEST_UDP_PORT, tally, seen);
        });
        await timeUntil(() => g.datagrams.length >= DATAGRAMS, DRAIN_MS);
        takeGuestDatagrams(g, GUEST_UDP_PORT, tally, seen);
        peaks.stop();
        printFigures("udp-host-to-guest-forward", {
          sent: DATAGRAMS,
          ratePerS: RATE,
          sendMs: Math.round(sendMs),
          guestReceived: tally.delivered,
          guestCorrupt: tally.corrupt,
          duplicates: tally.duplicates,
          deliveredPct: (100 * tally.delivered) / DATAGRAMS,
          fdsPeak: peaks.peakFds,
          rssIdleMiB: mib(idleRss),
          rssPeakMiB: mib(peaks.peakRssKiB),
          rssAfterMiB: mib(residentKiB(pid)),
        });
        assert.equal(tally.corrupt, 0, "corrupt datagrams at the guest");
        assert.ok(
          tally.delivered >= DATAGRAMS * MIN_DELIVERY,
          `host → guest: ${tally.delivered} of ${DATAGRAMS}`,
        );
      });
    } finally {
      await sender.close();
    }
  },
});
