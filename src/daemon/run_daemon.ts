/**
 * The serving process (foreground, or the detached child): sets up logging, takes
 * the socket (inherited listener, inherited `--fd` connection, or binds its own),
 * writes the pid file, reports ready, serves frontends, and on SIGINT/SIGTERM or the
 * end of a one-off session shuts down cleanly: session closed, socket file and pid
 * file removed, exit 0.
 *
 * @module
 */

import { removeFile } from "../../ffi/output_file.ts";
import { signalDaemonReady } from "../../ffi/process.ts";
import { SignalEvent } from "../../ffi/signal_event.ts";
import { UnixListener } from "../../ffi/unix_listener.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import type { Config } from "../config/config.ts";
import { log, type LogSink } from "../log/logger.ts";
import { EventLoop, monotonicNow } from "../loop/event_loop.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import { printQemuHint } from "./announce.ts";
import { adoptConnectedSocket } from "./inherited_socket.ts";
import { FrontendServer } from "./frontend_server.ts";
import { fileOptionError } from "./file_error.ts";
import {
  discardSink,
  levelFilter,
  LogFile,
  statusSink,
  stderrSink,
  stderrTimestamps,
  teeSink,
} from "./logging.ts";
import { collectStats, formatStatsJson, formatStatsText, StatsReporter } from "./stats.ts";
import { SyslogSink } from "./syslog_sink.ts";
import { STATS_SIGNAL } from "./stats_signal.ts";
import { removePidFile, writePidFile } from "./pid_file.ts";
import { buildDaemonNetwork } from "./network_wiring.ts";
import { bindSocket } from "./socket_path.ts";
import { defaultRepairPath, RepairHelperServer } from "./repair_helper.ts";
import {
  MEMORY_CHECK_MS,
  MemoryRelease,
  releaseMemory,
  STARTUP_RELEASE_MS,
} from "./memory_release.ts";

/**
 * How long the event loop waits for the next events on the JS thread after a batch
 * (EventLoopOptions.hotWaitMs) before handing the wait to a worker thread; Deno's
 * timers get a turn every DENO_TURN_INTERVAL_MS (10 ms) meanwhile. As long as that
 * interval: under a transfer the guest's next kick often comes more than 1 ms later,
 * and each hand-off costs a worker thread's wake-up (README, design note "One
 * thread, two event sources").
 */
const HOT_WAIT_MS = 10;

/** Signals that shut the daemon down cleanly. */
const SHUTDOWN_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** Resources to release at shutdown, in reverse order of acquisition. */
class Cleanup {
  readonly #steps: { what: string; run: () => void }[] = [];

  add(what: string, run: () => void): void {
    this.#steps.push({ what, run });
  }

  runAll(): void {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!;
      try {
        step.run();
      } catch (error) {
        log.warn(`Cannot ${step.what}: ${error instanceof Error ? error.message : error}`);
      }
    }
  }
}

/**
 * Runs the daemon in this process until it is told to stop; resolves to the exit code.
 * `detached` is true in the child started by {@link daemonize}.
 */
