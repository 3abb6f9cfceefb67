/**
 * Splits a command line into options the way glibc's `getopt_long()` does with a
 * leading `+` in the option string (as passt calls it):
 *
 * - `--name=value`, `--name value`, `-xVALUE`, `-x VALUE`, clusters such as `-fd`;
 * - a long name may be abbreviated to any unique prefix; an exact match wins over
 *   longer names it is a prefix of; prefixes matching several names are an error
 *   naming every candidate, unless all candidates are spellings of the same option;
 * - a required argument is the rest of the word or the next word, whatever it looks
 *   like (`--fd -1` gives `-1`);
 * - `--` ends the options; the first non-option word stops parsing too, and is an
 *   error here since passt takes no operands.
 *
 * The result keeps every occurrence in order: what repetitions mean (the last wins,
 * or they add up) is for the caller.
 *
 * @module
 */

/** One option as the tokenizer knows it. */
export interface OptionDefinition {
  /** Canonical long name, without `--`. */
  readonly name: string;
  /** Other long names for the same option (e.g. `socket-path` for `socket`). */
  readonly aliases?: readonly string[];
  /** Single-character short form, without `-`. */
  readonly short?: string;
  /** Whether it takes a (required) argument. */
  readonly argument: boolean;
  /** Only an exact `--name` selects it: never matched by an abbreviation (internal options). */
  readonly exactOnly?: boolean;
}

/** One option found on the command line. */
export interface OptionOccurrence {
  /** Canonical long name of the option. */
  readonly name: string;
  /** Its argument, or null for an option without one. */
  readonly value: string | null;
  /** How it was written (`-d`, `--deb`, `--mtu`), for messages. */
  readonly spelling: string;
}

/** A command line getopt_long() would refuse; the message names the culprit. */
export class GetoptError extends Error {
  override name = "GetoptError";
}

/** Result of {@link getoptLong}. */
export interface GetoptResult {
  readonly options: readonly OptionOccurrence[];
  /** Words left after `--` or after the first non-option word. */
  readonly operands: readonly string[];
}

interface LongName {
  readonly text: string;
  readonly option: OptionDefinition;
}

/** Resolves a long name the way getopt_long() does (exact, else unique prefix). */
function resolveLong(names: readonly LongName[], wanted: string): OptionDefinition {
  const exact = names.find((n) => n.text === wanted);
  if (exact !== undefined) return exact.option;
  const candidates = names.filter((n) => !n.option.exactOnly && n.text.startsWith(wanted));
  if (candidates.length === 0) throw new GetoptError(`unrecognized option '--${wanted}'`);
  const distinct = new Set(candidates.map((c) => c.option));
  if (distinct.size > 1) {
    throw new GetoptError(
      `option '--${wanted}' is ambiguous; possibilities: ` +
        candidates.map((c) => `'--${c.text}'`).join(" "),
    );
  }
  return candidates[0].option;
}

/**
 * Tokenizes `args` (without the program name) against `definitions`.
 * @param stopAt canonical names after which parsing stops at once (like passt's
 *   `--help` and `--version`, which act as soon as getopt returns them)
 * @throws GetoptError for an unknown or ambiguous option, or a missing or unexpected argument
 */
export function getoptLong(
  args: readonly string[],
  definitions: readonly OptionDefinition[],
  stopAt: ReadonlySet<string> = new Set(),
): GetoptResult {
  const longNames: LongName[] = definitions.flatMap((option) =>
    [option.name, ...(option.aliases ?? [])].map((text) => ({ text, option }))
  );
  const shortNames = new Map<string, OptionDefinition>();
  for (const option of definitions) if (option.short) shortNames.set(option.short, option);
  const options: OptionOccurrence[] = [];
  let i = 0;
  while (i < args.length) {
    const word = args[i];
    if (word === "--") return { options, operands: args.slice(i + 1) };
    if (!word.startsWith("-") || word === "-") return { options, operands: args.slice(i) };
    i++;
    if (word.startsWith("--")) {
      const equals = word.indexOf("=");
      const wanted = equals < 0 ? word.slice(2) : word.slice(2, equals);
      const option = resolveLong(longNames, wanted);
      let value: string | null = null;
      if (option.argument) {
        if (equals >= 0) value = word.slice(equals + 1);
        else if (i < args.length) value = args[i++];
        else throw new GetoptError(`--${option.name}: option requires an argument`);
      } else if (equals >= 0) {
        throw new GetoptError(`--${option.name}: option takes no argument`);
      }
      options.push({ name: option.name, value, spelling: `--${wanted}` });
      if (stopAt.has(option.name)) return { options, operands: [] };
      continue;
    }
    for (let k = 1; k < word.length; k++) {
      const letter = word[k];
      const option = shortNames.get(letter);
      if (option === undefined) throw new GetoptError(`unrecognized option '-${letter}'`);
      let value: string | null = null;
      if (option.argument) {
        if (k + 1 < word.length) value = word.slice(k + 1);
        else if (i < args.length) value = args[i++];
        else throw new GetoptError(`--${option.name}: option requires an argument`);
      }
      options.push({ name: option.name, value, spelling: `-${letter}` });
      if (stopAt.has(option.name)) return { options, operands: [] };
      if (option.argument) break;
    }
  }
  return { options, operands: [] };
}
