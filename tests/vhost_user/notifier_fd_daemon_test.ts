/**
 * The real daemon (bin/tpasst --vhost-user) against kick, call and err descriptors
 * that are not eventfds in normal mode: a semaphore-mode eventfd as kick fd (a
 * level-triggered watch on it never empties: a core spins), a pipe's read end as call
 * fd (every signal fails), a socket as err fd. Each is refused with a log line naming
 * the request, the ring and what the fd is; afterwards the daemon holds no mapping of
 * the front-end's memory and no extra fd, and the next front-end works.
 *
 * Skipped (with the reason in its name) when deno.json's daemon permission set lacks
 * `"ffi": true`, without which the daemon cannot map guest memory.
 */
import assert from "node:assert/strict";
import { EventFd } from "../../ffi/event_fd.ts";
import { closeFd, createPipe } from "../../ffi/process.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import { ARP_LENGTH, ARP_OP_REQUEST, buildArp } from "../../src/net/services/arp.ts";
import { buildEthernet, ETHERTYPE_ARP } from "../../src/net/wire/ethernet.ts";
import { TEST_GUEST_MAC } from "../support/net/frames.ts";
import { featureBit, Request, VIRTIO_F_EVENT_IDX } from "../../src/vhost_user/protocol.ts";
import {
  exists,
  ForegroundTpasst,
  processFdCount,
  settledFdCount,
  waitFor,
} from "../cli/cli_helpers.ts";
import {
  QEMU_NET_FEATURES,
  RX,
  TX,
  VhostUserFrontend,
} from "../support/frontend/vhost_user_frontend.ts";
import { u64Payload } from "../../src/vhost_user/payload_codec.ts";

/** See tests/vhost_user/daemon_test.ts: mapping guest memory needs full --allow-ffi. */
const daemonMayMapMemory = (() => {
  try {
    const config = JSON.parse(
      Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)),
    );
    return config.permissions?.daemon?.ffi === true;
  } catch {
    return false;
  }
})();

const SKIP_REASON = daemonMayMapMemory
  ? ""
  : ' (skipped: deno.json\'s daemon permission set lacks "ffi": true, needed to map guest memory)';

/** Name of the harness's memfds as they appear in /proc/PID/maps ("/memfd:NAME (deleted)"). */
const HARNESS_MEMFD = "memfd:tpasst-harness-ram";
/** Clock ticks per second of /proc/PID/stat times (sysconf(_SC_CLK_TCK), 100 on Linux/x86-64). */
const CLOCK_TICKS_PER_SECOND = 100;
/** Fields of /proc/PID/stat after the ")" closing the command name: utime is 14th, stime 15th (proc(5)). */
const STAT_UTIME_AFTER_COMM = 11;
const STAT_STIME_AFTER_COMM = 12;
/** How long the daemon's CPU time is watched while it should be idle. */
const IDLE_WINDOW_MS = 2000;
/** Largest share of one core an idle daemon may use in that window. */
const IDLE_CPU_LIMIT = 0.1;

/** Lines of /proc/PID/maps that map one of the harness's memfds. */
function harnessMappings(pid: number): string[] {
  return Deno.readTextFileSync(`/proc/${pid}/maps`).split("\n").filter((line) =>
    line.includes(HARNESS_MEMFD)
  );
}

/** User plus system CPU time of `pid`, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[STAT_UTIME_AFTER_COMM]) + Number(fields[STAT_STIME_AFTER_COMM])) /
    CLOCK_TICKS_PER_SECOND;
}

/** The daemon serves one front-end at a time: wait until it has let go of the last one. */
async function frontendGone(daemon: ForegroundTpasst, count: number): Promise<void> {
  await waitFor(
    `the daemon to release front-end #${count}`,
    () =>
      (daemon.stderr.match(/Frontend gone; waiting for the next connection/g) ?? []).length >=
        count,
  );
}

/** An ARP request from the guest: the stack answers it into the RX ring. */
function arpRequest(): Uint8Array {
  const frame = new Uint8Array(14 + ARP_LENGTH);
  buildEthernet(frame, 0, 0xffffffffffff, TEST_GUEST_MAC, ETHERTYPE_ARP);
  buildArp(frame, 14, {
    op: ARP_OP_REQUEST,
    senderMac: TEST_GUEST_MAC,
    senderIp: 0xc6336437, // 198.51.100.55 (TEST-NET-2)
    targetMac: 0,
    targetIp: 0xc6336401, // 198.51.100.1
  });
  return frame;
}

/** The harness's usual features less EVENT_IDX: the backend then signals after every batch. */
const FEATURES_WITHOUT_EVENT_IDX = QEMU_NET_FEATURES & ~featureBit(VIRTIO_F_EVENT_IDX);

/** Runs `body` against a fresh foreground daemon; stops it and checks its exit code. */
async function withDaemon(
  prefix: string,
  body: (daemon: ForegroundTpasst, path: string) => Promise<void>,
): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix });
  const path = `${dir}/vhost-user.sock`;
  const daemon = new ForegroundTpasst(["--vhost-user", "-s", path]);
  try {
    await waitFor("the daemon's socket", () => exists(path));
    await body(daemon, path);
  } finally {
    try {
      daemon.process.kill("SIGTERM");
    } catch { /* it already exited: the assertion below reports how */ }
    const { code, stderr } = await daemon.exit();
    Deno.removeSync(dir, { recursive: true });
    assert.equal(code, 0, stderr.slice(-3000));
  }
}

