/**
 * Imports point down. Reads every import of src/, ffi/ and main.ts and fails on one
 * that points up the layer order, across peers (vhost_user/ ↔ net/), from a product
 * file into test support (tests/, `*_test.ts`), or that leaves the
 * product. The order is written once, in {@link LAYER_ORDER}; README.md's layout table
 * quotes it (checked below).
 *
 * Test files (`*_test.ts`) sit beside the code they test and may import from any layer
 * and from tests/support/; their fixtures (child-process scripts) live in tests/support/.
 *
 * @module
 */

import { assertEquals, assertTrue } from "../support/assert.ts";

/**
 * The layers, top to bottom. A file may import its own folder and any folder of a
 * later entry; folders sharing an entry are peers and never import each other.
 * `config/` is read by `main` and `daemon/` alone.
 */
export const LAYER_ORDER: readonly (readonly string[])[] = [
  ["main"],
  ["daemon"],
  ["config"],
  ["vhost_user", "net"],
  ["tap"],
  ["virtio"],
  ["loop"],
  ["ffi"],
  ["log"],
];

/** {@link LAYER_ORDER} as one line, as README.md writes it. */
export const LAYER_ORDER_TEXT: string = orderText(LAYER_ORDER);

/** An order as one line: entries joined by arrows, peers in braces. */
function orderText(order: readonly (readonly string[])[]): string {
  return order.map((peers) => peers.length === 1 ? peers[0] : `{ ${peers.join(", ")} }`).join(
    " → ",
  );
}

const ROOT = new URL("../../", import.meta.url);

/** One import that breaks the rules. */
export interface Violation {
  readonly file: string;
  readonly target: string;
  readonly reason: string;
}

