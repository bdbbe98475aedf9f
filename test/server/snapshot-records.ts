/** snapshotRecords: the records of a snapshot file in file order, read for tests (the format: src/server/snapshot-format.ts). */
import { open } from "node:fs/promises";
import { BLOCK_HEADER_BYTES, RECORD_HEADER_BYTES, maxBlockBytes } from "../../src/server/snapshot-format.ts";
import { scanSnapshot } from "../../src/server/snapshot-stream.ts";

const dec = new TextDecoder();

/** snapshotRecords lists the records of the snapshot at `file`, whatever their group: each key (UTF-8) and a copy of its value. */
export async function snapshotRecords(file: string): Promise<{ key: string; value: Uint8Array }[]> {
  const out: { key: string; value: Uint8Array }[] = [];
  const fh = await open(file, "r");
  try {
    await scanSnapshot(fh, (await fh.stat()).size, maxBlockBytes(1 << 20), 10, (block, _end, n) => {
      const dv = new DataView(block.buffer, block.byteOffset, block.length);
      let p = BLOCK_HEADER_BYTES + 2 + dv.getUint16(BLOCK_HEADER_BYTES, true);
      for (let r = 0; r < n; r++) {
        const keyLen = dv.getUint16(p + 8, true);
        const valLen = dv.getUint32(p + 10, true);
        const keyOff = p + RECORD_HEADER_BYTES;
        out.push({ key: dec.decode(block.subarray(keyOff, keyOff + keyLen)), value: block.slice(keyOff + keyLen, keyOff + keyLen + valLen) });
        p = keyOff + keyLen + valLen;
      }
    });
  } finally {
    await fh.close();
  }
  return out;
}
