/**
 * Helpers for process-level tests of bin/tpasst: run it, start it in the
 * foreground, hand it an inherited connected socket as fd 3 (like QEMU's
 * `-netdev passt`), and observe its process, files and sockets.
 *
 * @module
 */

import { UnixListener } from "../../ffi/unix_listener.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";

/** The launcher under test. */
export const TPASST: string = new URL("../../bin/tpasst", import.meta.url).pathname;

const decoder = new TextDecoder();

/** Exit code and output of a finished tpasst run. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `bin/tpasst args` to completion. */
export async function runTpasst(args: string[]): Promise<RunResult> {
  const output = await new Deno.Command(TPASST, { args, stdin: "null" }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Perl (perl-base is essential on Debian) connects to `path`, makes that connection
 * fd 3 and execs the rest of its arguments: exactly what QEMU does for
 * `-netdev passt` with one end of a socketpair.
 */
const FD3_LAUNCHER = `
use IO::Socket::UNIX; use POSIX ();
$^F = 10;  # keep fds up to 10 open across exec
my $path = shift;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path) or die "connect $path: $!";
if (fileno($s) != 3) { POSIX::dup2(fileno($s), 3) or die "dup2: $!"; close($s); }
exec { $ARGV[0] } @ARGV or die "exec: $!";
`;

/**
 * Runs `bin/tpasst args` with a connected unix socket as its fd 3, like QEMU's
 * `-netdev passt`; returns the run's result and our end of the connection.
 */
export async function runTpasstWithFd3(
  dir: string,
  args: string[],
): Promise<{ result: RunResult; peer: UnixStream }> {
  const rendezvous = `${dir}/fd3.sock`;
  const listener = UnixListener.listen(rendezvous);
  try {
    const child = new Deno.Command("perl", {
      args: ["-e", FD3_LAUNCHER, rendezvous, TPASST, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const peer = await waitFor("the launcher's connection", () => listener.accept());
    const output = await child.output();
    return {
      result: {
        code: output.code,
        stdout: decoder.decode(output.stdout),
        stderr: decoder.decode(output.stderr),
      },
      peer,
    };
  } finally {
    listener.close();
    await Deno.remove(rendezvous).catch(() => {});
  }
}

/** A tpasst started in the foreground (`-f`) as a child of the test. */
export class ForegroundTpasst {
  readonly process: Deno.ChildProcess;
  #stderr = "";
  readonly #reading: Promise<void>;

  constructor(args: string[]) {
    const process = new Deno.Command(TPASST, {
      args: ["-f", ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.process = process;
    this.#reading = (async () => {
      for await (const chunk of process.stderr) this.#stderr += decoder.decode(chunk);
    })();
  }

  /** Everything written to standard error so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Waits until standard error matches `pattern`; returns the match. */
  waitForStderr(pattern: RegExp, what: string): Promise<RegExpMatchArray> {
    return waitFor(what, () => this.#stderr.match(pattern));
  }

  /** Waits for exit; returns the exit code and the full standard error. */
  async exit(): Promise<{ code: number; stderr: string }> {
    const status = await this.process.status;
    await this.#reading;
    return { code: status.code, stderr: this.#stderr };
  }
}

/** Longest a test waits for something the daemon should do promptly. */
export const WAIT_LIMIT_MS = 15_000;

/**
 * Polls `probe` until it returns a value other than null/undefined/false, or fails
 * after {@link WAIT_LIMIT_MS} naming `what`.
 */
export async function waitFor<T>(
  what: string,
  probe: () => T | null | undefined | false,
): Promise<T> {
  const deadline = performance.now() + WAIT_LIMIT_MS;
  for (;;) {
    const value = probe();
    if (value !== null && value !== undefined && value !== false) return value;
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** How long a process's fd count must stay unchanged to count as settled. */
const FD_SETTLE_MS = 300;

/**
 * The fd count of process `pid` once it has stayed the same for {@link FD_SETTLE_MS}
 * (a daemon whose socket just appeared may still be opening the rest of its start-up
 * fds, later on a loaded machine); fails after {@link WAIT_LIMIT_MS}.
 */
export async function settledFdCount(pid: number): Promise<number> {
  const deadline = performance.now() + WAIT_LIMIT_MS;
  let count = processFdCount(pid);
  let since = performance.now();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = processFdCount(pid);
    if (now !== count) {
      count = now;
      since = performance.now();
    } else if (performance.now() - since >= FD_SETTLE_MS) {
      return count;
    }
    if (performance.now() > deadline) throw new Error(`fd count of ${pid} never settled`);
  }
}

/** Tells whether `path` exists (without following a final symlink). */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Tells whether process `pid` runs (exists and is not a zombie). */
export function processAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** The command line of process `pid`, arguments joined by spaces ("" if gone). */
export function processCommandLine(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").join(" ").trim();
  } catch {
    return "";
  }
}

/** Number of open fds of process `pid`. */
export function processFdCount(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/** The pids of running processes whose command line contains `marker`. */
export function findProcesses(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^[0-9]+$/.test(entry.name)) continue;
    const pid = Number(entry.name);
    if (pid !== Deno.pid && processCommandLine(pid).includes(marker) && processAlive(pid)) {
      pids.push(pid);
    }
  }
  return pids;
}

/** Reads the pid written to `path`. */
export function readPidFile(path: string): number {
  const text = Deno.readTextFileSync(path);
  if (!/^[0-9]+\n$/.test(text)) throw new Error(`pid file ${path} holds ${JSON.stringify(text)}`);
  return Number(text);
}

/** Waits until `stream` reports end of file (the daemon closed its end). */
export function waitForEof(stream: UnixStream, what: string): Promise<true> {
  stream.setNonBlocking(true);
  const buffer = new Uint8Array(4096);
  return waitFor(what, () => {
    try {
      return stream.recv(buffer) === 0;
    } catch {
      return true; // ECONNRESET: closed as well
    }
  });
}

/**
 * Tells whether the far end of `stream` is still open: reads (and discards) whatever
 * is pending, e.g. router advertisements the stack sends on link-up, and reports
 * false only on end of file or a reset.
 */
export function stillOpen(stream: UnixStream): boolean {
  stream.setNonBlocking(true);
  const buffer = new Uint8Array(65536);
  try {
    for (;;) {
      const n = stream.recv(buffer);
      if (n === 0) return false;
      if (n < 0) return true;
    }
  } catch {
    return false;
  }
}

/** Sends SIGTERM to every process whose command line contains `marker` (test clean-up). */
export function killProcesses(marker: string): void {
  for (const pid of findProcesses(marker)) {
    try {
      Deno.kill(pid, "SIGTERM");
    } catch {
      // Already gone.
    }
  }
}

/** Makes a short temporary directory (socket paths must stay under 108 bytes). */
export function makeTempDir(): Promise<string> {
  return Deno.makeTempDir({ dir: "/tmp", prefix: "tpcli" });
}
