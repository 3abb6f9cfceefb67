/**
 * libvirt as a real client of tpasst: a private libvirtd (its own mount namespace,
 * configuration and sockets; see private_libvirtd.sh), the domain XML of the test guest
 * (TCG, direct kernel boot, the scenario script through fw_cfg, serial console to a
 * file) with either network interface, and a reader of the serial file's marks.
 *
 * @module
 */

import type { GuestImage } from "./guest_image.ts";
import { DONE_PREFIX, GUEST_MAC, MARK_PREFIX } from "./qemu.ts";

const PRIVATE_LIBVIRTD = new URL("./private_libvirtd.sh", import.meta.url).pathname;
const TPASST_BIN = new URL("../../bin/tpasst", import.meta.url).pathname;
/** How long libvirtd may take to create its socket. */
const LIBVIRTD_START_MS = 15_000;
/** Grace period after SIGTERM before libvirtd gets SIGKILL. */
const LIBVIRTD_STOP_MS = 5_000;
/** libvirt's QEMU state directory (pid files of QEMU; passt's under passt/). */
const LIBVIRT_QEMU_RUN_DIR = "/run/libvirt/qemu";
/** How often the serial file is read. */
const SERIAL_POLL_MS = 200;
/** Name of the fw_cfg file guest/init.sh runs (QEMU's -fw_cfg name=). */
const SCENARIO_FW_CFG_NAME = "opt/tpasst/scenario";
/** Kernel command line of the e2e guest (as in qemu.ts). */
const GUEST_CMDLINE = "console=ttyS0 quiet loglevel=1 panic=-1 tsc=reliable";

/**
 * Why libvirt cannot run here (null: it can): libvirtd, virsh, unshare and libvirt's
 * QEMU driver must be installed (Debian: libvirt-daemon, libvirt-daemon-driver-qemu,
 * libvirt-clients; .ci/run installs them) and we must be root (private mount namespace).
 */
export function libvirtUnavailableReason(): string | null {
  for (const tool of ["libvirtd", "virsh", "unshare"]) {
    if (!onPath(tool)) {
      return `${tool} is not installed (apt-get install libvirt-daemon-driver-qemu libvirt-clients)`;
    }
  }
  if (Deno.uid() !== 0) return "a private libvirtd needs root (its own mount namespace)";
  return null;
}

/**
 * Why this libvirt cannot run passt for `<interface type='user'><backend type='passt'/>`
 * (null: it can). Asked of libvirt's own XML parser through its test driver. Debian 12's
 * libvirt 9.0.0 rejects the element ("Invalid value for attribute 'type' in element
 * 'backend': 'passt'", libvirt issue #462): Debian patched the passt backend out of
 * bookworm (debian/patches/debian/Disable-passt-support.patch makes
 * virDomainNetBackendParseXML() refuse `passt`; its QEMU driver still has the code).
 * bookworm-backports' libvirt (11.3) accepts it; .ci/run installs that one.
 */
