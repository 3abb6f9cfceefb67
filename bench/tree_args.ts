/**
 * The checkouts an in-process bench compares: this one, and another named with
 * `--tree DIR` (e.g. the code before a change), whose modules it imports by URL.
 *
 * @module
 */

import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

/** A checkout a bench loads its modules from. */
export interface BenchTree {
  /** How the bench names it in its output. */
  readonly name: string;
  /** Its root directory, as a URL ending in "/". */
  readonly root: URL;
}

/** This checkout (`bench/`'s parent) and the one `--tree DIR` in `args` names, if any. */
export function benchTrees(args: readonly string[]): BenchTree[] {
  const trees: BenchTree[] = [{ name: "this tree", root: new URL("../", import.meta.url) }];
  const at = args.indexOf("--tree");
  if (at >= 0) {
    const dir = args[at + 1];
    if (dir === undefined) throw new Error("--tree needs a directory");
    trees.push({ name: dir, root: pathToFileURL(resolve(dir) + "/") });
  }
  return trees;
}
