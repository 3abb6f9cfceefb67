/**
 * `E2eSession.start()` tries again when a port it picked is taken before it is bound:
 * here the iperf server takes the port picked for slirp's TCP forward, QEMU exits with
 * "Could not set up host forwarding rule", and the second try starts on new ports.
 *
 * @module
 */
import assert from "node:assert/strict";
import { freePort, PICK_END, PICK_FIRST } from "./host_services.ts";
import { E2eSession } from "./scenario.ts";

Deno.test({
  name: "e2e session start: a forward port taken before QEMU starts is picked again",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const clashing = freePort();
    const other = freePort();
    // Math.random's values that make freePort() pick these ports
    const pick = (port: number) => (port - PICK_FIRST + 0.5) / (PICK_END - PICK_FIRST);
    // the TCP forward, the UDP forward, then the iperf server: the same port twice
    const scripted = [pick(clashing), pick(other), pick(clashing)];
    const random = Math.random;
    Math.random = () => scripted.shift() ?? random();
    const errors: string[] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => errors.push(args.join(" "));
    let session: E2eSession | null = null;
    try {
      session = await E2eSession.start("slirp", { phases: ["dhcp", "iperf"] });
    } finally {
      Math.random = random;
      console.error = consoleError;
    }
    try {
      assert.equal(scripted.length, 0, "the picks went elsewhere than the test planned");
      assert.equal(errors.length, 1, errors.join("\n"));
      assert.match(errors[0], /start attempt 1 failed.*Could not set up host forwarding/s);
      const tcpForward = session.forwards.find((f) => f.protocol === "tcp")!;
      assert.notEqual(tcpForward.hostPort, clashing);
      assert.match(await session.result("dhcp-ip", 180_000), /^\d+\.\d+\.\d+\.\d+$/);
    } finally {
      await session.close();
    }
  },
});
