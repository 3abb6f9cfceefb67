/**
 * The daemon's side of a vhost-user live migration: the {@link DeviceStateHandler}
 * behind `SET_DEVICE_STATE_FD` and `CHECK_DEVICE_STATE`, between the vhost-user
 * session and the network stack.
 *
 * Source ("save"): the TCP connections are frozen (their sockets in TCP repair
 * mode) and dumped with what the stack learnt about the guest, encoded
 * (src/net/migration_state.ts), and written into QEMU's pipe without blocking the
 * event loop: whatever the pipe does not take at once waits for it to drain. The
 * pipe is closed at the end. A successful `CHECK_DEVICE_STATE` means the migration
 * completed: with `--migrate-no-linger` the frozen sockets are closed at once (in
 * repair mode: no FIN, no RST, so a target on the same machine can take the same
 * addresses); otherwise they stay frozen and silent until this front-end leaves.
 * With `--migrate-exit` the daemon then exits. If instead the rings start again
 * (QEMU cancelled the migration and resumes the guest here), the frozen
 * connections leave repair mode and carry on as before, before the link comes up.
 *
 * Target ("load"): the pipe is read on the event loop up to MAX_STATE_BYTES; at its
 * end of file the state is decoded and validated, the guest's addresses restored
 * and the connections rebuilt. `CHECK_DEVICE_STATE` finishes a read still under way
 * (QEMU closed its end before asking) and reports the outcome: any problem — a
 * truncated, oversized or altered stream — fails it with the reason logged. QEMU
 * 10 sends the state before the memory table and the rings: restored connections
 * keep their host data in their sockets until the guest's RX ring exists.
 *
 * @module
 */

import { PIPE_WOULD_BLOCK, PipeEnd } from "../../ffi/pipe_end.ts";
import type { Logger } from "../log/logger.ts";
import { EVENT_ERROR, EVENT_HANGUP, EVENT_READABLE, EVENT_WRITABLE } from "../loop/event_loop.ts";
import type { EventLoop } from "../loop/event_loop.ts";
import { MAC_BROADCAST, macToString } from "../net/wire/address.ts";
import type { GuestSender } from "../net/guest_sender.ts";
import {
  decodeMigrationState,
  encodeMigrationState,
  MAX_STATE_BYTES,
  type MigratedGuest,
  type MigrationState,
} from "../net/migration_state.ts";
import type { RepairSwitch } from "../net/tcp/repair.ts";
import type { TcpTranslator } from "../net/tcp/translator.ts";
import type {
  DeviceStateDirection,
  DeviceStateHandler,
} from "../vhost_user/backend_environment.ts";
import { ipv4ToString } from "../../ffi/ip_address_text.ts";

/** Bytes read from the pipe per read call. */
const READ_CHUNK = 64 * 1024;

/** What the controller works on. */
export interface MigrationOptions {
  /** The stack's frame builder: what was learnt about the guest. */
  readonly sender: GuestSender;
  /** The TCP translator (null with TCP disabled). */
  readonly tcp: TcpTranslator | null;
  readonly loop: EventLoop;
  /** Switches TCP repair mode (the passt-repair helper, or directly). */
  readonly repair: RepairSwitch;
  /** `--migrate-no-linger`: close migrated sockets as soon as the migration completed. */
  readonly noLinger: boolean;
  /** Called once a migration as source completed, when the daemon should exit (`--migrate-exit`). */
  readonly onMigratedAway?: () => void;
  readonly log: Logger;
  /** The clock for restored flows (default performance.now). */
  readonly clock?: () => number;
  /** Longest state stream read (default MAX_STATE_BYTES; tests lower it). */
  readonly maxStateBytes?: number;
}

type Transfer =
  | { kind: "idle" }
  | { kind: "saving"; pipe: PipeEnd; bytes: Uint8Array; at: number }
  | { kind: "loading"; pipe: PipeEnd; chunks: Uint8Array[]; size: number }
  | { kind: "done"; direction: DeviceStateDirection; failure: string | null };

/** Saves and loads the device state; see the module comment. */
export class MigrationController implements DeviceStateHandler {
  readonly #o: MigrationOptions;
  #transfer: Transfer = { kind: "idle" };
  /** Set between a completed save and the front-end's departure (flows stay frozen). */
  #migratedAway = false;

  constructor(options: MigrationOptions) {
    this.#o = options;
  }

  /** The outcome of the last transfer, for tests and logs ("idle" before any). */
  get status(): string {
    const t = this.#transfer;
    if (t.kind !== "done") return t.kind;
    return t.failure === null ? `${t.direction} done` : `${t.direction} failed: ${t.failure}`;
  }

  begin(direction: DeviceStateDirection, fd: number, _now: number): void {
    this.#abandon("a new transfer started");
    const pipe = PipeEnd.adopt(fd);
    if (direction === "save") this.#startSave(pipe);
    else this.#startLoad(pipe);
  }

