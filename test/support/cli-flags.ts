/** Command-line flags of the long runs and soaks (fuzz and differential runs, bench/fuzz.ts, bench/soak). */

/** flag is the non-negative number after `--name`, or `fallback`; anything else exits 2 with a message. */
export function flag(name: string, fallback: number): number {
  return read(name, fallback, Number.isFinite, "number");
}

/** intFlag is flag for a count or a seed: a non-negative safe integer. */
export function intFlag(name: string, fallback: number): number {
  return read(name, fallback, Number.isSafeInteger, "integer");
}

function read(name: string, fallback: number, ok: (v: number) => boolean, what: string): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!ok(v) || v < 0) {
    console.error(`--${name} needs a non-negative ${what}`);
    process.exit(2);
  }
  return v;
}