/** Static imports and re-exports (`import … from`, `export … from`), also over several lines. */
const FROM_IMPORT = /^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/gms;
/** Side-effect imports (`import "x";`). */
const BARE_IMPORT = /^\s*import\s*["']([^"']+)["']/gm;
/** Dynamic imports (`import("x")`). */
const DYNAMIC_IMPORT = /\bimport\(\s*["']([^"']+)["']/g;

/** The specifiers `text` imports, in order of appearance per kind. */
export function importSpecifiers(text: string): string[] {
  const specs: string[] = [];
  for (const pattern of [FROM_IMPORT, BARE_IMPORT, DYNAMIC_IMPORT]) {
    for (const match of text.matchAll(pattern)) specs.push(match[1]);
  }
  return specs;
}

/** The layer folder of repository path `path` ("main", "ffi", "net", …), or null. */
function layerOf(path: string): string | null {
  if (path === "main.ts") return "main";
  const parts = path.split("/");
  if (parts[0] === "ffi") return "ffi";
  if (parts[0] === "src" && parts.length > 2) return parts[1];
  return null;
}

/** Index of `layer` in {@link LAYER_ORDER}, or -1. */
function rankOf(layer: string): number {
  return LAYER_ORDER.findIndex((peers) => peers.includes(layer));
}

/** Whether `path` is a test (exempt from the order). */
function isTestFile(path: string): boolean {
  return path.endsWith("_test.ts");
}

/** Resolves relative specifier `spec` of file `from` to a repository path. */
function resolve(from: string, spec: string): string {
  const parts = from.split("/").slice(0, -1);
  for (const part of spec.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return parts.join("/");
}

/**
 * Checks the imports of `files` (repository path → source text).
 * @returns every import that breaks the rules
 */
export function findViolations(files: ReadonlyMap<string, string>): Violation[] {
  const violations: Violation[] = [];
  for (const [file, text] of files) {
    const layer = layerOf(file);
    if (layer === null || isTestFile(file)) continue;
    const rank = rankOf(layer);
    if (rank < 0) {
      violations.push({ file, target: "", reason: `folder ${layer}/ is not in LAYER_ORDER` });
      continue;
    }
    for (const spec of importSpecifiers(text)) {
      if (spec.startsWith("node:") || spec.startsWith("npm:")) continue;
      if (!spec.startsWith(".")) {
        violations.push({ file, target: spec, reason: "imports by name (not node:/npm:)" });
        continue;
      }
      const target = resolve(file, spec);
      if (target.startsWith("tests/") || isTestFile(target)) {
        violations.push({ file, target, reason: "a product file imports test support" });
        continue;
      }
      const targetLayer = layerOf(target);
      if (targetLayer === null) {
        violations.push({ file, target, reason: "imports from outside src/ and ffi/" });
        continue;
      }
      if (targetLayer === layer) continue;
      const targetRank = rankOf(targetLayer);
      if (targetRank < 0) {
        violations.push({ file, target, reason: `folder ${targetLayer}/ is not in LAYER_ORDER` });
      } else if (targetRank === rank) {
        violations.push({ file, target, reason: `${layer}/ and ${targetLayer}/ are peers` });
      } else if (targetRank < rank) {
        violations.push({ file, target, reason: `${layer}/ imports ${targetLayer}/, above it` });
      }
    }
  }
  return violations;
}

/**
 * The rooms of src/net/, top to bottom, in the same sense as {@link LAYER_ORDER}: a
 * file of src/net/ may import its own room and any room of a later entry; rooms
 * sharing an entry never import each other. A room is a folder (`wire`) or a file
 * directly in src/net/ (`stack.ts`). Frame and header formats (wire/) sit at the
 * bottom, the stack that routes frames to the handlers on top.
 */
export const NET_ROOM_ORDER: readonly (readonly string[])[] = [
  ["stack.ts", "fwd_setup.ts"],
  ["services", "icmp", "udp", "tcp"],
  ["plan", "guest_sender.ts", "l4_handler.ts", "migration_state.ts"],
  ["flows"],
  ["wire"],
];

/** {@link NET_ROOM_ORDER} as one line, as README.md writes it (peers in braces). */
export const NET_ROOM_ORDER_TEXT: string = orderText(NET_ROOM_ORDER);

/** The room of src/net/ path `path` (`wire`, `stack.ts`), or null outside src/net/. */
function netRoomOf(path: string): string | null {
  const parts = path.split("/");
  if (parts[0] !== "src" || parts[1] !== "net" || parts.length < 3) return null;
  return parts[2];
}

/**
 * Checks the imports between rooms of src/net/ in `files` (repository path → text)
 * against {@link NET_ROOM_ORDER}.
 * @returns every import that points up or across
 */
export function findNetRoomViolations(files: ReadonlyMap<string, string>): Violation[] {
  const violations: Violation[] = [];
  const rankOfRoom = (room: string) => NET_ROOM_ORDER.findIndex((peers) => peers.includes(room));
  for (const [file, text] of files) {
    const room = netRoomOf(file);
    if (room === null || isTestFile(file)) continue;
    const rank = rankOfRoom(room);
    if (rank < 0) {
      violations.push({ file, target: "", reason: `src/net/${room} is not in NET_ROOM_ORDER` });
      continue;
    }
    for (const spec of importSpecifiers(text)) {
      if (!spec.startsWith(".")) continue;
      const target = resolve(file, spec);
      const targetRoom = netRoomOf(target);
      if (targetRoom === null || targetRoom === room) continue;
      const targetRank = rankOfRoom(targetRoom);
      if (targetRank < 0) {
        violations.push({ file, target, reason: `src/net/${targetRoom} is not in NET_ROOM_ORDER` });
      } else if (targetRank === rank) {
        violations.push({ file, target, reason: `net/${room} and net/${targetRoom} are peers` });
      } else if (targetRank < rank) {
        violations.push({
          file,
          target,
          reason: `net/${room} imports net/${targetRoom}, above it`,
        });
      }
    }
  }
  return violations;
}

/** Every .ts file of src/, ffi/ and main.ts, by repository path. */
function productTree(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(new URL(dir, ROOT))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (entry.isFile && entry.name.endsWith(".ts")) {
        files.set(path, Deno.readTextFileSync(new URL(path, ROOT)));
      }
    }
  };
  walk("src");
  walk("ffi");
  files.set("main.ts", Deno.readTextFileSync(new URL("main.ts", ROOT)));
  return files;
}

Deno.test("every import of src/, ffi/ and main.ts points down the layer order", () => {
  const files = productTree();
  assertTrue(files.size > 100, `read only ${files.size} files`);
  const violations = findViolations(files).map((v) => `${v.file} → ${v.target}: ${v.reason}`);
  assertEquals(violations, []);
});

Deno.test("inside src/net/, every import points down the room order", () => {
  const violations = findNetRoomViolations(productTree()).map((v) =>
    `${v.file} → ${v.target}: ${v.reason}`
  );
  assertEquals(violations, []);
});

