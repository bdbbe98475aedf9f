/**
 * Exposition writes metric families in the Prometheus text format 0.0.4, byte for byte as
 * prom-client 15 wrote them. prom-client held the node's one thread, Thrift port included, for
 * 50-70 ms a rendering with 1,000 groups (about 36,000 series): an object per series, a hash of
 * its labels, a line string per series and an array of them per family. This writes each sample
 * straight into bytes as its family's `fill` emits it: a label set already written out
 * (`{group="g1",store="main"}`, or "" for none; `labelSet` escapes values), and a number, written
 * digit by digit when an integer, else as prom-client wrote it (`${v}`, Nan, +Inf, -Inf).
 *
 * Layout as prom-client's: each family `# HELP name help` and `# TYPE name type`, then one line
 * per sample in the order emitted; families in the order added, separated by an empty line; a
 * newline at the end. An unlabelled family that emits nothing shows one sample of 0 (prom-client
 * reset such a metric to 0); a labelled one shows only its HELP and TYPE. (prom-client merged two
 * samples of one label set; a fill must not emit one twice, and none in metrics.ts does.)
 *
 * One synchronous pass: the engine's counters only move between event-loop turns, so a rendering
 * is one consistent snapshot (hits never above gets, a histogram's +Inf bucket its count). Not
 * in slices with turns between them (setImmediate): Bun 1.4.5's HTTP server closes a connection,
 * replies unsent, when a pipelined request arrives while the response before it waits for a
 * later turn (oven-sh/bun#35036; a fix is open, #38128): two scrapes pipelined got nothing.
 *
 * The bytes go into a buffer of the last rendering's size (grown by doubling when short), a
 * rendering's own: the admin port shares a rendering among the scrapes of a second, whose
 * responses may still be sending it while the next one is written.
 */

export type MetricKind = "counter" | "gauge" | "histogram";

/**
 * Labels is a label set written out, `{a="x",b="y"}` ("" for none): as text, or as its UTF-8 bytes
 * (`labelBytes`) where the same set is written again and again (a group's, at every scrape).
 */
export type Labels = string | Uint8Array;

/**
 * Emit adds one sample to the family being written: `labels` its label set, `sample` its name when
 * it is not the family's (a histogram's `_bucket`, `_sum`, `_count`).
 */
export type Emit = (labels: Labels, value: number, sample?: string) => void;

interface Family {
  labelled: boolean;
  fill: (emit: Emit) => void;
  /** head is `# HELP ...\n# TYPE ...` as UTF-8; nameBytes the name, both encoded once. */
  head: Uint8Array;
  nameBytes: Uint8Array;
}

const encoder = new TextEncoder();
/** POW10[d] is 10^d, up to the digits of Number.MAX_SAFE_INTEGER (16). */
const POW10: readonly number[] = Array.from({ length: 16 }, (_, d) => 10 ** d);

export class Exposition {
  private readonly families: Family[] = [];
  private readonly starts: (() => void)[] = [];
  /** sizeHint: the last rendering's length in bytes, the next one's first buffer. */
  private sizeHint = 64 * 1024;

  /** add appends a family; `labelled` is false for one whose samples have no labels. */
  add(kind: MetricKind, name: string, help: string, labelled: boolean, fill: (emit: Emit) => void): void {
    const head = encoder.encode(`# HELP ${escapeText(name)} ${escapeText(help)}\n# TYPE ${escapeText(name)} ${kind}`);
    this.families.push({ labelled, fill, head, nameBytes: encoder.encode(name) });
  }

  /** beforeRender adds a function run at the start of each rendering, before the fills (to forget figures several families shared). */
  beforeRender(start: () => void): void {
    this.starts.push(start);
  }

