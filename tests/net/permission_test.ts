import assert from "node:assert/strict";

const CHILD = new URL("./deny_child.ts", import.meta.url).pathname;
/** The helper library: the translator's host sockets are the helper's, as in the daemon. */
const HELPER = new URL("../../native/libtpasst_helper.so", import.meta.url).pathname;

Deno.test("`TcpTranslator` refuses a destination outside --allow-net with a RST and one log line", async () => {
  const allowed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const denied = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ap = (allowed.addr as Deno.NetAddr).port;
  const dp = (denied.addr as Deno.NetAddr).port;
  let deniedAccepts = 0;
  const acceptAllowed = allowed.accept().then((c) => c);
  denied.accept().then((c) => {
    deniedAccepts++;
    c.close();
  }).catch(() => {});
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      `--allow-net=127.0.0.1:${ap}`,
      `--allow-ffi=${HELPER}`,
      CHILD,
      String(ap),
      String(dp),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `child failed:\n${stdout}\n${stderr}`);
  assert.match(stdout, /allowed ok/);
  assert.match(stdout, /denied rst/);
  const lines = stderr.split("\n").filter((l) => /not permitted/.test(l));
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], new RegExp(`127\\.0\\.0\\.1 port ${dp}`));
  assert.equal(deniedAccepts, 0);
  (await acceptAllowed).close();
  allowed.close();
  denied.close();
});
