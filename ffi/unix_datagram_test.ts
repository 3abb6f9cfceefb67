import { assertEquals, assertThrows, assertTrue } from "../tests/support/assert.ts";
import { Errno, NativeError } from "./native_error.ts";
import { openFdCount } from "./process.ts";
import { UnixDatagramSocket } from "./unix_datagram.ts";

Deno.test("UnixDatagramSocket carries datagrams from a connected sender to a bound receiver", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpdg" });
  const before = openFdCount();
  try {
    const receiver = UnixDatagramSocket.bind(`${dir}/log`);
    const sender = UnixDatagramSocket.connect(`${dir}/log`);
    const buffer = new Uint8Array(64);
    assertEquals(receiver.receive(buffer), -1); // nothing yet, never blocks
    assertTrue(sender.send(new TextEncoder().encode("<30>hello")));
    assertTrue(sender.send(new TextEncoder().encode("second")));
    const n = receiver.receive(buffer);
    assertEquals(new TextDecoder().decode(buffer.subarray(0, n)), "<30>hello");
    assertEquals(receiver.receive(buffer), 6); // one datagram per call
    receiver.close();
    const error = assertThrows(() => sender.send(new Uint8Array([1])));
    assertTrue(error instanceof NativeError && error.errno === Errno.ECONNREFUSED, `${error}`);
    sender.close();
    sender.close();
    assertEquals(openFdCount(), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("UnixDatagramSocket.connect() fails with ENOENT where no socket is", () => {
  const error = assertThrows(() => UnixDatagramSocket.connect("/tmp/tpasst-no-such-log-socket"));
  assertTrue(error instanceof NativeError && error.errno === Errno.ENOENT, `${error}`);
});