  check(now: number): string | null {
    const t = this.#transfer;
    if (t.kind === "idle") return "no device state transfer took place";
    if (t.kind === "loading") this.#finishLoadNow(now);
    if (t.kind === "saving") {
      this.#abandon("the front-end asked for the outcome before the state was written");
    }
    const done = this.#transfer;
    if (done.kind !== "done") return "the transfer did not end";
    if (done.direction === "save" && done.failure === null) this.#completedAsSource();
    return done.failure;
  }

  /**
   * The rings are about to start. After a save that QEMU then cancelled (the guest
   * resumes here), the frozen connections carry on first.
   */
  beforeLinkUp(now: number): void {
    const tcp = this.#o.tcp;
    if (tcp === null || tcp.frozenFlows === 0) return;
    this.#abandon("the rings started again");
    const count = tcp.frozenFlows;
    const failures = tcp.thawMigrated(this.#o.repair, now);
    for (const line of failures) this.#o.log.warn(`migration: ${line}`);
    this.#o.log.info(
      `migration: cancelled; ${count} TCP connection(s) left repair mode and carry on here`,
    );
    this.#migratedAway = false;
  }

  /** The vhost-user front-end left: after a completed migration its frozen connections go. */
  sessionEnded(): void {
    this.#abandon("the front-end left");
    const tcp = this.#o.tcp;
    if (tcp !== null && tcp.frozenFlows > 0) {
      const count = tcp.frozenFlows;
      tcp.dropMigrated();
      this.#o.log.info(`migration: ${count} migrated TCP connection(s) closed silently`);
    }
    this.#migratedAway = false;
  }

