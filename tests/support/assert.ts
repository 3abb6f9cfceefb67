/**
 * Assertions for tests, re-exported from `node:assert/strict` under the names the
 * tests use (JSR's std/assert is not reachable from these machines).
 *
 * @module
 */
import assert from "node:assert/strict";

/** Fails unless `actual` deep-equals `expected`. */
export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  assert.deepStrictEqual(actual, expected, message);
}

/** Fails unless `value` is truthy. */
export function assertTrue(value: unknown, message?: string): asserts value {
  assert.ok(value, message);
}

/** Fails unless `fn` throws an error whose message matches `pattern`; returns the error. */
export function assertThrows(fn: () => unknown, pattern?: RegExp): Error {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof Error, "expected the function to throw an Error");
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/** Fails unless the promise rejects with an error whose message matches `pattern`. */
export async function assertRejects(fn: () => Promise<unknown>, pattern?: RegExp): Promise<Error> {
  let caught: unknown;
  try {
    await fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof Error, "expected the promise to reject with an Error");
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/** Fails unless `text` matches `pattern`. */
export function assertMatch(text: string, pattern: RegExp, message?: string): void {
  assert.match(text, pattern, message);
}