/** A fresh front-end negotiates, moves a frame each way and leaves; nothing stays behind. */
async function freshFrontendWorks(
  daemon: ForegroundTpasst,
  path: string,
  gone: number,
  idleFds: number,
): Promise<void> {
  const pid = daemon.process.pid;
  const frontend = VhostUserFrontend.connect(path);
  try {
    await frontend.negotiate();
    frontend.postRxBuffers(8);
    frontend.sendFrame(arpRequest());
    await frontend.waitUsed(TX, 1);
    const used = await frontend.waitUsed(RX, 1);
    assert.ok(frontend.rxFrames(used).length >= 1, "a frame reached the RX ring");
  } finally {
    frontend.close();
  }
  await frontendGone(daemon, gone);
  assert.deepEqual(harnessMappings(pid), [], "guest memory unmapped after the session");
  await waitFor(
    "the daemon's fd count back at its idle baseline",
    () => processFdCount(pid) === idleFds,
  );
}

Deno.test({
  name:
    `\`bin/tpasst --vhost-user\` refuses a semaphore-mode eventfd as kick fd and stays idle${SKIP_REASON}`,
  ignore: !daemonMayMapMemory,
  async fn() {
    await withDaemon("tpasst-vu-semaphore-", async (daemon, path) => {
      const pid = daemon.process.pid;
      const idleFds = await settledFdCount(pid);
      // A semaphore eventfd gives back 1 per read: with this counter, a level-triggered
      // watch would fire for hours.
      const semaphore = EventFd.create({ semaphore: true });
      try {
        semaphore.signal(0xffffffff);
        const frontend = VhostUserFrontend.connect(path);
        try {
          await assert.rejects(
            frontend.negotiate({ replyAck: false, fds: { kick: [undefined, semaphore.fd] } }),
            "the daemon closes the connection during the negotiation",
          );
        } finally {
          frontend.close();
        }
        await daemon.waitForStderr(
          /SET_VRING_KICK: ring 1 kick fd is a semaphore-mode eventfd \(EFD_SEMAPHORE\), not an eventfd in normal mode/,
          "the refusal naming request, ring and fd kind",
        );
        await frontendGone(daemon, 1);
        const before = cpuSeconds(pid);
        await new Promise((resolve) => setTimeout(resolve, IDLE_WINDOW_MS));
        const share = (cpuSeconds(pid) - before) / (IDLE_WINDOW_MS / 1000);
        assert.ok(
          share < IDLE_CPU_LIMIT,
          `daemon used ${(share * 100).toFixed(0)}% of a core idle`,
        );
        assert.deepEqual(harnessMappings(pid), []);
        await waitFor(
          "the daemon's fd count back at its idle baseline",
          () => processFdCount(pid) === idleFds,
        );
      } finally {
        semaphore.close();
      }
      await freshFrontendWorks(daemon, path, 2, idleFds);
    });
  },
});

Deno.test({
  name:
    `\`bin/tpasst --vhost-user\` refuses a pipe as call fd and a socket as err fd, unmapping guest memory and closing every fd${SKIP_REASON}`,
  ignore: !daemonMayMapMemory,
  async fn() {
    await withDaemon("tpasst-vu-pipe-call-", async (daemon, path) => {
      const pid = daemon.process.pid;
      const idleFds = await settledFdCount(pid);
      const [readEnd, writeEnd] = createPipe();
      try {
        // The rings run and guest memory is mapped; then QEMU sends SET_VRING_CALL
        // again (as when it masks a queue's interrupt), here with a pipe's read end:
        // writing the call signal to it fails (EBADF). Without EVENT_IDX (the harness
        // never sets used_event) every publish with new used elements signals.
        let frontend = VhostUserFrontend.connect(path);
        try {
          await frontend.negotiate({ replyAck: false, features: FEATURES_WITHOUT_EVENT_IDX });
          assert.equal(harnessMappings(pid).length, 2, "both regions mapped while connected");
          frontend.postRxBuffers(8);
          frontend.send(Request.SET_VRING_CALL, u64Payload(RX), [readEnd]);
          frontend.send(Request.SET_VRING_CALL, u64Payload(TX), [readEnd]);
          // a TX frame whose reply goes to RX: each ring signals its call fd
          frontend.sendFrame(arpRequest());
          await frontend.waitClosed();
        } finally {
          frontend.close();
        }
        await frontendGone(daemon, 1);
        assert.deepEqual(harnessMappings(pid), [], "no mapping of the front-end's memory left");
        await waitFor(
          "the daemon's fd count back at its idle baseline",
          () => processFdCount(pid) === idleFds,
        );
        await daemon.waitForStderr(
          /SET_VRING_CALL: ring 0 call fd is a pipe \(pipe:\[\d+\]\), not an eventfd in normal mode/,
          "the refusal of the pipe",
        );

        // a socket as err fd, sent during the negotiation
        const [left, right] = UnixStream.pair();
        frontend = VhostUserFrontend.connect(path);
        try {
          await assert.rejects(
            frontend.negotiate({ replyAck: false, fds: { err: [left.fd] } }),
            "the daemon closes the connection during the negotiation",
          );
        } finally {
          frontend.close();
          left.close();
          right.close();
        }
        await daemon.waitForStderr(
          /SET_VRING_ERR: ring 0 err fd is a socket \(socket:\[\d+\]\), not an eventfd in normal mode/,
          "the refusal of the socket",
        );
        await frontendGone(daemon, 2);
        assert.deepEqual(harnessMappings(pid), []);
        await waitFor(
          "the daemon's fd count back at its idle baseline",
          () => processFdCount(pid) === idleFds,
        );
      } finally {
        closeFd(readEnd);
        closeFd(writeEnd);
      }
      await freshFrontendWorks(daemon, path, 3, idleFds);
    });
  },
});
