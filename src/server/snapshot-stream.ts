/**
 * The snapshot file's I/O: `SnapshotOut` streams blocks to a file in event-loop-sized slices, and
 * `scanSnapshot` reads a file back block by block, checking everything `snapshot-format.ts` defines.
 *
 * SnapshotOut keeps two block buffers and at most one write in flight: while block N is written,
 * block N+1 is filled in the other buffer; emitting N+1 first waits for N's write. It also keeps
 * the running file CRC and measures the longest stretch of synchronous work between two points
 * where the event loop could run (a `setImmediate` turn, or a write that was really still going:
 * `worstPauseMs`), and when the loop last had a whole turn (`turnStart`), which is what a writer's
 * slice budget counts from: a wait for a write does not always let timers and sockets run.
 *
 * scanSnapshot reads with positional reads into one reused buffer (grown only for a block larger
 * than it, up to the `maxBlock` its caller allows), so a 1 GB file needs ~1 MiB of memory to check
 * or load, and a block length in a hostile file cannot make it allocate more than `maxBlock`.
 */
import type { FileHandle } from "node:fs/promises";
import {
  BLOCK_HEADER_BYTES, BLOCK_TAG, BLOCK_TARGET_BYTES, BlockWriter, checkBlock, checkHeader, checkTrailer, END_TAG,
  HEADER_BYTES, SnapshotCorrupt, TRAILER_BYTES,
} from "./snapshot-format.ts";

const crc32 = Bun.hash.crc32;

