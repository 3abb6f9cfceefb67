import assert from "node:assert/strict";
import { netdevArguments } from "./qemu.ts";

Deno.test("`netdevArguments()` gives vhost-user shared memfd memory and vectors=0", () => {
  const args = netdevArguments({ kind: "vhost-user", socketPath: "/tmp/x.sock" }, 512).join(" ");
  assert.match(args, /memory-backend-memfd,id=mem,size=512M,share=on/);
  assert.match(args, /-numa node,memdev=mem/);
  assert.match(args, /socket,id=c,path=\/tmp\/x\.sock /);
  assert.match(args, /virtio-net-pci,netdev=n,mac=[0-9a-f:]+,vectors=0$/);
});

Deno.test("`netdevArguments()` turns ring features off and reconnects on request", () => {
  const args = netdevArguments(
    {
      kind: "vhost-user",
      socketPath: "/s",
      reconnect: true,
      deviceOptions: "mrg_rxbuf=off,event_idx=off,indirect_desc=off",
    },
    256,
  ).join(" ");
  assert.match(args, /path=\/s,reconnect=1/);
  assert.match(args, /vectors=0,mrg_rxbuf=off,event_idx=off,indirect_desc=off/);
});

Deno.test("`netdevArguments()` binds slirp forwards to 127.0.0.1 only", () => {
  const args = netdevArguments({
    kind: "user",
    forwards: [
      { protocol: "tcp", hostPort: 40000, guestPort: 8080 },
      { protocol: "udp", hostPort: 40001, guestPort: 8081 },
    ],
  }, 256).join(" ");
  assert.match(
    args,
    /user,id=n,hostfwd=tcp:127\.0\.0\.1:40000-:8080,hostfwd=udp:127\.0\.0\.1:40001-:8081/,
  );
  assert.doesNotMatch(args, /memfd/);
});

Deno.test("`netdevArguments()` connects the stream netdev as a client to the socket", () => {
  const args = netdevArguments({ kind: "stream", socketPath: "/tmp/p.sock" }, 256).join(" ");
  assert.match(args, /stream,id=n,server=off,addr\.type=unix,addr\.path=\/tmp\/p\.sock/);
});

Deno.test("`netdevArguments()` adds reconnect=1 to the stream netdev on request", () => {
  const args = netdevArguments({ kind: "stream", socketPath: "/p", reconnect: true }, 256);
  assert.ok(args.includes("stream,id=n,server=off,addr.type=unix,addr.path=/p,reconnect=1"));
});
