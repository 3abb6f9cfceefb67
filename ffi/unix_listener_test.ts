import assert from "node:assert/strict";
import { removeFile } from "./output_file.ts";
import { openFdCount } from "./process.ts";
import { UnixListener, unixSocketInUse } from "./unix_listener.ts";
import { UnixStream } from "./unix_stream.ts";

Deno.test("`UnixListener.accept()` returns connections and null when none is pending", () => {
  const before = openFdCount();
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/tpasst.socket`;
  assert.equal(unixSocketInUse(path), false);
  const listener = UnixListener.listen(path);
  assert.equal(listener.accept(), null);
  assert.equal(unixSocketInUse(path), true);
  // The probe's connection is pending in the backlog: accept and drop it.
  const probe = listener.accept();
  assert.ok(probe !== null);
  probe.close();

  const client = UnixStream.connect(path);
  const server = listener.accept();
  assert.ok(server !== null);
  client.send(new TextEncoder().encode("hello"));
  const buf = new Uint8Array(16);
  let got = -1;
  while (got === -1) got = server.recv(buf); // accepted streams are nonblocking
  assert.equal(new TextDecoder().decode(buf.subarray(0, got)), "hello");
  assert.equal(listener.accept(), null);

  client.close();
  server.close();
  listener.close();
  listener.close();
  assert.equal(unixSocketInUse(path), false, "a socket file without listener is stale");
  assert.throws(() => UnixListener.listen(path), /EADDRINUSE/);
  assert.equal(removeFile(path), true);
  const again = UnixListener.listen(path);
  again.close();
  removeFile(path);
  Deno.removeSync(dir);
  assert.equal(openFdCount(), before);
});

Deno.test("`UnixStream.connect()` fails with ENOENT or ECONNREFUSED without a listener", () => {
  const before = openFdCount();
  const dir = Deno.makeTempDirSync();
  assert.throws(() => UnixStream.connect(`${dir}/missing`), /ENOENT/);
  const stale = UnixListener.listen(`${dir}/stale`);
  stale.close();
  assert.throws(() => UnixStream.connect(`${dir}/stale`), /ECONNREFUSED/);
  removeFile(`${dir}/stale`);
  assert.throws(() => UnixListener.listen(`${dir}/${"x".repeat(120)}`), /ENAMETOOLONG/);
  Deno.removeSync(dir);
  assert.equal(openFdCount(), before);
});

Deno.test("`unixSocketInUse()` reports a plain file as free, and listen() then fails", () => {
  const before = openFdCount();
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(`${dir}/plain`, "not a socket");
  assert.equal(unixSocketInUse(`${dir}/plain`), false);
  assert.throws(() => UnixListener.listen(`${dir}/plain`), /EADDRINUSE/);
  Deno.removeSync(dir, { recursive: true });
  assert.equal(openFdCount(), before);
});

Deno.test("UnixListener.fromFd() refuses a descriptor that is not open", () => {
  const listener = UnixListener.listen(`${Deno.makeTempDirSync()}/closed.sock`);
  const fd = listener.fd;
  listener.close();
  assert.throws(() => UnixListener.fromFd(fd), /EBADF/);
});

Deno.test("`UnixListener.listen()` makes the path appear only once it accepts, leaves no temporary file and never replaces an existing path", async () => {
  const before = openFdCount();
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/tpasst.socket`;
  // Connect from a second process the moment the path exists: with bind() and listen()
  // on the path itself, such a connect could come between them and be refused.
  const watcher = new Deno.Command("perl", {
    args: [
      "-MSocket",
      "-e",
      `until (-e $ARGV[0]) { select(undef, undef, undef, 0.0005) }
       socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
       connect($s, pack_sockaddr_un($ARGV[0])) or die "connect: $!";
       print "connected";`,
      path,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await new Promise((resolve) => setTimeout(resolve, 100));
  const listener = UnixListener.listen(path);
  const result = await watcher.output();
  assert.equal(
    new TextDecoder().decode(result.stdout),
    "connected",
    new TextDecoder().decode(result.stderr),
  );
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["tpasst.socket"]);
  assert.throws(() => UnixListener.listen(path), /EADDRINUSE/, "an existing path stays");
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["tpasst.socket"]);
  listener.close();
  removeFile(path);
  Deno.removeSync(dir);
  assert.equal(openFdCount(), before);
});
