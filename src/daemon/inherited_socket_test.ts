import { EventFd } from "../../ffi/event_fd.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import { assertEquals, assertThrows } from "../../tests/support/assert.ts";
import { adoptConnectedSocket } from "./inherited_socket.ts";

Deno.test("adoptConnectedSocket() adopts a connected socket without sending anything", () => {
  const [ours, theirs] = UnixStream.pair(true);
  const adopted = adoptConnectedSocket(theirs.fd);
  assertEquals(adopted.fd, theirs.fd);
  assertEquals(ours.recv(new Uint8Array(8)), -1); // nothing arrived
  adopted.close();
  ours.close();
});

Deno.test("adoptConnectedSocket() rejects a closed fd, a non-socket and a lone end", () => {
  const [ours, theirs] = UnixStream.pair();
  const fd = theirs.fd;
  theirs.close();
  assertThrows(
    () => adoptConnectedSocket(fd),
    new RegExp(`--fd ${fd} is not a connected socket \\(EBADF\\)`),
  );
  const eventFd = EventFd.create();
  assertThrows(() => adoptConnectedSocket(eventFd.fd), /not a connected socket \(ENOTSOCK\)/);
  eventFd.close();
  const [a, b] = UnixStream.pair();
  b.close();
  assertThrows(() => adoptConnectedSocket(a.fd), /not a connected socket \(EPIPE\)/);
  a.close();
  ours.close();
});
