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
