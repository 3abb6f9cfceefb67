import { assertEquals } from "../../../tests/support/assert.ts";
import { flowKeyEnds, formatEndpoint } from "./flow_info.ts";
import { initFlowKey, newFlowKey } from "./flow_table.ts";
import { TcpFlow, TcpState } from "../tcp/flow.ts";
import { tcpStateName } from "../tcp/translator.ts";
import { parseIpv4, parseIpv6 } from "../../../ffi/ip_address_text.ts";

Deno.test("flowKeyEnds() shows IPv4 ends as address:port", () => {
  const key = newFlowKey();
  initFlowKey(key, 4, parseIpv4("10.0.2.15")!, null, 40000, parseIpv4("93.184.216.34")!, null, 443);
  assertEquals(flowKeyEnds(key), { guest: "10.0.2.15:40000", remote: "93.184.216.34:443" });
});

Deno.test("flowKeyEnds() shows IPv6 ends in brackets", () => {
  const key = newFlowKey();
  initFlowKey(key, 6, 0, parseIpv6("fd00::15")!, 5353, 0, parseIpv6("2001:db8::1")!, 53);
  assertEquals(flowKeyEnds(key), { guest: "[fd00::15]:5353", remote: "[2001:db8::1]:53" });
});

Deno.test("formatEndpoint() brackets only IPv6 addresses", () => {
  assertEquals(formatEndpoint("localhost", 80), "localhost:80");
  assertEquals(formatEndpoint("::1", 80), "[::1]:80");
});

Deno.test("tcpStateName() names each state and the directions that ended", () => {
  const f = new TcpFlow();
  const names: string[] = [];
  for (
    const state of [
      TcpState.Connecting,
      TcpState.SynAckSent,
      TcpState.SynSent,
      TcpState.Established,
      TcpState.Closed,
    ]
  ) {
    f.state = state;
    names.push(tcpStateName(f));
  }
  assertEquals(names, ["connecting", "syn-ack-sent", "syn-sent", "established", "closed"]);
  f.state = TcpState.Established;
  f.guestFin = true;
  assertEquals(tcpStateName(f), "established (guest-fin)");
  f.finSent = true;
  assertEquals(tcpStateName(f), "established (guest-fin, host-fin)");
});
