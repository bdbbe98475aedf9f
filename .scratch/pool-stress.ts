import { LoaderPool } from "../src/loaders/loader-pool.ts";
import { loaderLength } from "../bench/soak/ledger.ts";
const pool = await LoaderPool.open({ module: "bench/soak/loader.ts", threads: 1, queue: 1024 });
let bad = 0, ok = 0, nul = 0, errs = 0;
const N = Number(process.argv[2] ?? 100000);
let i = 0;
async function lane() {
  while (i < N) {
    const k = `w${(i++ * 7919) % 20000}`;
    try {
      const r = await pool.run("ld", k);
      const want = loaderLength(k);
      if (r === null) { if (want !== null) { bad++; console.log("NULL for", k); } else nul++; }
      else if (want === null || (r as Uint8Array).length !== want) { bad++; console.log("WRONG for", k, (r as Uint8Array).length, want); }
      else ok++;
    } catch (e) { errs++; if (errs < 5) console.log(String(e)); }
  }
}
await Promise.all(Array.from({ length: 64 }, lane));
console.log({ ok, nul, bad, errs });
await pool.close();
