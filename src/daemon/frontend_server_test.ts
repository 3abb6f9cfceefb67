import { EventFd } from "../../ffi/event_fd.ts";
import { UnixListener } from "../../ffi/unix_listener.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import { openFdCount } from "../../ffi/process.ts";
import { log, type LogLevel, stderrSink } from "../log/logger.ts";
import { EventLoop } from "../loop/event_loop.ts";
import { assertEquals, assertTrue } from "../../tests/support/assert.ts";
import type { FrontendSession, SessionFactory } from "../tap/frontend_session.ts";
import { FrontendServer } from "./frontend_server.ts";
import { discardSessionFactory } from "../../tests/support/daemon/discard_session.ts";
import { waitUntil } from "../../tests/support/wait_until.ts";

/** Polls `probe` until true (fails after 10 s); yields to the loop in between. */

/** True once the peer closed `stream` (EOF or reset). */
function closedByPeer(stream: UnixStream): boolean {
  stream.setNonBlocking(true);
  try {
    return stream.recv(new Uint8Array(64)) === 0;
  } catch {
    return true;
  }
}

interface Fixture {
  dir: string;
  path: string;
  loop: EventLoop;
  listener: UnixListener;
  sessions: FrontendSession[];
  factory: SessionFactory;
  logLines: string[];
  running: Promise<void>;
}

async function setUp(): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpsrv" });
  const path = `${dir}/s.sock`;
  const loop = new EventLoop();
  const listener = UnixListener.listen(path);
  const sessions: FrontendSession[] = [];
  const inner = discardSessionFactory("test");
  const factory: SessionFactory = (connection, l) => {
    const session = inner(connection, l);
    sessions.push(session);
    return session;
  };
  const logLines: string[] = [];
  log.setSink((_level: LogLevel, line: string) => logLines.push(line));
  return { dir, path, loop, listener, sessions, factory, logLines, running: loop.run() };
}

async function tearDown(f: Fixture): Promise<void> {
  f.loop.close();
  await f.running;
  f.listener.close();
  await Deno.remove(f.dir, { recursive: true });
  log.setSink(stderrSink);
}

Deno.test("FrontendServer.listen() serves one frontend at a time, then the next", async () => {
  const f = await setUp();
  try {
    const server = new FrontendServer(f.loop, f.factory, false);
    server.listen(f.listener);
    const first = UnixStream.connect(f.path);
    await waitUntil("the first session", () => f.sessions.length === 1);
    const second = UnixStream.connect(f.path);
    await waitUntil("the second connection to be refused", () => closedByPeer(second));
    assertEquals([server.sessionsServed, server.refused], [1, 1]);
    assertTrue(f.logLines.some((l) => l.includes("Refusing a second frontend")));
    assertTrue(!closedByPeer(first));
    first.close();
    await f.sessions[0].closed;
    const third = UnixStream.connect(f.path);
    await waitUntil("the third session", () => f.sessions.length === 2);
    assertTrue(!closedByPeer(third));
    second.close();
    third.close();
    await f.sessions[1].closed;
    await server.stop();
    assertEquals(await server.finished, "stopped");
  } finally {
    await tearDown(f);
  }
});

Deno.test("FrontendServer finishes with 'one-off' when the first frontend leaves", async () => {
  const f = await setUp();
  try {
    const server = new FrontendServer(f.loop, f.factory, true);
    server.listen(f.listener);
    const frontend = UnixStream.connect(f.path);
    await waitUntil("the session", () => f.sessions.length === 1);
    frontend.close();
    assertEquals(await server.finished, "one-off");
  } finally {
    await tearDown(f);
  }
});

Deno.test("FrontendServer.stop() closes the active session and its connection", async () => {
  const f = await setUp();
  try {
    const server = new FrontendServer(f.loop, f.factory, false);
    const [ours, theirs] = UnixStream.pair();
    assertTrue(server.serveConnection(theirs));
    await server.stop();
    assertTrue(closedByPeer(ours), "the session did not close its connection");
    assertEquals(await server.finished, "stopped");
    assertEquals(f.loop.size, 0);
    ours.close();
  } finally {
    await tearDown(f);
  }
});

