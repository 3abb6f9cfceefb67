/**
 * Real QEMU 7.2 against an in-process vhost-user session: QEMU's vhost-user-net
 * negotiates, the guest (the e2e initramfs) brings eth0 up and runs a DHCP client,
 * and its frames must reach the stack side. Runs only where QEMU and the e2e guest
 * image exist (tests/e2e/guest/build.sh, run by `make test`).
 */
import assert from "node:assert/strict";
import { UnixListener } from "../../ffi/unix_listener.ts";
import type { FrameHandler } from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import type { FrontendSession } from "../../src/tap/frontend_session.ts";
import { createVhostUserSession } from "../../src/vhost_user/session.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import { commandSucceeds } from "../support/command_succeeds.ts";

const GUEST_JSON = new URL("../e2e/.cache/guest.json", import.meta.url);

function guestImage(): { kernel: string; initramfs: string } | null {
  try {
    const image = JSON.parse(Deno.readTextFileSync(GUEST_JSON));
    Deno.statSync(image.kernel);
    Deno.statSync(image.initramfs);
    return image;
  } catch {
    return null;
  }
}

function hasQemu(): boolean {
  return commandSucceeds("qemu-system-x86_64", ["--version"]);
}

const image = guestImage();

Deno.test({
  name:
    "`createVhostUserSession()` serves QEMU 7.2's vhost-user-net: negotiation completes and guest frames arrive",
  ignore: image === null || !hasQemu(),
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "tpasst-qemu-" });
    const socketPath = `${dir}/vhost-user.sock`;
    const scenario = `${dir}/scenario.sh`;
    Deno.writeTextFileSync(
      scenario,
      "ip link set eth0 up\nudhcpc -i eth0 -n -q -t 2 -T 1 >/dev/null 2>&1\necho TPASST-MARK dhcp-tried 1\n",
    );
    const backend = new InProcessBackend();
    const listener = UnixListener.listen(socketPath);
    const ethertypes: number[] = [];
    const handler: FrameHandler = {
      handleFrame: (frame) => void ethertypes.push((frame[12] << 8) | frame[13]),
      endOfBatch: () => {},
      linkUp: () => {},
      linkDown: () => {},
    };
    const sessions: FrontendSession[] = [];
    backend.loop.watch(listener.fd, () => {
      const connection = listener.accept();
      if (connection === null) return;
      if (sessions.length > 0) return connection.close();
      sessions.push(createVhostUserSession(
        connection,
        backend.loop,
        () => new VhostUserLink(handler, { logger: backend.logger }),
        { logger: backend.logger },
      ));
    });
    try {
      const qemu = await new Deno.Command("timeout", {
        args: [
          "90",
          "qemu-system-x86_64",
          ...[
            "-M",
            "q35",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
          ],
          ...[
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-numa",
            "node,memdev=mem",
          ],
          ...["-chardev", `socket,id=c,path=${socketPath}`, "-netdev", "vhost-user,id=n,chardev=c"],
          ...["-device", "virtio-net-pci,netdev=n,vectors=0"],
          ...["-kernel", image!.kernel, "-initrd", image!.initramfs],
          ...["-append", "console=ttyS0 quiet loglevel=1 panic=-1"],
          ...["-fw_cfg", `name=opt/tpasst/scenario,file=${scenario}`],
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const console = new TextDecoder().decode(qemu.stdout);
      const detail = `QEMU exit ${qemu.code}\n${console.slice(-1500)}\n${
        new TextDecoder().decode(qemu.stderr).slice(-1500)
      }\n${backend.lines.join("\n")}`;
      assert.equal(qemu.code, 0, detail);
      assert.match(console, /TPASST-MARK dhcp-tried 1/, detail);
      assert.equal(sessions.length, 1, "QEMU connected once");
      await sessions[0].closed;
      const lines = backend.lines.join("\n");
      assert.match(lines, /ring 0 started: size 256/, detail);
      assert.match(lines, /ring 1 started: size 256/, detail);
      assert.match(lines, /closing the connection: front-end closed the connection/, detail);
      assert.deepEqual(backend.linesAt("error"), []);
      assert.ok(
        ethertypes.includes(0x0800),
        `an IPv4 frame (DHCP discover) from the guest: ${ethertypes}`,
      );
    } finally {
      backend.loop.unwatch(listener.fd);
      listener.close();
      await backend.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
