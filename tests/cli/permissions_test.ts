/**
 * The daemon's permission set as documented: README's permission table names exactly
 * the grants of deno.json's `daemon` set, and the reason given there for leaving
 * `ffi` unscoped still holds (a guest memory mapping fails under `--allow-ffi=PATH`
 * and works under `--allow-ffi`).
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url);
const HELPER = new URL("native/libtpasst_helper.so", ROOT).pathname;
const FFI_CHILD = new URL("./testdata/ffi_scope_child.ts", import.meta.url).pathname;

/** deno.json's `daemon` set, each grant as the README writes it: `name` or `name: a, b`. */
function grantsOfDenoJson(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT)));
  const daemon = config.permissions.daemon as Record<string, boolean | string[]>;
  return Object.entries(daemon).map(([name, value]) => {
    if (value === true) return name;
    assert.ok(Array.isArray(value), `deno.json: ${name} is true or a list`);
    return `${name}: ${value.join(", ")}`;
  }).sort();
}

/** The first column of the table under README's "## Permissions", code spans unwrapped. */
function grantsOfReadme(): string[] {
  const readme = Deno.readTextFileSync(new URL("README.md", ROOT));
  const section = readme.split(/^## Permissions$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, "README has a Permissions section");
  const rows = section.split("\n").filter((l) => l.startsWith("|")).slice(2);
  return rows.map((row) => {
    const first = row.split("|")[1].trim();
    const code = first.match(/^`([^`]+)`$/);
    assert.ok(code, `README permission cell ${first} is one code span`);
    return code[1];
  }).sort();
}

Deno.test("README's permission table names exactly the grants of deno.json's daemon set", () => {
  assert.deepEqual(grantsOfReadme(), grantsOfDenoJson());
});

async function mapUnder(ffiFlag: string): Promise<{ code: number; stdout: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ffiFlag, FFI_CHILD],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout).trim() };
}

Deno.test("guest memory views need unscoped ffi: refused under --allow-ffi=HELPER, mapped under --allow-ffi", async () => {
  const scoped = await mapUnder(`--allow-ffi=${HELPER}`);
  assert.equal(scoped.code, 1, scoped.stdout);
  assert.match(scoped.stdout, /^NotCapable: Requires ffi access/);
  const unscoped = await mapUnder("--allow-ffi");
  assert.deepEqual(unscoped, { code: 0, stdout: "mapped" });
});
