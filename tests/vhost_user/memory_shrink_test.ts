/**
 * A front-end that shrinks the files behind its guest memory after sharing them
 * (bin/tpasst --vhost-user as a child process, the harness front-end as QEMU): the
 * daemon must not die of SIGBUS. It drops that front-end with one log line naming
 * the region, unmaps its memory, closes its fds and serves the next front-end.
 *
 * Skipped (with the reason in its name) when deno.json's daemon permission set lacks
 * `"ffi": true`, without which the daemon cannot map guest memory.
 */
import assert from "node:assert/strict";
import { exists, ForegroundTpasst, processAlive, waitFor } from "../cli/cli_helpers.ts";
import { Errno, NativeError } from "../../ffi/native_error.ts";
import type { HarnessMemoryOptions } from "../support/frontend/shared_memory.ts";
import { RX, TX, VhostUserFrontend } from "../support/frontend/vhost_user_frontend.ts";

/** Mapping guest memory needs full --allow-ffi in the daemon's permission set. */
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

/** The guest's addresses, given to the daemon so that the ARP exchange is predictable. */
const GUEST_IP = [10, 0, 2, 15];
const GATEWAY_IP = [10, 0, 2, 2];
const GUEST_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const DAEMON_ADDRESS_ARGS = ["--address", "10.0.2.15", "--netmask", "24", "--gateway", "10.0.2.2"];

/** Ethernet header fields (IEEE 802.3) and ARP fields (RFC 826) used below. */
const ETHERTYPE_OFFSET = 12;
const ETHERTYPE_ARP = 0x0806;
const ARP_OPER_OFFSET = 14 + 6;
const ARP_OP_REQUEST = 1;
const ARP_OP_REPLY = 2;
const ARP_SPA_OFFSET = 14 + 14;
/** Minimum Ethernet frame without FCS. */
const MIN_FRAME = 60;

/** The harness memfds' names, as they show in /proc/PID/maps ("/memfd:NAME (deleted)"). */
const HARNESS_MEMFD_NAME = "tpasst-harness-ram";

/** An ARP request from the guest for the gateway's MAC address. */
function arpRequestForGateway(): Uint8Array {
  const frame = new Uint8Array(MIN_FRAME);
  frame.fill(0xff, 0, 6); // broadcast
  frame.set(GUEST_MAC, 6);
  new DataView(frame.buffer).setUint16(ETHERTYPE_OFFSET, ETHERTYPE_ARP);
  // htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4, oper
  frame.set([0, 1, 0x08, 0x00, 6, 4, 0, ARP_OP_REQUEST], 14);
  frame.set(GUEST_MAC, 14 + 8);
  frame.set(GUEST_IP, 14 + 14);
  frame.set(GATEWAY_IP, 14 + 24);
  return frame;
}

function isArpReplyFromGateway(frame: Uint8Array): boolean {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.length);
  return frame.length >= 42 && view.getUint16(ETHERTYPE_OFFSET) === ETHERTYPE_ARP &&
    view.getUint16(ARP_OPER_OFFSET) === ARP_OP_REPLY &&
    frame.subarray(ARP_SPA_OFFSET, ARP_SPA_OFFSET + 4).every((b, i) => b === GATEWAY_IP[i]);
}

/**
 * Sends an ARP request for the gateway with one RX buffer posted and waits for the
 * reply; frames the daemon sends on its own (router advertisements...) are skipped.
 * One buffer at a time, so that no RX buffer stays posted afterwards.
 */
async function exchangeArp(frontend: VhostUserFrontend): Promise<void> {
  for (let attempt = 0; attempt < 8; attempt++) {
    frontend.postRxBuffers(1);
    frontend.sendFrame(arpRequestForGateway());
    await frontend.waitUsed(TX, 1);
    const used = await frontend.waitUsed(RX, 1);
    if (frontend.rxFrames(used).some(isArpReplyFromGateway)) return;
  }
  throw new Error("no ARP reply from the gateway in 8 attempts");
}

/** What the daemon's fds point at ("socket:[…]", "anon_inode:[eventfd]"…), sorted. */
function daemonFds(pid: number): string[] {
  const targets: string[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      targets.push(`${entry.name} ${Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`)}`);
    } catch { /* closed meanwhile */ }
  }
  return targets.sort();
}

function harnessMemoryMappedBy(pid: number): boolean {
  return Deno.readTextFileSync(`/proc/${pid}/maps`).includes(HARNESS_MEMFD_NAME);
}

/** Polls `probe` like waitFor(), but fails at once, with its log, if the daemon died. */
function waitWhileAlive<T>(
  daemon: ForegroundTpasst,
  what: string,
  probe: () => T | null | undefined | false,
): Promise<T> {
  return waitFor(what, () => {
    if (!processAlive(daemon.process.pid)) {
      throw new Error(`the daemon died waiting for ${what}:\n${daemon.stderr.slice(-2000)}`);
    }
    return probe();
  });
}

/** The daemon serves one front-end at a time: wait until it has let go of `count` of them. */
function frontendGone(daemon: ForegroundTpasst, count: number): Promise<true> {
  return waitWhileAlive(
    daemon,
    `the daemon to release front-end #${count}`,
    () =>
      (daemon.stderr.match(/Frontend gone; waiting for the next connection/g) ?? []).length >=
        count,
  );
}

