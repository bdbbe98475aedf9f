/** The soaks' command-line flags (soak.ts, cluster-soak.ts). */

/** flag is the non-negative number after `--name`, or `fallback`; anything else exits 2 with a message. */
export function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v < 0) {
    console.error(`--${name} needs a non-negative number`);
    process.exit(2);
  }
  return v;
}
