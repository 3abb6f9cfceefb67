import { assertEquals, assertMatch, assertTrue } from "../../tests/support/assert.ts";
import { createPipe } from "../../ffi/process.ts";
import { PIPE_WOULD_BLOCK, PipeEnd } from "../../ffi/pipe_end.ts";
import { EventLoop } from "../loop/event_loop.ts";
import { GuestSender } from "../net/guest_sender.ts";
import { decodeMigrationState, encodeMigrationState } from "../net/migration_state.ts";
import { directRepair } from "../net/tcp/repair.ts";
import { MigrationController } from "./migration.ts";
import { recordingLogger } from "../../tests/support/recording_logger.ts";

const OUR_MAC = 0x9a559a559a55;

function setup(maxStateBytes?: number) {
  const { logger: log, lines } = recordingLogger();
  const loop = new EventLoop();
  const running = loop.run();
  const sender = new GuestSender(OUR_MAC, log);
  const controller = new MigrationController({
    sender,
    tcp: null,
    loop,
    repair: directRepair,
    noLinger: false,
    log,
    maxStateBytes,
  });
  const stop = async () => {
    loop.stop();
    await running;
    loop.close();
  };
  return { controller, sender, loop, lines, stop };
}

const turn = () => new Promise((resolve) => setTimeout(resolve, 5));

/** Writes `bytes` into the nonblocking pipe end, waiting on the loop while it is full. */
async function writeAll(pipe: PipeEnd, bytes: Uint8Array): Promise<void> {
  let at = 0;
  for (let i = 0; at < bytes.length && i < 2000; i++) {
    const n = pipe.write(bytes.subarray(at));
    if (n === PIPE_WOULD_BLOCK) await turn();
    else at += n;
  }
}

Deno.test("MigrationController saves what the stack saw of the guest, and loads it", async () => {
  const source = setup();
  const target = setup();
  try {
    source.sender.guestMac = 0x525400123456;
    source.sender.guestIpv4Seen = 0x0a00020f;
    const [readEnd, writeEnd] = createPipe();
    source.controller.begin("save", writeEnd, 0);
    const reader = PipeEnd.adopt(readEnd);
    const chunks: number[] = [];
    const buf = new Uint8Array(4096);
    for (let i = 0; i < 200; i++) {
      const n = reader.read(buf);
      if (n === 0) break;
      if (n === PIPE_WOULD_BLOCK) await turn();
      else chunks.push(...buf.subarray(0, n));
    }
    reader.close();
    const bytes = new Uint8Array(chunks);
    assertEquals(source.controller.check(0), null);
    assertEquals(decodeMigrationState(bytes).guest.mac, 0x525400123456);

    const [loadRead, loadWrite] = createPipe();
    target.controller.begin("load", loadRead, 0);
    const writer = PipeEnd.adopt(loadWrite);
    await writeAll(writer, bytes);
    writer.close();
    assertEquals(target.controller.check(0), null);
    assertEquals(target.sender.guestMac, 0x525400123456);
    assertEquals(target.sender.guestIpv4Seen, 0x0a00020f);
  } finally {
    await source.stop();
    await target.stop();
  }
});

Deno.test("MigrationController fails a load beyond its size limit, and stops reading", async () => {
  const t = setup(1000);
  try {
    const [readEnd, writeEnd] = createPipe();
    t.controller.begin("load", readEnd, 0);
    const writer = PipeEnd.adopt(writeEnd);
    // a valid state padded far beyond the limit: the reader must give up, not buffer it
    const big = new Uint8Array(200_000);
    big.set(
      encodeMigrationState({
        guest: { mac: null, ipv4: 0, ipv6: null, ipv6LinkLocal: null },
        tcp: [],
      }),
    );
    let broken = false;
    try {
      await writeAll(writer, big);
    } catch {
      broken = true; // EPIPE: the daemon closed its end
    }
    writer.close();
    assertTrue(broken, "the writer should find the pipe closed");
    assertMatch(t.controller.check(0) ?? "", /exceeds the limit of 1000 bytes/);
  } finally {
    await t.stop();
  }
});

Deno.test("MigrationController fails a check while the front-end's end is still open", async () => {
  const t = setup();
  try {
    const [readEnd, writeEnd] = createPipe();
    t.controller.begin("load", readEnd, 0);
    const writer = PipeEnd.adopt(writeEnd);
    await writeAll(writer, new Uint8Array([0x74, 0x70]));
    await turn();
    assertMatch(t.controller.check(0) ?? "", /did not end/);
    writer.close();
    assertMatch(t.controller.status, /load failed/);
  } finally {
    await t.stop();
  }
});

Deno.test("MigrationController fails CHECK_DEVICE_STATE before any transfer", async () => {
  const t = setup();
  try {
    assertMatch(t.controller.check(0) ?? "", /no device state transfer/);
  } finally {
    await t.stop();
  }
});
