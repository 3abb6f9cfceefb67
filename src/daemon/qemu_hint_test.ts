import { assertEquals } from "../../tests/support/assert.ts";
import { qemuHintLines, qemuOptions } from "./qemu_hint.ts";

Deno.test("qemuOptions() gives QEMU's -netdev stream options for the stream protocol", () => {
  assertEquals(
    qemuOptions("stream", "/tmp/tpasst_1.socket"),
    "-device virtio-net-pci,netdev=s -netdev stream,id=s,server=off,addr.type=unix," +
      "addr.path=/tmp/tpasst_1.socket",
  );
});

Deno.test("qemuOptions() gives shared memfd RAM and a vhost-user netdev for vhost-user", () => {
  assertEquals(
    qemuOptions("vhost-user", "/run/x.sock"),
    "-object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem " +
      "-chardev socket,id=chr0,path=/run/x.sock -netdev vhost-user,id=netdev0,chardev=chr0 " +
      "-device virtio-net-pci,netdev=netdev0",
  );
});

Deno.test("qemuHintLines() names the socket and notes the RAM size for vhost-user", () => {
  const stream = qemuHintLines("stream", "/s");
  assertEquals(stream[0], "Stream protocol socket listening at /s");
  assertEquals(stream.length, 3);
  const vhost = qemuHintLines("vhost-user", "/v");
  assertEquals(vhost[0], "vhost-user socket listening at /v");
  assertEquals(vhost[3], "(size=1G must equal the guest RAM given with -m)");
});
