import assert from "node:assert/strict";
import { connectThroughGateway, wiredTranslator } from "../../../tests/support/net/tcp_host.ts";
import { TestGuest } from "../../../tests/support/net/tcp_guest.ts";
import { TEST_GATEWAY4 } from "../../../tests/support/net/tcp_plan.ts";
import { decodeFrame } from "../../../tests/support/net/frames.ts";
import { newTcpHeader, parseTcp, TCP_ACK_FLAG, TCP_RST } from "../wire/tcp_header.ts";
import { SendResult } from "../../tap/frame_transport.ts";
import { CHALLENGE_ACK_INTERVAL_MS, CHALLENGE_ACKS_PER_FLOW } from "./challenge_ack.ts";

/** Most RSTs the scripted guest sends in one test (bounds the storm the old code ran). */
const MAX_ANSWERS = 20_000;

/** A segment toward the forgotten connection, as the guest saw it. */
interface Seen {
  at: number;
  flags: number;
  seq: number;
  ack: number;
  payload: number;
}

/**
 * A guest that lost one connection (rebooted): it answers every segment toward that
 * guest port with a RST whose sequence number `rstSeq` picks from the segment's
 * ACK number (RFC 9293 §3.10.7.1 says exactly SEG.ACK), and never a RST with a RST.
 */
class RebootedGuest extends TestGuest {
  lostPort = -1;
  remotePort = 0;
  rstSeq: (ack: number) => number = (ack) => ack;
  readonly seen: Seen[] = [];
  answers = 0;
  readonly #h = newTcpHeader();

  override sendFrame(frame: Uint8Array, checksumStart = 0, checksumOffset = 0): SendResult {
    const r = super.sendFrame(frame, checksumStart, checksumOffset);
    if (this.lostPort < 0 || r !== SendResult.Sent) return r;
    const l4 = decodeFrame(frame).l4;
    const h = this.#h;
    if (parseTcp(l4, 0, l4.length, h) !== "ok" || h.dstPort !== this.lostPort) return r;
    this.seen.push({
      at: performance.now(),
      flags: h.flags,
      seq: h.seq,
      ack: h.ack,
      payload: h.payloadLength,
    });
    if ((h.flags & TCP_RST) || this.answers >= MAX_ANSWERS) return r;
    this.answers++;
    const seq = this.rstSeq(h.ack);
    queueMicrotask(() =>
      this.rawTcp(this.lostPort, TEST_GATEWAY4, null, {
        srcPort: 0,
        dstPort: this.remotePort,
        seq,
        ack: 0,
        flags: TCP_RST,
        window: 0,
      })
    );
    return r;
  }
}

/** A translator and a rebooting guest with one connection to a host peer, the guest's FIN passed on. */
async function connectedThenForgotten() {
  const { tcp, guest, close: closeTranslator } = wiredTranslator({}, 4, RebootedGuest);
  const { server, port, c, host } = await connectThroughGateway(guest);
  // The guest is done sending (its FIN reaches the host peer), the host peer is not.
  guest.close(c);
  assert.equal(await host.read(new Uint8Array(16)), null, "the guest's FIN reached the host");
  await c.until(() => c.finAcked, 5000, "the guest's FIN acknowledged");
  // The guest reboots and forgets the connection.
  c.state = "closed";
  guest.lostPort = c.localPort;
  guest.remotePort = port;
  const close = () => {
    closeTranslator();
    try {
      host.close();
    } catch { /* reset */ }
    server.close();
  };
  return { tcp, guest, host, close };
}

/**
 * Bare ACKs (no data, no RST: what a challenge ACK looks like) among `seen` within the
 * interval starting at `from`.
 */
function acksWithin(seen: readonly Seen[], from: number): number {
  return seen.filter((s) =>
    !(s.flags & TCP_RST) && (s.flags & TCP_ACK_FLAG) && s.payload === 0 && s.at >= from &&
    s.at < from + CHALLENGE_ACK_INTERVAL_MS
  ).length;
}

Deno.test("`TcpTranslator` is reset by a guest that lost the flow after its FIN (RST at SEG.ACK, RFC 9293 §3.10.7.1), without a RST/ACK storm", async () => {
  const { tcp, guest, host, close } = await connectedThenForgotten();
  try {
    const start = performance.now();
    // The host peer sends: the segment reaches the rebooted guest, which resets.
    await host.write(new TextEncoder().encode("are you there?"));
    const deadline = start + CHALLENGE_ACK_INTERVAL_MS;
    while (tcp.flows.size > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    console.log(
      `RSTs from the guest: ${guest.answers}, ACKs toward it in the first second: ` +
        `${acksWithin(guest.seen, start)}, flows left: ${tcp.flows.size}`,
    );
    assert.equal(tcp.flows.size, 0, "the flow is freed");
    assert.ok(guest.answers <= 2, `the exchange ends (${guest.answers} RSTs from the guest)`);
    // The host peer's connection is reset with the flow.
    await assert.rejects(async () => {
      for (let i = 0; i < 100; i++) {
        await host.write(new Uint8Array(1024));
        await new Promise((r) => setTimeout(r, 10));
      }
    });
  } finally {
    close();
  }
});

Deno.test("`TcpTranslator` rate-limits challenge ACKs to a guest that answers each with an in-window RST (RFC 5961 §7)", async () => {
  const { tcp, guest, host, close } = await connectedThenForgotten();
  try {
    // Inside the window but never at RCV.NXT: each RST draws a challenge ACK (§3.2).
    guest.rstSeq = (ack) => (ack + 1) >>> 0;
    const start = performance.now();
    await host.write(new TextEncoder().encode("are you there?"));
    await new Promise((r) => setTimeout(r, 1.5 * CHALLENGE_ACK_INTERVAL_MS));
    const acks = acksWithin(guest.seen, start);
    console.log(
      `RSTs from the guest: ${guest.answers}, ACKs toward it in the first second: ${acks}`,
    );
    assert.ok(
      acks <= CHALLENGE_ACKS_PER_FLOW,
      `${acks} ACKs in ${CHALLENGE_ACK_INTERVAL_MS} ms (limit ${CHALLENGE_ACKS_PER_FLOW})`,
    );
    assert.ok(guest.answers < MAX_ANSWERS, "the exchange stopped by itself");
    assert.ok(tcp.counters.challengeAcksLimited > 0, "the RSTs over the limit went unanswered");
  } finally {
    close();
  }
});
