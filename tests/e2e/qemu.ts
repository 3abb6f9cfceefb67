/**
 * Runs the end-to-end test guest under QEMU (TCG): builds the command line for the
 * chosen network backend, streams the serial console, collects the guest's
 * `TPASST-MARK` / `TPASST-DONE` lines and lets tests wait for them with timeouts.
 * Every failure carries the tail of the serial console.
 *
 * @module
 */

import { ensureGuestImage } from "./guest_image.ts";

/** How QEMU's virtio-net device reaches its backend. */
export type Netdev =
  | {
    /** vhost-user over a unix socket (tpasst's main mode). */
    readonly kind: "vhost-user";
    /** Socket the backend listens on. */
    readonly socketPath: string;
    /** Reconnect after the backend goes away (`reconnect=1` on the chardev). */
    readonly reconnect?: boolean;
    /**
     * Extra virtio-net-pci options, e.g. `mrg_rxbuf=off` or, for the simplest ring
     * layout, `mrg_rxbuf=off,event_idx=off,indirect_desc=off`.
     */
    readonly deviceOptions?: string;
    /**
     * Queue pairs (`-netdev vhost-user,queues=N`); above 1 the device gets `mq=on` and
     * `vectors=2N+2` (an MSI-X vector per queue, the control queue and the config).
     */
    readonly queues?: number;
  }
  | {
    /** passt's stream protocol (`-netdev stream`). */
    readonly kind: "stream";
    /** Socket the backend listens on. */
    readonly socketPath: string;
    /**
     * Reconnect after the backend goes away (`reconnect=1`): QEMU 8.0 and later only;
     * QEMU 7.2 rejects the parameter ({@link streamReconnectSupported}).
     */
    readonly reconnect?: boolean;
  }
  | {
    /** QEMU's built-in slirp (`-netdev user`). */
    readonly kind: "user";
    /** Host ports forwarded into the guest (bound to 127.0.0.1 only). */
    readonly forwards: readonly PortForward[];
  };

/** One host→guest port forward. */
export interface PortForward {
  readonly protocol: "tcp" | "udp";
  /** Port on the host's 127.0.0.1. */
  readonly hostPort: number;
  /** Port inside the guest. */
  readonly guestPort: number;
}

/** Options for {@link QemuGuest.launch}. */
export interface QemuOptions {
  /** Network backend connection. */
  readonly netdev: Netdev;
  /** Shell script the guest's /init runs (busybox sh). */
  readonly script: string;
  /** Guest memory in MiB (default 256). */
  readonly memoryMiB?: number;
  /** Called with every serial line as it arrives (e.g. to print a demo). */
  readonly onLine?: (line: string) => void;
  /** QEMU binary (default `qemu-system-x86_64`). */
  readonly qemuBinary?: string;
  /** More QEMU arguments, after the others (e.g. `-qmp`, `-incoming` for migration). */
  readonly extraArguments?: readonly string[];
}

/** A `TPASST-MARK` line: name and the rest of the line. */
export interface Mark {
  readonly name: string;
  readonly value: string;
}

/** Guest MAC address used for every backend (QEMU's default OUI). */
export const GUEST_MAC = "52:54:00:12:34:56";

/** Serial line of a scenario result: `TPASST-MARK <name> <value...>` (guest/init.sh). */
export const MARK_PREFIX = "TPASST-MARK ";

/**
 * First lines of a guest script (QemuOptions.script): a `mark NAME VALUE` shell function
 * printing {@link MARK_PREFIX} lines, a DHCP lease on eth0, and the gateway it names in
 * `$gw`; without a lease the script marks `error no-dhcp-lease` with eth0's counters and
 * the virtio interrupt counts, and exits.
 */
export const LEASE_SCRIPT_LINES: readonly string[] = [
  'mark() { echo "TPASST-MARK $*"; }',
  "udhcpc -i eth0 -f -q -n -t 5 -T 3 -s /etc/udhcpc.sh 2>/dev/null >/dev/null",
  "gw=$(cat /tmp/router 2>/dev/null)",
  // without a lease: eth0's counters and the virtio interrupts say whether frames came in
  "if [ -z \"$gw\" ]; then mark error no-dhcp-lease \"$(grep eth0: /proc/net/dev | tr -s ' ')\" \"$(grep virtio /proc/interrupts | tr -s ' ' | tr '\\n' ';')\"; exit 1; fi",
];
/** Serial line with the scenario's exit status: `TPASST-DONE <status>` (guest/init.sh). */
export const DONE_PREFIX = "TPASST-DONE ";
const BOOTED_PREFIX = "TPASST-BOOTED ";
/** First QEMU major version whose `-netdev stream` has `reconnect=` (QEMU 8.0 changelog). */
const QEMU_STREAM_RECONNECT_MAJOR = 8;
/** Serial lines kept for error messages. */
const TAIL_LINES = 60;
/** Grace period for QEMU to exit after the guest powers off. */
const EXIT_GRACE_MS = 5_000;