Deno.test("an upward or peer import between rooms of src/net/ is reported", () => {
  const files = new Map([
    ["src/net/wire/a.ts", 'import { x } from "../flows/flow_table.ts";\n'],
    ["src/net/tcp/b.ts", 'import { y } from "../udp/translator.ts";\n'],
    ["src/net/plan/c.ts", 'import { z } from "../stack.ts";\n'],
    ["src/net/new_room/d.ts", 'import { w } from "../wire/ipv4.ts";\n'],
  ]);
  const reported = findNetRoomViolations(files).map((v) => v.file).sort();
  assertEquals(reported, [...files.keys()].sort());
  const fine = new Map([
    ["src/net/stack.ts", 'import { a } from "./tcp/translator.ts";\n'],
    ["src/net/tcp/e.ts", 'import { b } from "../plan/fwd.ts";\nimport { c } from "./flow.ts";\n'],
    ["src/net/wire/f.ts", 'import { d } from "../../tap/net_header.ts";\n'],
    ["src/net/wire/g_test.ts", 'import { e } from "../stack.ts";\n'],
  ]);
  assertEquals(findNetRoomViolations(fine), []);
});

Deno.test("README.md's layout section quotes the layer order and src/net/'s room order", () => {
  const readme = Deno.readTextFileSync(new URL("README.md", ROOT)).replace(/\s+/g, " ");
  for (const text of [LAYER_ORDER_TEXT, NET_ROOM_ORDER_TEXT]) {
    assertTrue(readme.includes(text), `README.md does not contain "${text}"`);
  }
});

Deno.test("an upward, peer, config, test-support or outside import is reported", () => {
  const files = new Map([
    ["src/virtio/ring.ts", 'import { start } from "../daemon/start.ts";\n'],
    ["src/net/stack2.ts", 'import type {\n  X,\n} from "../vhost_user/session.ts";\n'],
    ["src/vhost_user/x.ts", 'export { Y } from "../net/stack.ts";\n'],
    ["src/tap/y.ts", 'import { parse } from "../config/config.ts";\n'],
    ["src/net/z.ts", 'import { assert } from "../../tests/support/assert.ts";\n'],
    ["src/loop/w.ts", 'const m = await import("../virtio/virtqueue_test.ts");\n'],
    ["ffi/v.ts", 'import "../bench/main.ts";\n'],
    ["src/newfolder/u.ts", 'import { log } from "../log/logger.ts";\n'],
  ]);
  const reported = findViolations(files).map((v) => v.file).sort();
  assertEquals(reported, [...files.keys()].sort());
});

Deno.test("downward, same-folder, test-file and comment imports are not reported", () => {
  const files = new Map([
    ["main.ts", 'import { start } from "./src/daemon/start.ts";\n'],
    ["src/daemon/a.ts", 'import type { Config } from "../config/config.ts";\n'],
    ["src/config/b.ts", 'import { MIN_PORT } from "../net/plan/port_forward.ts";\n'],
    [
      "src/net/wire/c.ts",
      'import { x } from "../stack.ts";\nimport { y } from "../../tap/z.ts";\n',
    ],
    [
      "src/tap/d.ts",
      'import { log } from "../log/logger.ts";\nimport assert from "node:assert";\n',
    ],
    ["src/net/e_test.ts", 'import { assert } from "../../tests/support/assert.ts";\n'],
    ["src/virtio/f.ts", ' * import { start } from "../daemon/start.ts";\n'],
  ]);
  assertEquals(findViolations(files), []);
});

/** Every .ts file of src/, ffi/, tests/ and bench/, by repository path. */
function wholeTree(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(new URL(dir, ROOT))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (entry.isFile && entry.name.endsWith(".ts")) {
        files.set(path, Deno.readTextFileSync(new URL(path, ROOT)));
      }
    }
  };
  for (const top of ["src", "ffi", "tests", "bench"]) walk(top);
  return files;
}

/** The imports of `files` that name a test file (`*_test.ts`): shared test code belongs in tests/support/. */
export function findTestImports(files: ReadonlyMap<string, string>): string[] {
  const found: string[] = [];
  for (const [file, text] of files) {
    for (const spec of importSpecifiers(text)) {
      if (spec.startsWith(".") && spec.endsWith("_test.ts")) found.push(`${file} → ${spec}`);
    }
  }
  return found;
}

Deno.test("no file imports a test file (shared test code lives in tests/support/)", () => {
  const files = wholeTree();
  files.delete("tests/layout/import_direction_test.ts"); // its fixtures quote such imports
  assertEquals(findTestImports(files), []);
});