Deno.test("FrontendServer.serveConnection() closes the connection if the factory throws", async () => {
  const f = await setUp();
  try {
    const failing: SessionFactory = () => {
      throw new Error("no memory for the session");
    };
    const server = new FrontendServer(f.loop, failing, true);
    const [ours, theirs] = UnixStream.pair();
    assertEquals(server.serveConnection(theirs), false);
    assertEquals(theirs.fd, -1);
    assertTrue(closedByPeer(ours));
    assertEquals(await server.finished, "one-off");
    assertTrue(f.logLines.some((l) => l.includes("no memory for the session")));
    ours.close();
  } finally {
    await tearDown(f);
  }
});

Deno.test("FrontendServer leaves no descriptor behind over many sessions", async () => {
  const f = await setUp();
  try {
    const server = new FrontendServer(f.loop, f.factory, false);
    server.listen(f.listener);
    const cycle = async () => {
      const frontend = UnixStream.connect(f.path);
      await waitUntil("a session", () => f.sessions.length > 0);
      frontend.send(new Uint8Array(100));
      frontend.close();
      await f.sessions.pop()!.closed;
    };
    await cycle();
    const before = openFdCount();
    for (let i = 0; i < 40; i++) await cycle();
    assertEquals(openFdCount(), before);
    await server.stop();
  } finally {
    await tearDown(f);
  }
});

Deno.test("FrontendServer pauses accepting after accept() fails instead of spinning", async () => {
  const f = await setUp();
  const readable = EventFd.create();
  try {
    readable.signal(); // stays readable: a level-triggered watch fires again and again
    let calls = 0;
    const failing = {
      fd: readable.fd,
      accept(): UnixStream | null {
        calls++;
        throw new Error("accept failed: EMFILE");
      },
      close() {},
    } as unknown as UnixListener;
    const server = new FrontendServer(f.loop, f.factory, false);
    server.listen(failing);
    await waitUntil("the first accept", () => calls >= 1);
    // Until the pause ends the listener is not watched (unless the pause already ended).
    const watchedDuringPause = f.loop.isWatching(readable.fd);
    assertTrue(calls > 1 || !watchedDuringPause, "still watching the failing listener");
    assertTrue(f.logLines.some((l) => l.includes("EMFILE")));
    await waitUntil("accepting to resume after the pause", () => calls >= 2);
    await server.stop();
    assertTrue(!f.loop.isWatching(readable.fd));
  } finally {
    readable.close();
    await tearDown(f);
  }
});

Deno.test("FrontendServer serves a frontend that comes in the same batch as the previous one's hang-up", async () => {
  const f = await setUp();
  try {
    const server = new FrontendServer(f.loop, f.factory, false);
    server.listen(f.listener);
    // A readiness probe connects and closes, then the real frontend connects, before
    // the loop has looked: both wait in the accept queue, the probe's hang-up behind.
    UnixStream.connect(f.path).close();
    const frontend = UnixStream.connect(f.path);
    await waitUntil("the frontend's session", () => f.sessions.length === 2);
    assertTrue(!closedByPeer(frontend), "the frontend was refused");
    assertEquals([server.sessionsServed, server.refused], [2, 0]);
    assertTrue(!f.logLines.some((l) => l.includes("Refusing")));
    frontend.close();
    await f.sessions[1].closed;
    await server.stop();
  } finally {
    await tearDown(f);
  }
});

Deno.test("FrontendServer refuses a waiting connection with --one-off once the first frontend goes", async () => {
  const f = await setUp();
  try {
    const server = new FrontendServer(f.loop, f.factory, true);
    server.listen(f.listener);
    const first = UnixStream.connect(f.path);
    await waitUntil("the first session", () => f.sessions.length === 1);
    const second = UnixStream.connect(f.path);
    await new Promise((resolve) => setTimeout(resolve, 50)); // accepted and held
    first.close();
    assertEquals(await server.finished, "one-off");
    await waitUntil("the waiting connection to be refused", () => closedByPeer(second));
    assertEquals([server.sessionsServed, server.refused], [1, 1]);
    second.close();
  } finally {
    await tearDown(f);
  }
});
