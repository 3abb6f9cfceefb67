import { UnixListener, unixSocketInUse } from "../../ffi/unix_listener.ts";
import { assertEquals, assertThrows, assertTrue } from "../../tests/support/assert.ts";
import {
  bindSocket,
  defaultSocketPath,
  isSocketFile,
  SocketPathError,
  tryListen,
} from "./socket_path.ts";

async function withDir(body: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpsock" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("defaultSocketPath() names passt-style paths under /tmp", () => {
  assertEquals(defaultSocketPath(1), "/tmp/tpasst_1.socket");
  assertEquals(defaultSocketPath(64), "/tmp/tpasst_64.socket");
});

Deno.test("tryListen() binds a free path and takes over a stale socket", () =>
  withDir((dir) => {
    const path = `${dir}/a.sock`;
    const first = tryListen(path)!;
    assertTrue(unixSocketInUse(path));
    first.close(); // stale: the file stays, nobody listens
    assertTrue(!unixSocketInUse(path));
    const second = tryListen(path);
    assertTrue(second !== null && unixSocketInUse(path));
    second!.close();
  }));

Deno.test("tryListen() returns null for a path in use, leaving it alone", () =>
  withDir((dir) => {
    const path = `${dir}/b.sock`;
    const owner = UnixListener.listen(path);
    try {
      assertEquals(tryListen(path), null);
      assertTrue(unixSocketInUse(path));
    } finally {
      owner.close();
    }
  }));

Deno.test("bindSocket() explains an explicit path in use or impossible to bind", () =>
  withDir((dir) => {
    const path = `${dir}/c.sock`;
    const owner = UnixListener.listen(path);
    try {
      const error = assertThrows(() => bindSocket(path), /Socket path .*c\.sock is in use/);
      assertTrue(error instanceof SocketPathError);
    } finally {
      owner.close();
    }
    assertThrows(() => bindSocket(`${dir}/missing/d.sock`), /Cannot listen on .*: ENOENT/);
    const bound = bindSocket(path);
    assertEquals(bound.path, path);
    bound.listener.close();
  }));

Deno.test("isSocketFile() tells sockets from other files without changing them", () =>
  withDir((dir) => {
    const listener = UnixListener.listen(`${dir}/s.sock`);
    listener.close();
    assertTrue(isSocketFile(`${dir}/s.sock`));
    Deno.writeTextFileSync(`${dir}/plain`, "keep me");
    assertTrue(!isSocketFile(`${dir}/plain`));
    assertEquals(Deno.readTextFileSync(`${dir}/plain`), "keep me");
    Deno.mkdirSync(`${dir}/sub`);
    assertTrue(!isSocketFile(`${dir}/sub`));
  }));

Deno.test("bindSocket() never removes a file that is not a socket", () =>
  withDir((dir) => {
    Deno.writeTextFileSync(`${dir}/plain`, "precious");
    const error = assertThrows(
      () => bindSocket(`${dir}/plain`),
      /plain exists and is not a socket; not removing it/,
    );
    assertTrue(error instanceof SocketPathError);
    assertEquals(Deno.readTextFileSync(`${dir}/plain`), "precious");
  }));