export async function runDaemon(config: Config, detached: boolean): Promise<number> {
  const cleanup = new Cleanup();
  const timestamps = stderrTimestamps(config.log.level);
  const foregroundSink = stderrSink(timestamps);
  // In the background without -l, lines go to the system logger, as passt's do.
  const syslog = detached && config.log.file === null ? new SyslogSink() : null;
  if (syslog !== null) cleanup.add("close the system logger socket", () => syslog.close());
  cleanup.add("reset logging", () => log.setSink(detached ? discardSink : foregroundSink));
  let status: UnixStream | null = null;
  if (detached && config.internal.statusFd !== null) {
    status = UnixStream.fromFd(config.internal.statusFd);
    cleanup.add("close the status socket", () => status?.close());
    log.setSink(statusSink(status, timestamps)); // so that a log file error reaches the parent
  }

  // Logging: file if asked; else stderr in the foreground; the parent until ready if detached.
  let fileSink: LogSink | null = null;
  if (config.log.file !== null) {
    try {
      const file = new LogFile(config.log.file, config.log.maxSize, false);
      cleanup.add("close the log file", () => file.close());
      fileSink = file.safeSink;
    } catch (error) {
      log.error(fileOptionError("log-file", config.log.file, "open the log file", error).message);
      cleanup.runAll();
      return 1;
    }
  }
  const steadySink: LogSink = fileSink ??
    (detached ? (syslog?.sink ?? discardSink) : foregroundSink);
  // Until ready, the parent shows what happens: everything, or with a log file only
  // warnings and errors (the rest is in the file).
  log.setSink(
    status === null
      ? steadySink
      : fileSink === null
      ? teeSink(statusSink(status, timestamps), steadySink)
      : teeSink(levelFilter("warn", statusSink(status, timestamps)), fileSink),
  );
  // Untrusted input must never crash the daemon: an exception escaping a callback or
  // an unhandled rejection is logged (rate-limited) instead of ending the process.
  const escaped = new RateLimitedLog("error");
  const onError = (event: ErrorEvent) => {
    event.preventDefault();
    escaped.write(
      monotonicNow(),
      `Uncaught exception: ${describeWithStack(event.error ?? event.message)}`,
    );
  };
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    escaped.write(
      monotonicNow(),
      `Unhandled promise rejection: ${describeWithStack(event.reason)}`,
    );
  };
  globalThis.addEventListener("error", onError);
  globalThis.addEventListener("unhandledrejection", onRejection);
  cleanup.add("remove the error handlers", () => {
    globalThis.removeEventListener("error", onError);
    globalThis.removeEventListener("unhandledrejection", onRejection);
  });

  for (const note of config.notes) log.write(note.level, note.message);
  if (config.runas !== null) {
    log.info(`--runas ${config.runas} ignored: tpasst never changes user (it needs no privileges)`);
  }

  let loop: EventLoop;
  let server = null as FrontendServer | null;
  let socketPath: string | null = null;
  let listener: UnixListener | null = null;
  try {
    // Signals are handled before the socket listens: a frontend (or test) may signal at once.
    let signalled: Deno.Signal | null = null;
    const onSignal = (signal: Deno.Signal) => () => {
      if (signalled !== null) return;
      signalled = signal;
      log.info(`${signal} received: shutting down`);
      if (server !== null) void server.stop();
    };
    const handlers = SHUTDOWN_SIGNALS.map((signal) => ({ signal, handler: onSignal(signal) }));
    for (const { signal, handler } of handlers) Deno.addSignalListener(signal, handler);
    cleanup.add("remove the signal handlers", () => {
      for (const { signal, handler } of handlers) Deno.removeSignalListener(signal, handler);
    });

    // The socket first, so that a busy path fails before host discovery.
    let connection: UnixStream | null = null;
    if (config.fd !== null) {
      connection = adoptConnectedSocket(config.fd);
      const owned = connection;
      cleanup.add("close the --fd connection", () => owned.close());
    } else {
      if (config.internal.listenFd !== null) {
        listener = UnixListener.fromFd(config.internal.listenFd);
        socketPath = config.socketPath;
      } else {
        const bound = bindSocket(config.socketPath);
        listener = bound.listener;
        socketPath = bound.path;
      }
      const owned = listener;
      const path = socketPath;
      cleanup.add("remove the socket file", () => {
        owned.close();
        if (path !== null) removeFile(path);
      });
    }

    loop = new EventLoop({ hotWaitMs: HOT_WAIT_MS });
    cleanup.add("close the event loop", () => loop.close());
    // vhost-user: the socket a passt-repair helper connects to (TCP_REPAIR in migrations)
    let repair: RepairHelperServer | null = null;
    const repairPath = config.migration.repairPath ??
      (socketPath !== null ? defaultRepairPath(socketPath) : null);
    if (config.mode === "vhost-user" && !config.migration.repairDisabled && repairPath !== null) {
      try {
        const helperServer = new RepairHelperServer(repairPath, loop, log);
        repair = helperServer;
        cleanup.add("close the TCP_REPAIR helper socket", () => helperServer.close());
      } catch (error) {
        log.warn(
          `Cannot listen for a TCP_REPAIR helper on ${repairPath}: ${
            describe(error)
          }; migrating TCP connections needs CAP_NET_ADMIN then`,
        );
      }
    }
    const network = buildDaemonNetwork(config, loop, {
      repair: repair ?? undefined,
      // after the reply to CHECK_DEVICE_STATE has gone out
      onMigratedAway: () => setTimeout(() => void server?.stop(), 0),
    });
    cleanup.add("close the capture file", () => network.close());
    // RSS is read only around a release, not at every sample.
    const release = (why: string) => {
      const before = Deno.memoryUsage().rss;
      const t0 = monotonicNow();
      releaseMemory();
      log.debug(
        `memory released ${why}: RSS ${(before / 1048576).toFixed(1)} → ` +
          `${(Deno.memoryUsage().rss / 1048576).toFixed(1)} MiB in ` +
          `${(monotonicNow() - t0).toFixed(1)} ms`,
      );
    };
    const memory = new MemoryRelease(network.stack, () => release("after a burst of flows"));
    const startupRelease = setTimeout(() => {
      try {
        release("after start-up");
      } catch (error) {
        log.warn(`Cannot release memory: ${describe(error)}`);
      }
    }, STARTUP_RELEASE_MS);
    cleanup.add("cancel the start-up memory release", () => clearTimeout(startupRelease));
    const memoryTimer = setInterval(() => {
      try {
        memory.tick();
      } catch (error) {
        log.warn(`Cannot release memory: ${describe(error)}`);
      }
    }, MEMORY_CHECK_MS);
    cleanup.add("stop the memory release", () => clearInterval(memoryTimer));
    const startedAt = monotonicNow();
    const statsJson = () => formatStatsJson(collectStats(network.stack, monotonicNow(), startedAt));
    const onStatsSignal = () => {
      try {
        const snapshot = collectStats(network.stack, monotonicNow(), startedAt);
        log.info(`${STATS_SIGNAL} received: statistics`);
        for (const line of formatStatsText(snapshot)) log.info(line);
        log.info(formatStatsJson(snapshot));
      } catch (error) {
        log.warn(`Cannot dump statistics: ${describe(error)}`);
      }
    };
    const statsSignal = SignalEvent.take(STATS_SIGNAL);
    loop.watch(statsSignal.fd, () => {
      if (statsSignal.drain() > 0) onStatsSignal();
    });
    cleanup.add("stop watching the statistics signal", () => loop.unwatch(statsSignal.fd));
    if (config.statsDelay !== null) {
      // --stats: straight to standard error (the foreground's), whatever the log level.
      const reporter = new StatsReporter(network.stack, (line) => {
        try {
          Deno.stderr.writeSync(new TextEncoder().encode(`${line}\n`));
        } catch {
          // Standard error is gone: nothing left to show statistics on.
        }
      }, statsJson);
      const timer = setInterval(() => reporter.tick(), config.statsDelay * 1000);
      cleanup.add("stop the statistics", () => clearInterval(timer));
    }
    server = new FrontendServer(loop, network.sessionFactory, config.oneOff);
    if (connection !== null) {
      if (!server.serveConnection(connection)) {
        throw new Error(`Cannot serve the frontend on --fd ${config.fd}`);
      }
    } else if (listener !== null) {
      server.listen(listener);
    }
    if (signalled !== null) void server.stop();

    if (config.pidFile !== null) {
      const pidFile = config.pidFile;
      try {
        writePidFile(pidFile, Deno.pid);
      } catch (error) {
        throw fileOptionError("pid", pidFile, "write the pid file", error);
      }
      cleanup.add(`remove the pid file ${pidFile}`, () => removePidFile(pidFile));
    }
    // Last, so that whoever waits for this line finds the pid file written.
    if (socketPath !== null) printQemuHint(config.mode, socketPath);
  } catch (error) {
    log.error(describe(error));
    cleanup.runAll();
    return 1;
  }

  if (config.internal.readyFd !== null) {
    log.debug(`Ready (pid ${Deno.pid})`);
    log.setSink(steadySink);
    status?.close();
    if (!signalDaemonReady(config.internal.readyFd)) {
      log.warn("The daemonizing parent went away before the daemon was ready");
    }
  }

  let loopFailed = false;
  const loopDone = loop.run().catch((error) => {
    loopFailed = true;
    log.error(`Event loop failed: ${describe(error)}`);
    void server.stop();
  });
  const reason = await server.finished;
  await server.stop();
  log.info(reason === "one-off" ? "Exiting after the one-off frontend" : "Shut down");
  loop.stop();
  await loopDone;
  log.debug(loop.describeCounters());
  cleanup.runAll();
  return loopFailed ? 1 : 0;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** An escaped error with its stack, for finding the bug behind it. */
function describeWithStack(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}