  /** Ends a transfer under way (its pipe closed), recording why; a save rolls back. */
  #abandon(why: string): void {
    const t = this.#transfer;
    if (t.kind !== "saving" && t.kind !== "loading") return;
    this.#stopWatching(t.pipe);
    t.pipe.close();
    const direction: DeviceStateDirection = t.kind === "saving" ? "save" : "load";
    this.#fail(direction, `transfer abandoned: ${why}`);
  }

  #stopWatching(pipe: PipeEnd): void {
    if (pipe.fd >= 0 && this.#o.loop.isWatching(pipe.fd)) this.#o.loop.unwatch(pipe.fd);
  }

  #fail(direction: DeviceStateDirection, failure: string): void {
    this.#transfer = { kind: "done", direction, failure };
    this.#o.log.error(`migration: ${direction} failed: ${failure}`);
    if (direction === "save") {
      const tcp = this.#o.tcp;
      if (tcp !== null && tcp.frozenFlows > 0) {
        const failures = tcp.thawMigrated(this.#o.repair, this.#now());
        for (const line of failures) this.#o.log.warn(`migration: ${line}`);
      }
    }
  }

  #now(): number {
    return this.#o.clock ? this.#o.clock() : performance.now();
  }

  // ---------------------------------------------------------------- source

  #guestSeen(): MigratedGuest {
    const s = this.#o.sender;
    return {
      mac: s.guestMac === MAC_BROADCAST ? null : s.guestMac,
      ipv4: s.guestIpv4Seen,
      ipv6: s.guestIpv6Seen?.slice() ?? null,
      ipv6LinkLocal: s.guestIpv6LinkLocalSeen?.slice() ?? null,
    };
  }

  #startSave(pipe: PipeEnd): void {
    let bytes: Uint8Array;
    try {
      const tcp = this.#o.tcp;
      const frozen = tcp?.freezeForMigration(this.#o.repair);
      for (const line of frozen?.failures ?? []) this.#o.log.error(`migration: ${line}`);
      const state: MigrationState = {
        guest: this.#guestSeen(),
        tcp: frozen?.frozen.map((z) => z.record) ?? [],
      };
      bytes = encodeMigrationState(state);
      this.#o.log.info(
        `migration: saving the device state: ${state.tcp.length} TCP connection(s), ${bytes.length} bytes`,
      );
    } catch (error) {
      pipe.close();
      this.#fail("save", `cannot build the state: ${(error as Error).message}`);
      return;
    }
    const transfer: Transfer = { kind: "saving", pipe, bytes, at: 0 };
    this.#transfer = transfer;
    this.#writeSome(transfer);
    if (this.#transfer === transfer) {
      this.#o.loop.watch(pipe.fd, () => this.#writeSome(transfer), EVENT_WRITABLE);
    }
  }

  /** Writes what the pipe takes now; at the end closes it. */
  #writeSome(t: Extract<Transfer, { kind: "saving" }>): void {
    if (this.#transfer !== t) return;
    try {
      while (t.at < t.bytes.length) {
        const n = t.pipe.write(t.bytes.subarray(t.at));
        if (n === PIPE_WOULD_BLOCK) return; // the loop calls again once it drains
        t.at += n;
      }
    } catch (error) {
      this.#stopWatching(t.pipe);
      t.pipe.close();
      this.#fail("save", `cannot write the state: ${(error as Error).message}`);
      return;
    }
    this.#stopWatching(t.pipe);
    t.pipe.close();
    this.#transfer = { kind: "done", direction: "save", failure: null };
    this.#o.log.info(`migration: device state written (${t.bytes.length} bytes)`);
  }

  #completedAsSource(): void {
    if (this.#migratedAway) return;
    this.#migratedAway = true;
    const tcp = this.#o.tcp;
    const count = tcp?.frozenFlows ?? 0;
    if (this.#o.noLinger && tcp !== null && count > 0) {
      tcp.dropMigrated();
      this.#o.log.info(
        `migration: complete; ${count} migrated TCP connection(s) closed without FIN or RST`,
      );
    } else {
      this.#o.log.info(
        `migration: complete; ${count} migrated TCP connection(s) stay silent until the front-end leaves`,
      );
    }
    if (this.#o.onMigratedAway) {
      this.#o.log.info("migration: complete, exiting (--migrate-exit)");
      this.#o.onMigratedAway();
    }
  }

  // ---------------------------------------------------------------- target

  #startLoad(pipe: PipeEnd): void {
    const transfer: Transfer = { kind: "loading", pipe, chunks: [], size: 0 };
    this.#transfer = transfer;
    this.#o.loop.watch(
      pipe.fd,
      (_events, now) => this.#readSome(transfer, now),
      (EVENT_READABLE | EVENT_HANGUP | EVENT_ERROR) >>> 0,
    );
  }

  /**
   * Reads what the pipe has; at its end of file decodes and applies the state.
   * @returns whether the pipe would block (the transfer goes on)
   */
  #readSome(t: Extract<Transfer, { kind: "loading" }>, now: number): boolean {
    if (this.#transfer !== t) return false;
    try {
      for (;;) {
        const chunk = new Uint8Array(READ_CHUNK);
        const n = t.pipe.read(chunk);
        if (n === PIPE_WOULD_BLOCK) return true;
        if (n === 0) break;
        t.size += n;
        const limit = this.#o.maxStateBytes ?? MAX_STATE_BYTES;
        if (t.size > limit) throw new Error(`the stream exceeds the limit of ${limit} bytes`);
        t.chunks.push(n === READ_CHUNK ? chunk : chunk.slice(0, n));
      }
    } catch (error) {
      this.#stopWatching(t.pipe);
      t.pipe.close();
      this.#fail("load", (error as Error).message);
      return false;
    }
    this.#stopWatching(t.pipe);
    t.pipe.close();
    const bytes = new Uint8Array(t.size);
    let at = 0;
    for (const c of t.chunks) {
      bytes.set(c, at);
      at += c.length;
    }
    this.#apply(bytes, now);
    return false;
  }

  /** CHECK_DEVICE_STATE came while reading: the front-end has closed its end, so finish. */
  #finishLoadNow(now: number): void {
    const t = this.#transfer;
    if (t.kind !== "loading") return;
    if (this.#readSome(t, now)) {
      this.#abandon("the stream did not end (the front-end's end is still open)");
    }
  }

  #apply(bytes: Uint8Array, now: number): void {
    let state: MigrationState;
    try {
      state = decodeMigrationState(bytes);
    } catch (error) {
      this.#fail("load", (error as Error).message);
      return;
    }
    const s = this.#o.sender;
    const g = state.guest;
    if (g.mac !== null) s.guestMac = g.mac;
    if (g.ipv4 !== 0) s.guestIpv4Seen = g.ipv4;
    if (g.ipv6 !== null) s.guestIpv6Seen = g.ipv6;
    if (g.ipv6LinkLocal !== null) s.guestIpv6LinkLocalSeen = g.ipv6LinkLocal;
    const tcp = this.#o.tcp;
    let restored = 0;
    if (state.tcp.length > 0) {
      if (tcp === null) {
        this.#o.log.warn(
          `migration: ${state.tcp.length} TCP connection(s) dropped: TCP is disabled`,
        );
      } else {
        const outcome = tcp.restoreMigrated(state.tcp, this.#o.repair, now);
        restored = outcome.restored;
        for (const line of outcome.failures) this.#o.log.error(`migration: ${line}`);
      }
    }
    this.#transfer = { kind: "done", direction: "load", failure: null };
    this.#o.log.info(
      `migration: device state loaded (${bytes.length} bytes): guest ${
        g.mac === null ? "MAC not seen" : macToString(g.mac)
      }${
        g.ipv4 !== 0 ? ` ${ipv4ToString(g.ipv4)}` : ""
      }, ${restored} of ${state.tcp.length} TCP connection(s) restored`,
    );
  }
}