/** Builds QEMU's network arguments for `netdev` and the guest memory size. */
export function netdevArguments(netdev: Netdev, memoryMiB: number): string[] {
  switch (netdev.kind) {
    case "vhost-user": {
      // vhost-user needs guest memory QEMU can hand over as a shared fd. vectors=0:
      // MSI-X with vhost-user under TCG crashes QEMU 7.2 (10.0 is fine: multiqueue,
      // which wants a vector per queue, is tested there).
      const features = netdev.deviceOptions ? `,${netdev.deviceOptions}` : "";
      const queues = netdev.queues ?? 1;
      return [
        "-object",
        `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
        "-numa",
        "node,memdev=mem",
        "-chardev",
        `socket,id=c,path=${netdev.socketPath}${netdev.reconnect ? ",reconnect=1" : ""}`,
        "-netdev",
        `vhost-user,id=n,chardev=c${queues > 1 ? `,queues=${queues}` : ""}`,
        "-device",
        `virtio-net-pci,netdev=n,mac=${GUEST_MAC},${
          queues > 1 ? `mq=on,vectors=${2 * queues + 2}` : "vectors=0"
        }${features}`,
      ];
    }
    case "stream":
      return [
        "-netdev",
        `stream,id=n,server=off,addr.type=unix,addr.path=${netdev.socketPath}${
          netdev.reconnect ? ",reconnect=1" : ""
        }`,
        "-device",
        `virtio-net-pci,netdev=n,mac=${GUEST_MAC}`,
      ];
    case "user": {
      const forwards = netdev.forwards.map((f) =>
        `,hostfwd=${f.protocol}:127.0.0.1:${f.hostPort}-:${f.guestPort}`
      ).join("");
      return [
        "-netdev",
        `user,id=n${forwards}`,
        "-device",
        `virtio-net-pci,netdev=n,mac=${GUEST_MAC}`,
      ];
    }
  }
}

/**
 * Whether this QEMU's `-netdev stream` takes `reconnect=` (added in QEMU 8.0; 7.2 says
 * "Parameter 'reconnect' is unexpected"), from `QEMU --version`.
 */
export function streamReconnectSupported(qemuBinary = "qemu-system-x86_64"): boolean {
  const output = new Deno.Command(qemuBinary, {
    args: ["--version"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const major = /version (\d+)\./.exec(new TextDecoder().decode(output.stdout))?.[1];
  return major !== undefined && Number(major) >= QEMU_STREAM_RECONNECT_MAJOR;
}

/** A running guest: its QEMU process, serial console and the marks seen so far. */
export class QemuGuest {
  /** Marks in arrival order. */
  readonly marks: Mark[] = [];
  /** Lines read from the serial console (QEMU's standard output) so far. */
  serialLineCount = 0;
  /** Guest uptime (s) when userspace started, once known. */
  bootedAtUptime: number | null = null;
  /** Host milliseconds from launch to the `TPASST-BOOTED` line, once known. */
  bootMs: number | null = null;
  /** Exit status the scenario script reported, once known. */
  doneStatus: number | null = null;
  /** QEMU's command line (binary and arguments). */
  readonly commandLine: readonly string[];

  readonly #child: Deno.ChildProcess;
  readonly #tail: string[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #scriptDir: string;
  readonly #startedAt = performance.now();
  readonly #exited: Promise<Deno.CommandStatus>;
  #exitStatus: Deno.CommandStatus | null = null;
  readonly #onLine?: (line: string) => void;

  private constructor(
    child: Deno.ChildProcess,
    commandLine: readonly string[],
    scriptDir: string,
    onLine?: (l: string) => void,
  ) {
    this.#child = child;
    this.commandLine = commandLine;
    this.#scriptDir = scriptDir;
    this.#onLine = onLine;
    // QEMU counts as exited only once its output is read to the end: its exit status can
    // arrive before the last serial lines (TPASST-DONE) have been read.
    const output = Promise.all([this.#pump(child.stdout), this.#pump(child.stderr, "qemu: ")]);
    this.#exited = Promise.all([child.status, output]).then(([status]) => {
      this.#exitStatus = status;
      this.#wake();
      return status;
    });
  }

  /** Boots the guest with `options`; resolves once QEMU has been spawned. */
  static async launch(options: QemuOptions): Promise<QemuGuest> {
    const image = await ensureGuestImage();
    const memoryMiB = options.memoryMiB ?? 256;
    const scriptDir = await Deno.makeTempDir({ prefix: "tpasst-e2e-" });
    const scriptPath = `${scriptDir}/scenario.sh`;
    await Deno.writeTextFile(scriptPath, options.script);
    const args = [
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-serial",
      "stdio",
      "-monitor",
      "none",
      "-no-reboot",
      "-machine",
      "pc,accel=tcg",
      "-smp",
      "1",
      "-m",
      `${memoryMiB}`,
      "-kernel",
      image.kernel,
      "-initrd",
      image.initramfs,
      "-append",
      "console=ttyS0 quiet loglevel=1 panic=-1 tsc=reliable",
      "-fw_cfg",
      `name=opt/tpasst/scenario,file=${scriptPath}`,
      ...netdevArguments(options.netdev, memoryMiB),
      ...(options.extraArguments ?? []),
    ];
    const binary = options.qemuBinary ?? "qemu-system-x86_64";
    const child = new Deno.Command(binary, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new QemuGuest(child, [binary, ...args], scriptDir, options.onLine);
  }

  /** QEMU's process id (the backend's process for `-netdev user`). */
  get pid(): number {
    return this.#child.pid;
  }

  /** Whether QEMU has exited. */
  get exited(): boolean {
    return this.#exitStatus !== null;
  }

  /** The last serial lines, for error messages. */
  serialTail(): string {
    return this.#tail.join("\n");
  }

  /** Values of every mark called `name`, in arrival order. */
  values(name: string): string[] {
    return this.marks.filter((m) => m.name === name).map((m) => m.value);
  }

  /** Waits for the first mark called `name` and returns its value. */
  async waitForMark(name: string, timeoutMs: number): Promise<string> {
    await this.#waitUntil(() => this.marks.some((m) => m.name === name), `mark ${name}`, timeoutMs);
    return this.values(name)[0];
  }

  /** Waits for the first of several marks and returns it (e.g. a result or its failure). */
  async waitForAnyMark(names: readonly string[], timeoutMs: number): Promise<Mark> {
    const find = () => this.marks.find((m) => names.includes(m.name));
    await this.#waitUntil(
      () => find() !== undefined,
      `one of marks ${names.join(", ")}`,
      timeoutMs,
    );
    return find()!;
  }

  /** Waits for `TPASST-DONE` and returns the scenario's exit status. */
  async waitForDone(timeoutMs: number): Promise<number> {
    await this.#waitUntil(() => this.doneStatus !== null, "TPASST-DONE", timeoutMs);
    return this.doneStatus!;
  }

  /** Waits for QEMU to exit by itself (after the guest powers off). */
  async waitForExit(timeoutMs: number): Promise<Deno.CommandStatus> {
    await this.#waitUntil(() => this.#exitStatus !== null, "QEMU to exit", timeoutMs, false);
    return this.#exitStatus!;
  }

  /** Stops QEMU (SIGTERM, then SIGKILL) unless it already exited; removes temp files. */
  async kill(): Promise<void> {
    if (this.#exitStatus === null) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, EXIT_GRACE_MS);
      await this.#exited;
      clearTimeout(timer);
    } else {
      await this.#exited;
    }
    await Deno.remove(this.#scriptDir, { recursive: true }).catch(() => {});
  }

  /** Sends SIGKILL now without waiting (for process exit handlers). */
  abort(): void {
    if (this.#exitStatus !== null) return;
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
  }

  /** Same as {@link kill}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }

  /** An Error whose message has `what` and the serial console's tail. */
  failure(what: string): Error {
    return new Error(
      `${what}\n--- guest serial console (last ${TAIL_LINES} lines) ---\n${this.serialTail()}\n---`,
    );
  }

  /** Waits until `done()` holds (checked on every serial line); `what` names it in errors. */
  waitUntil(done: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return this.#waitUntil(done, what, timeoutMs);
  }

  #waitUntil(
    done: () => boolean,
    what: string,
    timeoutMs: number,
    failOnExit = true,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (done()) {
          finish();
          resolve();
        } else if (failOnExit && this.#exitStatus !== null) {
          finish();
          reject(this.failure(`QEMU exited (code ${this.#exitStatus.code}) before ${what}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(this.failure(`Timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  async #pump(stream: ReadableStream<Uint8Array>, prefix = ""): Promise<void> {
    let pending = "";
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        pending += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          this.#line(prefix + pending.slice(0, newline).replace(/\r$/, ""), prefix === "");
          pending = pending.slice(newline + 1);
        }
      }
    } catch { /* stream closed by kill */ }
    if (pending !== "") this.#line(prefix + pending, prefix === "");
  }

  #line(line: string, fromSerial: boolean): void {
    if (fromSerial) this.serialLineCount++;
    this.#tail.push(line);
    if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    // Kernel messages may share a line with ours: look for the marker anywhere.
    const markAt = line.indexOf(MARK_PREFIX);
    const doneAt = line.indexOf(DONE_PREFIX);
    const bootedAt = line.indexOf(BOOTED_PREFIX);
    if (markAt >= 0) {
      const rest = line.slice(markAt + MARK_PREFIX.length).trim();
      const space = rest.indexOf(" ");
      this.marks.push(
        space < 0
          ? { name: rest, value: "" }
          : { name: rest.slice(0, space), value: rest.slice(space + 1).trim() },
      );
    } else if (doneAt >= 0) {
      this.doneStatus = Number.parseInt(line.slice(doneAt + DONE_PREFIX.length), 10);
    } else if (bootedAt >= 0) {
      this.bootedAtUptime = Number.parseFloat(line.slice(bootedAt + BOOTED_PREFIX.length));
      this.bootMs = performance.now() - this.#startedAt;
    }
    this.#onLine?.(line);
    this.#wake();
  }
}