/** turn resolves after the event loop has had a turn (timers and sockets run first). */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class SnapshotOut {
  /** pos is the number of bytes emitted so far (the file size once drained). */
  pos = 0;
  blocks = 0;
  /** fileCrc is the CRC of every checksummed byte emitted (all but the trailer). */
  fileCrc = 0;
  worstPauseMs = 0;
  /** sliceStart is when the current stretch of synchronous work began (`now`). */
  sliceStart: number;
  /**
   * turnStart is when the event loop last had a whole turn (`yieldTurn`). A wait for a write ends
   * a stretch of work but is no turn: when the write is done before the wait (values copied from
   * all over the slab are slower to gather than to write), Bun runs the continuation from its task
   * queue without polling sockets or running timers, and a recency-ordered write ran slice after
   * slice so: 25-54 ms between two setImmediate callbacks with 10 ms slices (bench/snapshot.ts).
   */
  turnStart: number;
  /** inFlight is the writer whose block the write in flight may still be reading. */
  private inFlight: BlockWriter | undefined;
  private pending: Promise<void> = Promise.resolve();
  private pendingDone = true;
  /** failure is the error of a write that failed; the next emit or drain throws it. */
  private failure: unknown = undefined;

  /** now is the monotonic ms clock of slices and pauses (default performance.now; tests move it). */
  constructor(
    private readonly fh: FileHandle,
    private readonly writers: readonly [BlockWriter, BlockWriter],
    readonly now: () => number = () => performance.now(),
  ) {
    this.sliceStart = this.turnStart = now();
  }

  /** writer returns a block buffer that no write in flight is reading. */
  writer(): BlockWriter {
    return this.writers[0] !== this.inFlight ? this.writers[0] : this.writers[1];
  }

  /** emitBlock finishes `w`'s block and queues it; `w` stays busy until the next emit. */
  async emitBlock(w: BlockWriter): Promise<void> {
    this.blocks++;
    await this.emit(w.finish());
    this.inFlight = w;
  }

  /** emit queues `bytes` after the previous ones, adding them to the file CRC when `checksummed`. */
  async emit(bytes: Uint8Array, checksummed = true): Promise<void> {
    if (checksummed) this.fileCrc = crc32(bytes, this.fileCrc);
    await this.drain();
    this.pendingDone = false;
    // The write's error is kept, not left as a rejection nobody awaits yet (which would be an
    // unhandled rejection while the next slice runs).
    this.pending = writeAll(this.fh, bytes, this.pos).then(
      () => {
        this.pendingDone = true;
      },
      (e: unknown) => {
        this.pendingDone = true;
        this.failure ??= e;
      },
    );
    this.pos += bytes.length;
  }

  /** drain waits for the write in flight (a real wait ends the current slice) and throws its error. */
  async drain(): Promise<void> {
    if (!this.pendingDone) {
      this.endSlice();
      await this.pending;
      this.sliceStart = this.now();
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /** yieldTurn lets the event loop run (timers, sockets) before the next slice. */
  async yieldTurn(): Promise<void> {
    this.endSlice();
    await turn();
    this.sliceStart = this.turnStart = this.now();
  }

  private endSlice(): void {
    const pause = this.now() - this.sliceStart;
    if (pause > this.worstPauseMs) this.worstPauseMs = pause;
  }
}

/**
 * scanSnapshot reads the `size`-byte snapshot open in `fh`, checking the header, every block's
 * length (at most `maxBlock` bytes, see `maxBlockBytes`), checksum and structure, the file
 * checksum and the trailer, and hands each checked block (a view valid during the call) with the
 * file offset after it to `onBlock`. Between blocks it lets the event loop run once `sliceMs` of
 * work has passed. It returns the total record count, and
 * throws SnapshotCorrupt (or the I/O error) on anything wrong; blocks before the fault have been
 * handed out by then, so a caller that must not act on a bad file scans it twice.
 */
export async function scanSnapshot(
  fh: FileHandle, size: number, maxBlock: number, sliceMs: number,
  onBlock: (block: Uint8Array, end: number, records: number) => void,
): Promise<number> {
  let buf = new Uint8Array(BLOCK_HEADER_BYTES + BLOCK_TARGET_BYTES + (64 << 10));
  if (size < HEADER_BYTES) throw new SnapshotCorrupt("file shorter than the header", size);
  await readExact(fh, buf, HEADER_BYTES, 0);
  checkHeader(buf);
  let fileCrc = crc32(buf.subarray(0, HEADER_BYTES));
  let pos = HEADER_BYTES;
  let blocks = 0;
  let records = 0;
  let sliceStart = performance.now();
  for (;;) {
    if (size - pos < TRAILER_BYTES) throw new SnapshotCorrupt("truncated: the file ends before its trailer", pos);
    await readExact(fh, buf, BLOCK_HEADER_BYTES, pos);
    const dv = new DataView(buf.buffer, buf.byteOffset, BLOCK_HEADER_BYTES);
    const tag = dv.getUint32(0, true);
    if (tag === END_TAG) {
      await readExact(fh, buf, TRAILER_BYTES, pos);
      checkTrailer(buf, pos, blocks, records, fileCrc);
      if (pos + TRAILER_BYTES !== size) throw new SnapshotCorrupt("bytes after the trailer", pos + TRAILER_BYTES);
      return records;
    }
    if (tag !== BLOCK_TAG) throw new SnapshotCorrupt("bad block tag", pos);
    const blockBytes = BLOCK_HEADER_BYTES + dv.getUint32(4, true);
    if (pos + blockBytes + TRAILER_BYTES > size) throw new SnapshotCorrupt("truncated: a block runs past the end of the file", pos);
    if (blockBytes > maxBlock) {
      throw new SnapshotCorrupt(`block of ${blockBytes} B exceeds ${maxBlock} B, the most a block takes of items within this node's max item size`, pos);
    }
    if (blockBytes > buf.length) {
      const grown = new Uint8Array(blockBytes);
      grown.set(buf.subarray(0, BLOCK_HEADER_BYTES));
      buf = grown;
    }
    await readExact(fh, buf.subarray(BLOCK_HEADER_BYTES), blockBytes - BLOCK_HEADER_BYTES, pos + BLOCK_HEADER_BYTES);
    const block = buf.subarray(0, blockBytes);
    const n = checkBlock(block, pos);
    fileCrc = crc32(block, fileCrc);
    records += n;
    blocks++;
    pos += blockBytes;
    onBlock(block, pos, n);
    if (performance.now() - sliceStart >= sliceMs) {
      await turn();
      sliceStart = performance.now();
    }
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, pos: number): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, pos + done);
    done += bytesWritten;
  }
}

/** readExact fills dst[0, len) from file offset `pos`; a file shorter than that is corrupt. */
async function readExact(fh: FileHandle, dst: Uint8Array, len: number, pos: number): Promise<void> {
  for (let done = 0; done < len;) {
    const { bytesRead } = await fh.read(dst, done, len - done, pos + done);
    if (bytesRead === 0) throw new SnapshotCorrupt("unexpected end of file", pos + done);
    done += bytesRead;
  }
}
