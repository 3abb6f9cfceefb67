/**
 * tpasst entry point: parse argv into a Config, then start. Nothing else.
 * @module
 */
console.error("tpasst: not yet implemented");
Deno.exit(1);
