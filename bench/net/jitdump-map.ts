// jitdump-map: turn JavaScriptCore's JIT dump into a perf map, so `perf report` names the JIT
// code of a profiled node (`JSC-FTL: serve#…`) instead of showing bare addresses.
//
//   mkdir -p /tmp/jd
//   BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=/tmp/jd taskset -c 0 bun node.ts --port 9000 &
//   perf record -F 1999 -g -p <pid> -o /tmp/perf.data -- sleep 4     # under load
//   bun bench/net/jitdump-map.ts /tmp/jd/jit-*.dump                   # writes /tmp/perf-<pid>.map
//   perf report -i /tmp/perf.data --no-children --sort symbol
//
// The dump (Linux perf's jitdump format) is a 40-byte header (magic, version, header size,
// machine, pad, pid, timestamp, flags) and records of { u32 id, u32 size, u64 timestamp, body }.
// A JIT_CODE_LOAD record (id 0) is followed by { u32 pid, u32 tid, u64 vma, u64 code address,
// u64 code size, u64 index, name NUL-terminated, code bytes }. Code freed and recompiled at the
// same address shows up as a later record over the same range: the later one wins.
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
if (path === undefined) throw new Error("usage: bun bench/net/jitdump-map.ts /path/to/jit-<pid>.dump");
const bytes = readFileSync(path);
const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
const headerSize = view.getUint32(8, true);
const pid = view.getUint32(20, true);
let entries: { start: bigint; size: bigint; name: string }[] = [];
for (let at = headerSize; at + 16 <= bytes.length;) {
  const id = view.getUint32(at, true);
  const size = view.getUint32(at + 4, true);
  if (size === 0) break;
  if (id === 0) {
    const start = view.getBigUint64(at + 16 + 16, true);
    const length = view.getBigUint64(at + 16 + 24, true);
    const nameAt = at + 16 + 40;
    const name = bytes.toString("utf8", nameAt, bytes.indexOf(0, nameAt));
    entries = entries.filter((e) => e.start + e.size <= start || e.start >= start + length);
    entries.push({ start, size: length, name });
  }
  at += size;
}
entries.sort((a, b) => (a.start < b.start ? -1 : 1));
const out = `/tmp/perf-${pid}.map`;
writeFileSync(out, entries.map((e) => `${e.start.toString(16)} ${e.size.toString(16)} ${e.name}`).join("\n") + "\n");
console.log(`${out}: ${entries.length} symbols`);