  /** render runs every family's fill now and returns the exposition, in one synchronous pass. */
  render(): Uint8Array {
    for (const start of this.starts) start();
    const w = new ByteWriter(this.sizeHint + 4096);
    let fam = this.families[0]!;
    let samples = 0;
    const emit: Emit = (labels, value, sample) => {
      w.newline();
      if (sample === undefined) w.bytes(fam.nameBytes);
      else w.text(sample);
      if (typeof labels === "string") w.text(labels);
      else w.bytes(labels);
      w.value(value);
      samples++;
    };
    for (let f = 0; f < this.families.length; f++) {
      fam = this.families[f]!;
      if (f > 0) {
        w.newline();
        w.newline();
      }
      w.bytes(fam.head);
      samples = 0;
      fam.fill(emit);
      if (!fam.labelled && samples === 0) emit("", 0);
    }
    w.newline();
    const out = w.done();
    this.sizeHint = out.length;
    return out;
  }
}

/** labelSet writes out a label set, `{a="x",b="y"}`, its values escaped ("" for no labels). */
export function labelSet(...pairs: [name: string, value: string][]): string {
  return pairs.length === 0 ? "" : `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
}

/** labelBytes is a label set written out (labelSet) as UTF-8, for one written at every scrape. */
export function labelBytes(set: string): Uint8Array {
  return encoder.encode(set);
}

/** escapeLabel escapes a label value as the format wants: backslash, newline, double quote. */
export function escapeLabel(v: string): string {
  return /[\\\n"]/.test(v) ? escapeText(v).replace(/"/g, '\\"') : v;
}

/** escapeText escapes HELP text (and names) as prom-client did: backslash and newline. */
function escapeText(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** valueText is a non-integer value as prom-client wrote it (NaN as "Nan", as it did). */
function valueText(v: number): string {
  if (Number.isNaN(v)) return "Nan";
  if (!Number.isFinite(v)) return v < 0 ? "-Inf" : "+Inf";
  return `${v}`;
}

/**
 * ByteWriter appends to a Uint8Array grown by doubling, and hands out the written part as a
 * view. ASCII strings are copied a char at a time; one with other chars goes through TextEncoder.
 */
class ByteWriter {
  private buf: Uint8Array;
  private pos = 0;

  constructor(size: number) {
    this.buf = new Uint8Array(size);
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    if (b.length > 32) this.buf.set(b, this.pos);
    else for (let i = 0; i < b.length; i++) this.buf[this.pos + i] = b[i]!;
    this.pos += b.length;
  }

  text(s: string): void {
    this.room(s.length * 3); // (UTF-8 takes at most 3 bytes per UTF-16 unit)
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.pos += encoder.encodeInto(s, buf.subarray(this.pos)).written;
        return;
      }
      buf[p++] = c;
    }
    this.pos = p;
  }

  newline(): void {
    this.room(1);
    this.buf[this.pos++] = 0x0a;
  }

  /** value writes " " and the number: integers digit by digit, others as valueText. */
  value(v: number): void {
    if (!Number.isSafeInteger(v)) {
      this.text(` ${valueText(v)}`);
      return;
    }
    this.room(18);
    const buf = this.buf;
    buf[this.pos++] = 0x20;
    if (v < 0) {
      buf[this.pos++] = 0x2d;
      v = -v;
    }
    let digits = 1;
    while (digits < POW10.length && v >= POW10[digits]!) digits++;
    const end = this.pos + digits;
    if (v <= 0x7fffffff) {
      // (int32 arithmetic: most figures are small)
      let n = v | 0;
      for (let i = end - 1; i > this.pos; i--) {
        const q = (n / 10) | 0;
        buf[i] = 0x30 + n - q * 10;
        n = q;
      }
      buf[this.pos] = 0x30 + n;
    } else {
      for (let i = end - 1; i >= this.pos; i--) {
        buf[i] = 0x30 + (v % 10);
        v = Math.floor(v / 10);
      }
    }
    this.pos = end;
  }

  /** done is the bytes written (a view of the buffer, which this writer no longer touches). */
  done(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
  }
}
