import assert from "node:assert/strict";
import { connectThroughGateway, wiredTranslator } from "../../../tests/support/net/tcp_host.ts";
import { RTO_INITIAL_MS } from "./flow.ts";

Deno.test("`TcpTranslator` takes an ACK of its FIN that arrives after a timeout took the FIN back", async () => {
  const { tcp, guest, close } = wiredTranslator();
  const { server, c, host } = await connectThroughGateway(guest);
  try {
    // The guest takes the host's data and FIN, but its ACKs are lost on the way.
    guest.loseFromGuestOneIn = 1;
    await host.write(new TextEncoder().encode("0123456789"));
    host.closeWrite();
    await c.until(() => c.eof, 5000, "the host's FIN");
    // The RX ring fills: the retransmission timeout goes back to the first unacknowledged
    // byte and cannot send again.
    guest.noRoom = true;
    await new Promise((r) => setTimeout(r, 3 * RTO_INITIAL_MS));
    // The guest's ACK of the FIN gets through, then the ring has room again.
    guest.loseFromGuestOneIn = 0;
    guest.sendAck(c);
    guest.makeRoom();
    // The guest closes too: both FINs are acknowledged, the flow ends.
    guest.close(c);
    await c.until(() => c.finAcked, 5000, "the guest's FIN acknowledged");
    const deadline = performance.now() + 5000;
    while (tcp.flows.size > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(tcp.flows.size, 0, `the flow stayed: ${JSON.stringify(tcp.describeFlows(0))}`);
    assert.equal(c.totalReceived, 10, "the data once, nothing past the FIN");
    host.close();
  } finally {
    server.close();
    close();
  }
});
