/**
 * libvirt as tpasst's client: a private libvirtd (libvirt.ts) starts a TCG domain whose
 * network is tpasst; the guest gets a DHCP lease, fetches the host's page through the
 * gateway, and a host client reaches the guest's server through a forwarded port.
 *
 * - vhost-user: `<interface type='vhostuser'>` to the socket of a tpasst the test
 *   started with `-t 127.0.0.1/HOST:GUEST`.
 * - passt backend: `<interface type='user'><backend type='passt'/><portForward>`, where
 *   libvirt itself runs `passt` (bin/tpasst through a wrapper first on libvirtd's PATH)
 *   with `--tcp-ports`. Ignored where libvirt's parser rejects the element: Debian 12's
 *   9.0.0 has it patched out (libvirt issue #462); bookworm-backports' 11.3 runs it.
 *
 * Both ignored, with the reason, where libvirt is not installed. The serial-file reader
 * of their marks is tested without libvirt.
 * @module
 */
import assert from "node:assert/strict";
import { startBackend, type StartedBackend } from "./backends.ts";
import { ensureGuestImage } from "./guest_image.ts";
import { freePort, HELLO_BODY, startHttpServer, tcpExchange } from "./host_services.ts";
import {
  type DomainInterface,
  domainXml,
  libvirtUnavailableReason,
  passtBackendUnavailableReason,
  PrivateLibvirtd,
  SerialFile,
} from "./libvirt.ts";
import { buildGuestScript, GUEST_PAGE, GUEST_TCP_PORT, HOST_TCP_MESSAGE } from "./scenario.ts";

/** Boot to the DHCP lease under TCG, with the other e2e guests sharing two cores. */
const BOOT_TIMEOUT_MS = 60_000;
/** One phase after boot. */
const PHASE_TIMEOUT_MS = 30_000;

const libvirtMissing = libvirtUnavailableReason();
const passtBackendMissing = libvirtMissing ?? await passtBackendUnavailableReason();

/**
 * Runs the scenario (DHCP, HTTP through the gateway, forwarded TCP into the guest) in a
 * domain with `network` under `libvirtd`, checking each result.
 */
