import { assertEquals, assertThrows, assertTrue } from "../../tests/support/assert.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import { closeFd, createPipe } from "../../ffi/process.ts";
import { EventLoop } from "../loop/event_loop.ts";
import { Logger } from "../log/logger.ts";
import { defaultRepairPath, RepairHelperServer } from "./repair_helper.ts";
import { TcpRepairMode } from "../../ffi/tcp_repair.ts";

const quiet = new Logger();
quiet.setLevel("error");

/** Runs `fn` with a RepairHelperServer and a connected fake passt-repair on a running loop. */
async function withHelper(
  fn: (server: RepairHelperServer, helper: UnixStream, loop: EventLoop) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tprepair" });
  const loop = new EventLoop();
  const running = loop.run();
  const server = new RepairHelperServer(`${dir}/s.repair`, loop, quiet);
  const helper = UnixStream.connect(`${dir}/s.repair`);
  try {
    await fn(server, helper, loop);
  } finally {
    helper.close();
    server.close();
    loop.stop();
    await running;
    loop.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Reads one command on the helper's side: the signed byte and the fds that came with it. */
function readCommand(helper: UnixStream): { command: number; fds: number[] } {
  const byte = new Uint8Array(1);
  const got = helper.recvWithFds(byte, 253);
  for (const fd of got.fds) closeFd(fd);
  return { command: (byte[0] << 24) >> 24, fds: got.fds };
}

Deno.test("defaultRepairPath() appends .repair as passt does", () => {
  assertEquals(defaultRepairPath("/run/tpasst.sock"), "/run/tpasst.sock.repair");
});

Deno.test("RepairHelperServer.set() sends one signed byte with the sockets and waits for the echo", async () => {
  await withHelper((server, helper) => {
    const [a, b] = createPipe();
    try {
      // set() waits on this thread, so the fake helper's echo is queued beforehand
      helper.send(new Uint8Array([TcpRepairMode.OFF_NO_WINDOW_PROBE & 0xff]));
      server.set([a, b], TcpRepairMode.OFF_NO_WINDOW_PROBE);
      const served = readCommand(helper);
      assertEquals(served.command, -1);
      assertEquals(served.fds.length, 2);
      assertTrue(server.connected);
    } finally {
      closeFd(a);
      closeFd(b);
    }
  });
});

Deno.test("RepairHelperServer.set() fails and drops a helper that answers wrong or goes away", async () => {
  await withHelper((server, helper) => {
    const [a, b] = createPipe();
    try {
      helper.send(new Uint8Array([7]));
      assertThrows(() => server.set([a], TcpRepairMode.ON), /unexpected reply 7 to command 1/);
      assertTrue(!server.connected);
      // with no helper left, it tries directly: pipes are no TCP sockets
      assertThrows(() => server.set([b], TcpRepairMode.ON));
    } finally {
      closeFd(a);
      closeFd(b);
    }
  });
});
