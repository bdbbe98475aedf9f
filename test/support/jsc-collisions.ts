/**
 * jscCollidingKeys makes byte keys whose strings share one JavaScriptCore string hash, the hash
 * a `Map<string, …>` keys by: the flood `sortedByBytes` (src/bytes/bytes.ts) is there against.
 *
 * Bun's JavaScriptCore hashes a string with rapidhash under fixed secrets and no per-process
 * seed (WTF/wtf/text/RapidHash.h in oven-sh/WebKit). Its last step multiplies the last 16 bytes'
 * halves, each blinded by a secret: a string whose bytes at `length - 16` equal the first secret
 * makes that product 0, and the hash depends on the length alone. The other 16 bytes of a
 * 24-byte key are free: key i spells i in them. (Measured, Bun 1.4.5: 50,000 such keys took a
 * Map 13.8 s to fill, 18 ms when the secret sits one byte off.)
 */
const SECRET = [0xc9, 0xac, 0x2e, 0x96, 0x93, 0x4b, 0xb8, 0x8b];
export const JSC_KEY_BYTES = 24;

export function jscCollidingKeys(count: number, tag = 0): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const key = new Uint8Array(JSC_KEY_BYTES);
    let x = i;
    for (let p = 0; p < JSC_KEY_BYTES; p++) {
      key[p] = 0x61 + (x % 26);
      x = Math.floor(x / 26);
    }
    key[JSC_KEY_BYTES - 1] = 0x30 + tag;
    key.set(SECRET, JSC_KEY_BYTES - 16);
    out.push(key);
  }
  return out;
}

/**
 * jscCollidingTextKeys makes printable ASCII keys (so valid UTF-8: a loader takes them, unlike
 * jscCollidingKeys's) whose strings share one JavaScriptCore string hash: 32-byte keys
 * `prefix (16) | free (8) | tail (8)`. For 17 to 32 bytes, rapidhash folds the first 16 bytes
 * into its seed once, then multiplies `(a ^ secret) * (b ^ seed)` for the last two 8-byte words a
 * and b: a tail equal to that seed makes the product 0, whatever a is, and the hash depends on
 * the length alone. The seed depends on the prefix only, so prefixes are tried until the seed's
 * bytes are printable ASCII (about 1 in 2,800). Key i spells i in base 36 in seven of the free
 * bytes, and `tag` (a letter) in the eighth.
 * (Measured, Bun 1.4.5: 20,000 such keys took a Map 2.5 s to fill, 5 ms rotated one byte.)
 */
export const JSC_TEXT_KEY_BYTES = 32;

const M64 = (1n << 64n) - 1n;
const RAPID_SECRET = [0x2d358dccaa6c78a5n, 0x8bb84b93962eacc9n, 0x4b33a62ed433d4a3n] as const;
/** rapidMix: the 128-bit product of a and b, its halves xored. */
const rapidMix = (a: bigint, b: bigint): bigint => {
  const r = a * b;
  return (r & M64) ^ (r >> 64n);
};
const word = (bytes: Uint8Array, at: number): bigint => {
  let w = 0n;
  for (let i = 7; i >= 0; i--) w = (w << 8n) | BigInt(bytes[at + i]!);
  return w;
};

const DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz";
let textFlood: { prefix: Uint8Array; tail: Uint8Array } | undefined;

function findTextFlood(): { prefix: Uint8Array; tail: Uint8Array } {
  const [s0, s1, s2] = RAPID_SECRET;
  const start = rapidMix(s0, s1) ^ BigInt(JSC_TEXT_KEY_BYTES);
  const enc = new TextEncoder();
  for (let n = 0; ; n++) {
    const prefix = enc.encode(`flood${n}`.padEnd(16, "-"));
    const seed = rapidMix(word(prefix, 0) ^ s2, word(prefix, 8) ^ start ^ s1);
    const tail = new Uint8Array(8);
    for (let i = 0; i < 8; i++) tail[i] = Number((seed >> BigInt(8 * i)) & 0xffn);
    if (tail.every((c) => c >= 0x20 && c <= 0x7e)) return { prefix, tail };
  }
}

export function jscCollidingTextKeys(count: number, tag = 0): Uint8Array[] {
  textFlood ??= findTextFlood();
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const key = new Uint8Array(JSC_TEXT_KEY_BYTES);
    key.set(textFlood.prefix);
    for (let p = 0, x = i; p < 7; p++, x = Math.floor(x / 36)) key[16 + p] = DIGITS.charCodeAt(x % 36);
    key[23] = 0x41 + tag;
    key.set(textFlood.tail, 24);
    out.push(key);
  }
  return out;
}