export async function passtBackendUnavailableReason(): Promise<string | null> {
  const dir = await Deno.makeTempDir({ prefix: "tpasst-libvirt-probe-" });
  try {
    const xml = `${dir}/probe.xml`;
    await Deno.writeTextFile(
      xml,
      `<domain type='test'><name>passt-probe</name><memory>65536</memory>
  <os><type>hvm</type></os>
  <devices><interface type='user'><backend type='passt'/></interface></devices>
</domain>`,
    );
    const result = await run("virsh", ["-c", "test:///default", "define", xml]);
    if (result.success) return null;
    const version = (await run("libvirtd", ["--version"])).stdout.trim();
    return `${version} rejects <backend type='passt'/> (${
      result.stderr.trim().split("\n").pop()
    }): Debian 12's libvirt 9.0.0 has the passt backend patched out ` +
      "(Disable-passt-support.patch); install libvirt-daemon-driver-qemu and libvirt-clients " +
      "from bookworm-backports";
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The network interface of a test domain. */
export type DomainInterface =
  | {
    /** QEMU connects to tpasst's vhost-user socket (tpasst started by the test). */
    readonly kind: "vhost-user";
    readonly socketPath: string;
  }
  | {
    /** libvirt starts `passt` (the first on libvirtd's PATH) and QEMU's stream netdev. */
    readonly kind: "passt";
    /** TCP forwards: host port on 127.0.0.1 → guest port (`<portForward>`). */
    readonly tcpForwards: readonly { hostPort: number; guestPort: number }[];
  };

/** What a test domain is made of. */
export interface DomainOptions {
  readonly name: string;
  readonly image: GuestImage;
  /** File with the scenario script (handed over through fw_cfg). */
  readonly scriptPath: string;
  /** File the serial console is written to. */
  readonly serialPath: string;
  readonly network: DomainInterface;
  /** Guest memory in MiB (default 256). */
  readonly memoryMiB?: number;
}

/** Alias of the network device (user aliases start with "ua-"). */
const NET_ALIAS = "ua-net0";

/**
 * The domain XML: TCG on the pc machine with ACPI (without it the guest's fw_cfg
 * driver finds no device and power-off only halts), one vCPU, direct kernel boot, the
 * scenario as fw_cfg file `opt/tpasst/scenario` (`<sysinfo type='fwcfg'>`), serial
 * console to a file, the domain destroyed when the guest powers off.
 */
export function domainXml(options: DomainOptions): string {
  const memoryMiB = options.memoryMiB ?? 256;
  const network = options.network;
  let interfaceXml: string;
  let memoryBacking = "";
  let override = "";
  if (network.kind === "vhost-user") {
    // vhost-user needs guest memory the backend can map: shared memfd.
    memoryBacking = `
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>`;
    interfaceXml = `
    <interface type='vhostuser'>
      <mac address='${GUEST_MAC}'/>
      <source type='unix' path='${xmlText(network.socketPath)}' mode='client'/>
      <model type='virtio'/>
      <alias name='${NET_ALIAS}'/>
    </interface>`;
    // vectors=0 as in qemu.ts: MSI-X with vhost-user under TCG crashes QEMU 7.2.
    override = `
  <qemu:override>
    <qemu:device alias='${NET_ALIAS}'>
      <qemu:frontend><qemu:property name='vectors' type='unsigned' value='0'/></qemu:frontend>
    </qemu:device>
  </qemu:override>`;
  } else {
    const forwards = network.tcpForwards.map((f) => `
      <portForward proto='tcp' address='127.0.0.1'>
        <range start='${f.hostPort}' to='${f.guestPort}'/>
      </portForward>`).join("");
    interfaceXml = `
    <interface type='user'>
      <mac address='${GUEST_MAC}'/>
      <model type='virtio'/>
      <backend type='passt'/>${forwards}
    </interface>`;
  }
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${xmlText(options.name)}</name>
  <memory unit='MiB'>${memoryMiB}</memory>${memoryBacking}
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlText(options.image.kernel)}</kernel>
    <initrd>${xmlText(options.image.initramfs)}</initrd>
    <cmdline>${GUEST_CMDLINE}</cmdline>
  </os>
  <sysinfo type='fwcfg'>
    <entry name='${SCENARIO_FW_CFG_NAME}' file='${xmlText(options.scriptPath)}'/>
  </sysinfo>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'><source path='${
    xmlText(options.serialPath)
  }'/><target port='0'/></serial>${interfaceXml}
    <memballoon model='none'/>
  </devices>${override}
</domain>
`;
}

/** A libvirtd of our own, in a private mount namespace; only we talk to it. */
export class PrivateLibvirtd {
  /** Connection URI for virsh (`-c`). */
  readonly uri: string;
  readonly #dir: string;
  readonly #child: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;
  #exited = false;

  private constructor(dir: string, child: Deno.ChildProcess) {
    this.#dir = dir;
    this.#child = child;
    this.uri = `qemu:///system?socket=${dir}/sock/libvirt-sock`;
    this.#status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
  }

  /**
   * Starts libvirtd; a `passt` script in its PATH runs bin/tpasst with libvirt's
   * arguments (appending them to DIR/passt-args.log). Resolves once its socket exists.
   */
  static async start(): Promise<PrivateLibvirtd> {
    const dir = await Deno.makeTempDir({ prefix: "tpasst-libvirtd-" });
    await Deno.mkdir(`${dir}/bin`);
    const wrapper = `${dir}/bin/passt`;
    // libvirt runs passt with a minimal environment: PATH (deno) and HOME (deno's
    // cache) are the test's own.
    await Deno.writeTextFile(
      wrapper,
      `#!/bin/sh
echo "$*" >>${shellWord(`${dir}/passt-args.log`)}
export PATH=${shellWord(Deno.env.get("PATH") ?? "/usr/bin:/bin")}
export HOME=${shellWord(Deno.env.get("HOME") ?? "/root")}
exec ${shellWord(TPASST_BIN)} "$@"
`,
    );
    await Deno.chmod(wrapper, 0o755);
    const child = new Deno.Command("unshare", {
      args: ["-m", "--propagation", "private", PRIVATE_LIBVIRTD, dir],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const daemon = new PrivateLibvirtd(dir, child);
    const stderr = new Response(child.stderr).text();
    const deadline = performance.now() + LIBVIRTD_START_MS;
    while (!(await exists(`${dir}/sock/libvirt-sock`))) {
      if (daemon.#exited || performance.now() > deadline) {
        await daemon.stop();
        throw new Error(
          `libvirtd did not create its socket ${
            daemon.#exited ? "and exited" : "in time"
          }: ${await stderr}\n${await daemon
            .log()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return daemon;
  }

  /** Runs virsh against this daemon; throws with its output if it fails. */
  async virsh(...args: string[]): Promise<string> {
    const result = await run("virsh", ["-c", this.uri, ...args]);
    if (!result.success) {
      throw new Error(
        `virsh ${args.join(" ")} failed: ${result.stderr.trim()}\n${await this.log()}`,
      );
    }
    return result.stdout;
  }

  /** What libvirt ran as `passt`, one invocation a line ("" if never). */
  async passtInvocations(): Promise<string> {
    return await Deno.readTextFile(`${this.#dir}/passt-args.log`).catch(() => "");
  }

  /** The end of libvirtd's log and of the domains' QEMU logs, for error messages. */
  async log(): Promise<string> {
    const tail = async (path: string) =>
      (await Deno.readTextFile(path).catch(() => "")).split("\n").slice(-20).join("\n");
    let text = `--- libvirtd.log ---\n${await tail(`${this.#dir}/libvirtd.log`)}`;
    const qemuLogs = `${this.#dir}/root/var/log/libvirt/qemu`;
    try {
      for await (const entry of Deno.readDir(qemuLogs)) {
        text += `\n--- ${entry.name} ---\n${await tail(`${qemuLogs}/${entry.name}`)}`;
      }
    } catch { /* no domain started */ }
    return text;
  }

  /**
   * Destroys every running domain, stops libvirtd (SIGTERM, then SIGKILL; by its pid)
   * and removes its directory.
   */
  async stop(): Promise<void> {
    if (!this.#exited) {
      const names = await run("virsh", ["-c", this.uri, "list", "--name"]);
      for (const name of names.stdout.split("\n").map((n) => n.trim()).filter((n) => n)) {
        await run("virsh", ["-c", this.uri, "destroy", name]);
      }
      try {
        this.#child.kill("SIGTERM");
      } catch { /* gone */ }
      const timer = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch { /* gone */ }
      }, LIBVIRTD_STOP_MS);
      await this.#status;
      clearTimeout(timer);
    }
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  /**
   * Sends SIGKILL now (for process exit handlers) to the QEMU and passt processes
   * libvirtd started (by the pids in its private pid files), then to libvirtd.
   */
  abort(): void {
    if (this.#exited) return;
    for (const pidDir of [LIBVIRT_QEMU_RUN_DIR, `${LIBVIRT_QEMU_RUN_DIR}/passt`]) {
      let entries: Deno.DirEntry[] = [];
      try {
        entries = [...Deno.readDirSync(`${this.#dir}/root${pidDir}`)];
      } catch { /* none */ }
      for (const entry of entries.filter((e) => e.name.endsWith(".pid"))) {
        try {
          const pid = Number.parseInt(
            Deno.readTextFileSync(`${this.#dir}/root${pidDir}/${entry.name}`),
            10,
          );
          if (pid > 1) Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
    }
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
  }
}

/** The marks and exit status the guest writes to a serial console file. */
export class SerialFile {
  readonly #path: string;
  #text = "";

  constructor(path: string) {
    this.#path = path;
  }

  /** Waits until the first complete `TPASST-MARK name` line and returns its value. */
  async waitForMark(name: string, timeoutMs: number): Promise<string> {
    const prefix = `${MARK_PREFIX}${name} `;
    const found = await this.#waitFor(
      (line) => {
        const at = `${line} `.indexOf(prefix);
        return at < 0 ? null : `${line} `.slice(at + prefix.length).trim();
      },
      `mark ${name}`,
      timeoutMs,
    );
    return found;
  }

  /** Waits for a complete `TPASST-DONE` line and returns the scenario's exit status. */
  async waitForDone(timeoutMs: number): Promise<number> {
    const status = await this.#waitFor(
      (line) => {
        const at = line.indexOf(DONE_PREFIX);
        return at < 0 ? null : line.slice(at + DONE_PREFIX.length).trim();
      },
      "TPASST-DONE",
      timeoutMs,
    );
    return Number.parseInt(status, 10);
  }

  /** The console so far. */
  text(): string {
    return this.#text;
  }

  async #waitFor(
    match: (line: string) => string | null,
    what: string,
    timeoutMs: number,
  ): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      this.#text = await Deno.readTextFile(this.#path).catch(() => this.#text);
      // QEMU writes the console a few bytes at a time (the guest's UART FIFO): a read
      // may end mid-line, so only lines that have their newline are looked at.
      const complete = this.#text.slice(0, this.#text.lastIndexOf("\n") + 1);
      for (const line of complete.split("\n")) {
        const value = match(line.replace(/\r$/, ""));
        if (value !== null) return value;
      }
      if (performance.now() > deadline) {
        throw new Error(
          `Timed out after ${timeoutMs} ms waiting for ${what}\n--- serial console ---\n${this.#text}`,
        );
      }
      await new Promise((r) => setTimeout(r, SERIAL_POLL_MS));
    }
  }
}

function onPath(tool: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      if (Deno.statSync(`${dir}/${tool}`).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}

async function run(
  command: string,
  args: string[],
): Promise<{ success: boolean; stdout: string; stderr: string }> {
  const output = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    success: output.success,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** `text` for an XML attribute or element (paths and names we made). */
function xmlText(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll("'", "&apos;");
}

/** `word` quoted for sh. */
function shellWord(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