/** Runs the daemon for `body`, then stops it and asserts a clean exit (135 is SIGBUS). */
async function withDaemon(
  prefix: string,
  body: (daemon: ForegroundTpasst, path: string) => Promise<void>,
): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix });
  const path = `${dir}/vhost-user.sock`;
  const daemon = new ForegroundTpasst(["--vhost-user", "-s", path, ...DAEMON_ADDRESS_ARGS]);
  try {
    await waitFor("the daemon's socket", () => exists(path));
    await body(daemon, path);
  } finally {
    try {
      daemon.process.kill("SIGTERM");
    } catch { /* it already exited: the assertion below reports how */ }
    const { code, stderr } = await daemon.exit();
    Deno.removeSync(dir, { recursive: true });
    assert.equal(code, 0, `daemon exit code ${code} (135 = SIGBUS)\n${stderr.slice(-3000)}`);
  }
}

/** How the front-end damages its memory once traffic flows. */
interface ShrinkCase {
  /** Test name suffix. */
  readonly what: string;
  /** Region index whose file shrinks. */
  readonly region: number;
  /** Shrinks the file and makes the daemon touch the lost part. */
  readonly shrink: (frontend: VhostUserFrontend) => void;
  /** The region named in the drop log line. */
  readonly logged: RegExp;
}

const SHRINK_CASES: ShrinkCase[] = [
  {
    what: "to 0 under the rings: the daemon's reads of the rings fault",
    region: 0,
    shrink(frontend) {
      // region 0 holds both rings' descriptor tables, available and used rings
      frontend.queueFrame(arpRequestForGateway());
      frontend.memory.truncateFile(0, 0);
      frontend.kicks[TX].signal();
      frontend.kicks[RX].signal();
    },
    logged:
      /guest memory region guest 0x0 size 0x100000 became unreadable \(its file shrank\): dropping the front-end/,
  },
  {
    what: "to half under posted RX buffers: the daemon's write of the ARP reply faults",
    region: 1,
    shrink(frontend) {
      // the request lies in the lower half of region 1; RX buffers in the upper half
      frontend.queueFrame(arpRequestForGateway());
      const half = frontend.memory.regions[1].memfd.size / 2;
      frontend.allocate(half);
      frontend.postRxBuffers(4);
      frontend.memory.truncateFile(1, half);
      frontend.kicks[TX].signal();
    },
    logged:
      /guest memory region guest 0x100000000 size 0x100000 became unreadable \(its file shrank\): dropping the front-end/,
  },
];

for (const shrinkCase of SHRINK_CASES) {
  Deno.test({
    name:
      `\`bin/tpasst --vhost-user\` survives a front-end that shrinks its memory file ${shrinkCase.what}${SKIP_REASON}`,
    ignore: !daemonMayMapMemory,
    async fn() {
      await withDaemon("tpasst-vu-shrink-", async (daemon, path) => {
        const pid = daemon.process.pid;
        // a first front-end settles the daemon (start-up and the first link-up open
        // fds for good, some only after the socket exists); the idle fds afterwards
        // are the baseline
        const warmUp = VhostUserFrontend.connect(path);
        try {
          await warmUp.negotiate();
          await exchangeArp(warmUp);
        } finally {
          warmUp.close();
        }
        await frontendGone(daemon, 1);
        const idleFds = daemonFds(pid);
        const frontend = VhostUserFrontend.connect(path);
        try {
          await frontend.negotiate();
          for (let i = 0; i < 3; i++) await exchangeArp(frontend);
          assert.ok(harnessMemoryMappedBy(pid), "the daemon maps the harness memfds");
          shrinkCase.shrink(frontend);
          await waitWhileAlive(
            daemon,
            "the drop log line",
            () => daemon.stderr.match(shrinkCase.logged),
          );
          await frontend.waitClosed();
        } finally {
          frontend.close(); // unmaps this process's copy without touching it
        }
        await frontendGone(daemon, 2);
        assert.ok(processAlive(pid), "the daemon is alive");
        assert.equal(harnessMemoryMappedBy(pid), false, "no mapping of the memfds remains");
        await waitWhileAlive(
          daemon,
          "the daemon's fds back to its idle baseline",
          // each fd open now was open when idle (fewer is fine: a transient one may
          // have been open then)
          () => daemonFds(pid).every((fd) => idleFds.includes(fd)),
        ).catch((error) => {
          throw new Error(
            `${error.message}\nidle: ${idleFds.join(", ")}\nnow: ${daemonFds(pid).join(", ")}`,
          );
        });
        // a fresh front-end gets answers
        const fresh = VhostUserFrontend.connect(path);
        try {
          await fresh.negotiate();
          await exchangeArp(fresh);
        } finally {
          fresh.close();
        }
        await frontendGone(daemon, 3);
        assert.equal(
          (daemon.stderr.match(/became unreadable/g) ?? []).length,
          1,
          "one drop, for the shrunk front-end only",
        );
      });
    },
  });
}

Deno.test({
  name:
    `\`bin/tpasst --vhost-user\` seals memfds that allow it, so the front-end cannot shrink them${SKIP_REASON}`,
  ignore: !daemonMayMapMemory,
  async fn() {
    await withDaemon("tpasst-vu-sealed-", async (daemon, path) => {
      const sealable: HarnessMemoryOptions = { allowSealing: true };
      const frontend = VhostUserFrontend.connect(path, sealable);
      try {
        await frontend.negotiate();
        await exchangeArp(frontend);
        for (const index of [0, 1]) {
          assert.throws(
            () => frontend.memory.truncateFile(index, 0),
            (error) => error instanceof NativeError && error.errno === Errno.EPERM,
            `region ${index}'s file carries F_SEAL_SHRINK`,
          );
        }
        await exchangeArp(frontend);
      } finally {
        frontend.close();
      }
      await frontendGone(daemon, 1);
      assert.doesNotMatch(daemon.stderr, /became unreadable/);
    });
  },
});