async function runDomain(
  libvirtd: PrivateLibvirtd,
  network: (hostPort: number) => Promise<DomainInterface>,
): Promise<void> {
  const http = startHttpServer();
  const dir = await Deno.makeTempDir({ prefix: "tpasst-libvirt-domain-" });
  try {
    const hostPort = freePort();
    const scriptPath = `${dir}/scenario.sh`;
    const serialPath = `${dir}/serial.log`;
    await Deno.writeTextFile(
      scriptPath,
      buildGuestScript(
        ["dhcp", "http", "tcp-in"],
        {
          http: http.port,
          dns: 0,
          udpEcho: 0,
          sink: 0,
          iperf: 0,
          hostLoopback6: null,
        },
        0,
        0,
      ),
    );
    const xmlPath = `${dir}/domain.xml`;
    await Deno.writeTextFile(
      xmlPath,
      domainXml({
        name: `tpasst-e2e-${Deno.pid}`,
        image: await ensureGuestImage(),
        scriptPath,
        serialPath,
        network: await network(hostPort),
      }),
    );
    await libvirtd.virsh("create", xmlPath);
    const serial = new SerialFile(serialPath);
    const failure = async (error: unknown) => {
      const message = error instanceof Error ? error.message : String(error);
      // A timeout's message holds the console already; an assertion's does not.
      const serialText = message.includes("--- serial console ---")
        ? ""
        : `\n--- serial console ---\n${serial.text()}`;
      return new Error(`${message}${serialText}\n${await libvirtd.log()}`);
    };
    try {
      assert.match(await serial.waitForMark("dhcp-ip", BOOT_TIMEOUT_MS), /^\d+\.\d+\.\d+\.\d+$/);
      assert.equal(await serial.waitForMark("http-get", PHASE_TIMEOUT_MS), HELLO_BODY.trim());
      await serial.waitForMark("ready", PHASE_TIMEOUT_MS);
      assert.equal(
        await tcpExchange(hostPort, HOST_TCP_MESSAGE, GUEST_PAGE, PHASE_TIMEOUT_MS),
        GUEST_PAGE,
      );
      assert.equal(await serial.waitForMark("tcp-in", PHASE_TIMEOUT_MS), HOST_TCP_MESSAGE.trim());
      assert.equal(await serial.waitForDone(PHASE_TIMEOUT_MS), 0);
    } catch (error) {
      throw await failure(error);
    }
  } finally {
    await http.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function libvirtTest(name: string, ignore: string | null, fn: () => Promise<void>): void {
  Deno.test({
    name: `e2e libvirt: ${name}${ignore ? ` (ignored: ${ignore})` : ""}`,
    ignore: ignore !== null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

libvirtTest(
  "a domain with a vhost-user interface to tpasst gets a lease, fetches a page and serves a forwarded port",
  libvirtMissing,
  async () => {
    const libvirtd = await PrivateLibvirtd.start();
    let backend: StartedBackend | null = null;
    globalThis.addEventListener("unload", () => {
      libvirtd.abort();
      backend?.abort();
    });
    try {
      await runDomain(libvirtd, async (hostPort) => {
        backend = await startBackend("tpasst-vhost", {
          forwards: [{ protocol: "tcp", hostPort, guestPort: GUEST_TCP_PORT }],
        });
        if (backend.netdev.kind !== "vhost-user") throw new Error("not a vhost-user backend");
        return { kind: "vhost-user", socketPath: backend.netdev.socketPath };
      });
    } finally {
      await libvirtd.stop();
      await (backend as StartedBackend | null)?.stop();
    }
  },
);

libvirtTest(
  "<backend type='passt'>: libvirt runs tpasst as passt; the guest gets a lease, fetches a page and serves its <portForward>",
  passtBackendMissing,
  async () => {
    const libvirtd = await PrivateLibvirtd.start();
    globalThis.addEventListener("unload", () => libvirtd.abort());
    try {
      await runDomain(libvirtd, (hostPort) =>
        Promise.resolve({
          kind: "passt",
          tcpForwards: [{ hostPort, guestPort: GUEST_TCP_PORT }],
        }));
      assert.match(await libvirtd.passtInvocations(), /--tcp-ports 127\.0\.0\.1\/\d+:8080/);
    } finally {
      await libvirtd.stop();
    }
  },
);

/** Serial text written before the mark of the partial-line tests. */
const CONSOLE_BEFORE = "TPASST-MARK dhcp-ip 10.0.2.15\r\n";

/** Appends `text` to `path` after `delayMs` (QEMU writes the console a burst at a time). */
async function appendLater(path: string, text: string, delayMs: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, delayMs));
  await Deno.writeTextFile(path, text, { append: true });
}

/**
 * Runs `body` with a console file holding `written` (after {@link CONSOLE_BEFORE}), a
 * SerialFile on it and its path; removes the file after.
 */
async function withSerialFile(
  written: string,
  body: (serial: SerialFile, path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tpasst-serial-file-" });
  try {
    const path = `${dir}/serial.log`;
    await Deno.writeTextFile(path, CONSOLE_BEFORE + written);
    await body(new SerialFile(path), path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A mark line cut where CI once caught it: the guest had the whole page, the reader half a line. */
const PAGE_LINE = `TPASST-MARK http-get ${HELLO_BODY.trim()}\r\n`;
const PAGE_LINE_CUT = PAGE_LINE.indexOf("the t") + "the t".length;

Deno.test("SerialFile reads a mark only once its line is complete (a read may catch QEMU mid-line)", async () => {
  await withSerialFile(PAGE_LINE.slice(0, PAGE_LINE_CUT), async (serial, path) => {
    const rest = appendLater(path, PAGE_LINE.slice(PAGE_LINE_CUT), 500);
    assert.equal(await serial.waitForMark("http-get", 5_000), HELLO_BODY.trim());
    await rest;
  });
});

Deno.test("SerialFile reads the exit status only once its line is complete", async () => {
  await withSerialFile("TPASST-DONE 1", async (serial, path) => {
    const rest = appendLater(path, "27\r\n", 500);
    assert.equal(await serial.waitForDone(5_000), 127);
    await rest;
  });
});

Deno.test("SerialFile times out on a mark line that never ends, showing the console it read", async () => {
  await withSerialFile(PAGE_LINE.slice(0, PAGE_LINE_CUT), async (serial) => {
    await assert.rejects(
      serial.waitForMark("http-get", 600),
      (error: Error) => {
        assert.match(error.message, /Timed out after 600 ms waiting for mark http-get/);
        assert.match(error.message, /TPASST-MARK http-get hello from the t$/);
        return true;
      },
    );
  });
});
