import assert from "node:assert/strict";
import { buildGuestScript, DNS_TEST_NAME, PHASES } from "./scenario.ts";

const PORTS = {
  http: 41000,
  dns: 41001,
  udpEcho: 41002,
  sink: 41003,
  iperf: 41004,
  hostLoopback6: "fd00::1",
  mapGuestAddr4: "198.51.100.1",
};

/** Runs busybox's shell parser (-n: no execution) over `script`. */
async function shellSyntaxErrors(script: string): Promise<string> {
  const child = new Deno.Command("busybox", {
    args: ["sh", "-n"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const output = await child.output();
  return output.success ? "" : new TextDecoder().decode(output.stderr) || "syntax error";
}

Deno.test("`buildGuestScript()` with every phase is valid busybox sh", async () => {
  const script = buildGuestScript(PHASES, PORTS, 1024, 1);
  assert.equal(await shellSyntaxErrors(script), "");
  for (const port of [41000, 41001, 41002, 41003, 41004]) assert.ok(script.includes(`${port}`));
});

Deno.test("`buildGuestScript()` leaves out phases that were not asked for", async () => {
  const script = buildGuestScript(["dhcp", "http"], PORTS, 1024, 1);
  assert.equal(await shellSyntaxErrors(script), "");
  assert.ok(script.includes("udhcpc"));
  assert.ok(script.includes("/hello"));
  assert.ok(!script.includes("iperf3"));
  assert.ok(!script.includes("nslookup"));
});

Deno.test("`buildGuestScript()` only names the test's DNS name and always gives the server", () => {
  const script = buildGuestScript(PHASES, PORTS, 1024, 1);
  const lookups = script.split("\n").filter((line) => line.includes("nslookup"));
  assert.equal(lookups.length, 1);
  assert.ok(lookups[0].includes(`${DNS_TEST_NAME} "$gw:41001"`));
  // Every wget/iperf3/probe target is the gateway or the host's mapped IPv6 address.
  assert.doesNotMatch(script, /https?:\/\/(?!\$gw|\[fd00::1\])/);
});

Deno.test("`buildGuestScript()` skips IPv6 HTTP without a mapped host address", () => {
  const script = buildGuestScript(PHASES, { ...PORTS, hostLoopback6: null }, 1024, 1);
  assert.ok(!script.includes("http6"));
});

Deno.test("`buildGuestScript()` runs the DHCPv6 client and pings gateway, IPv6 gateway and mapped host", () => {
  const script = buildGuestScript(PHASES, PORTS, 1024, 1);
  assert.ok(script.includes("probe dhcpv6 eth0"));
  assert.ok(script.includes('ping -c 2 -W 3 "$gw"'));
  assert.ok(script.includes("ping -c 2 -W 3 fd00::1"));
  assert.ok(script.includes("ping -c 2 -W 3 198.51.100.1"));
});

Deno.test("`buildGuestScript()` pings no mapped host address when the backend has none", () => {
  const script = buildGuestScript(PHASES, { ...PORTS, mapGuestAddr4: null }, 1024, 1);
  assert.ok(!script.includes("198.51.100.1"));
  assert.ok(!script.includes("ping-host"));
});

Deno.test("`buildGuestScript()` runs the TCP connection-end probes against the gateway only", async () => {
  const tcpEnds = {
    endWatcher: 41010,
    resetter: 41011,
    replyAfterEof: 41012,
    halfCloser: 41013,
    closed: 41014,
  };
  const script = buildGuestScript(PHASES, { ...PORTS, tcpEnds }, 1024, 1);
  assert.equal(await shellSyntaxErrors(script), "");
  assert.ok(script.includes('tcp_probe tcp-reset "$gw" 41010'));
  assert.ok(script.includes('tcp_probe tcp-wait-end "$gw" 41011'));
  assert.ok(script.includes('tcp_probe tcp-half-close "$gw" 41012'));
  assert.ok(script.includes('tcp_probe tcp-reply-after-eof "$gw" 41013'));
  assert.ok(script.includes('tcp_probe tcp-connect "$gw" 41014'));
  const probes = script.split("\n").filter((line) => line.includes("tcp_probe tcp-"));
  assert.equal(probes.length, 5);
  for (const line of probes) assert.match(line, /tcp_probe tcp-[a-z-]+ "\$gw" \d+/);
});

Deno.test("`buildGuestScript()` leaves out the TCP connection-end phases without their peers", () => {
  const script = buildGuestScript(PHASES, PORTS, 1024, 1);
  assert.ok(!script.includes("tcp_probe"));
  const some = buildGuestScript(
    ["dhcp", "tcp-refused"],
    {
      ...PORTS,
      tcpEnds: { endWatcher: 1, resetter: 2, replyAfterEof: 3, halfCloser: 4, closed: 41014 },
    },
    1024,
    1,
  );
  assert.ok(some.includes("tcp_probe tcp-connect"));
  assert.ok(!some.includes("tcp_probe tcp-reset"));
});
