/**
 * Imports point down. Reads every import of src/, ffi/ and main.ts and fails on one
 * that points up the layer order, across peers (vhost_user/ ↔ net/), from a product
 * file into test support (tests/, `*_test.ts`, `testdata/`), or that leaves the
 * product. The order is written once, in {@link LAYER_ORDER}; README.md's layout table
 * quotes it (checked below).
 *
 * Test files (`*_test.ts`) and their fixtures (`testdata/`) sit beside the code they
 * test and may import from any layer and from tests/support/.
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
export const LAYER_ORDER_TEXT: string = LAYER_ORDER.map((peers) =>
  peers.length === 1 ? `${peers[0]}` : `{ ${peers.join(", ")} }`
).join(" → ");

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

/** Whether `path` is a test or a test fixture (exempt from the order). */
function isTestFile(path: string): boolean {
  return path.endsWith("_test.ts") || path.split("/").includes("testdata");
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

Deno.test("README.md's layout section quotes the layer order", () => {
  const readme = Deno.readTextFileSync(new URL("README.md", ROOT));
  assertTrue(readme.includes(LAYER_ORDER_TEXT), `README.md does not contain "${LAYER_ORDER_TEXT}"`);
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
