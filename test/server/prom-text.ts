/**
 * parsePromText: a strict parser of the Prometheus text exposition format 0.0.4, for tests.
 *
 * It throws on the first line that is not well formed, and on what the format forbids across
 * lines: a second HELP or TYPE for a name, a TYPE after the family's samples, a family's samples
 * split by another family, a duplicate series, a duplicate label, a reserved (`__`) label, a
 * negative or NaN counter, and a histogram that is not one: per series, `le` buckets ascending
 * and cumulative, ending with `+Inf` equal to `_count`, with a `_sum`. Label values must use
 * the format's escapes (\\, \", \n); values parse as Go's ParseFloat does (NaN, ±Inf in any case).
 */

export type MetricKind = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: MetricKind;
  help: string | undefined;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const KINDS = new Set<string>(["counter", "gauge", "histogram", "summary", "untyped"]);

export function parsePromText(text: string): Map<string, Family> {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("exposition does not end with a newline");
  const families = new Map<string, Family>();
  const closed = new Set<string>();
  const series = new Set<string>();
  const typed = new Set<string>();
  let current: Family | undefined;
  const lines = text.split("\n");
  lines.pop();
  lines.forEach((line, i) => {
    const fail = (why: string): never => {
      throw new Error(`line ${i + 1}: ${why}: ${JSON.stringify(line)}`);
    };
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      if (m === null) return; // an ordinary comment
      const [, keyword, name, rest = ""] = m as unknown as [string, "HELP" | "TYPE", string, string | undefined];
      if (NAME.exec(name)?.[0] !== name) fail("bad metric name");
      const fam = families.get(name) ?? newFamily(families, name);
      if (keyword === "HELP") {
        if (fam.help !== undefined) fail("second HELP");
        fam.help = unescapeHelp(rest, fail);
      } else {
        if (typed.has(name)) fail("second TYPE");
        if (!KINDS.has(rest)) fail("unknown type");
        if (fam.samples.length > 0) fail("TYPE after samples");
        fam.type = rest as MetricKind;
        typed.add(name);
      }
      if (closed.has(name)) fail("family continued after another family");
      if (current !== undefined && current !== fam) closed.add(current.name);
      current = fam;
      return;
    }
    const sample = parseSample(line, fail);
    const fam = familyOf(families, sample.name);
    if (closed.has(fam.name)) fail("family continued after another family");
    if (current !== undefined && current !== fam) closed.add(current.name);
    current = fam;
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (series.has(key)) fail("duplicate series");
    series.add(key);
    if (fam.type === "counter" && !(sample.value >= 0)) fail("counter below zero or NaN");
    if ((fam.type === "histogram" && sample.name === `${fam.name}_bucket`) !== ("le" in sample.labels)) {
      fail("le label on a sample other than a histogram bucket, or a bucket without it");
    }
    fam.samples.push(sample);
  });
  for (const fam of families.values()) if (fam.type === "histogram") checkHistogram(fam);
  return families;
}

function newFamily(families: Map<string, Family>, name: string): Family {
  const fam: Family = { name, type: "untyped", help: undefined, samples: [] };
  families.set(name, fam);
  return fam;
}

/** familyOf finds the family a sample name belongs to (a histogram's _bucket/_sum/_count...). */
function familyOf(families: Map<string, Family>, name: string): Family {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const base = families.get(name.slice(0, -suffix.length));
    if (base?.type === "histogram" || (base?.type === "summary" && suffix !== "_bucket")) return base;
  }
  return families.get(name) ?? newFamily(families, name);
}

function parseSample(line: string, fail: (why: string) => never): Sample {
  const name = NAME.exec(line)?.[0] ?? fail("no metric name");
  let p = name.length;
  const labels: Record<string, string> = {};
  if (line[p] === "{") {
    p++;
    while (line[p] !== "}") {
      const label = LABEL_NAME.exec(line.slice(p))?.[0] ?? fail("bad label name");
      if (label.startsWith("__")) fail("reserved label name");
      if (label in labels) fail("duplicate label");
      p += label.length;
      if (line[p] !== "=" || line[p + 1] !== '"') fail("expected =\"");
      p += 2;
      let value = "";
      for (;;) {
        const c = line[p++] ?? fail("unterminated label value");
        if (c === '"') break;
        if (c !== "\\") {
          value += c;
          continue;
        }
        const e = line[p++];
        if (e === "\\") value += "\\";
        else if (e === '"') value += '"';
        else if (e === "n") value += "\n";
        else fail("bad escape in label value");
      }
      labels[label] = value;
      if (line[p] === ",") p++;
      else if (line[p] !== "}") fail("expected , or }");
    }
    p++;
  }
  const rest = line.slice(p);
  const m = /^[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$/.exec(rest) ?? fail("expected a value and an optional timestamp");
  return { name, labels, value: parseValue(m[1]!, fail) };
}

/** parseValue accepts what Go's strconv.ParseFloat does for the format: decimals, NaN, ±Inf. */
function parseValue(s: string, fail: (why: string) => never): number {
  const lower = s.toLowerCase();
  if (lower === "nan") return NaN;
  if (lower === "+inf" || lower === "inf") return Infinity;
  if (lower === "-inf") return -Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) fail(`bad value ${s}`);
  return Number(s);
}

function unescapeHelp(s: string, fail: (why: string) => never): string {
  return s.replace(/\\(.?)/g, (_, e: string) => (e === "\\" ? "\\" : e === "n" ? "\n" : fail("bad escape in HELP")));
}

function checkHistogram(fam: Family): void {
  const groups = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of fam.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const g = groups.get(key) ?? { buckets: [] };
    groups.set(key, g);
    if (s.name === `${fam.name}_bucket`) g.buckets.push([parseValue(le!, (why) => { throw new Error(`${fam.name}: ${why}`); }), s.value]);
    else if (s.name === `${fam.name}_sum`) g.sum = s.value;
    else if (s.name === `${fam.name}_count`) g.count = s.value;
    else throw new Error(`${fam.name}: sample ${s.name} in a histogram`);
  }
  for (const [key, g] of groups) {
    const where = `${fam.name}${key}`;
    if (g.buckets.length === 0 || g.sum === undefined || g.count === undefined) throw new Error(`${where}: needs buckets, _sum and _count`);
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(g.buckets[i]![0] > g.buckets[i - 1]![0])) throw new Error(`${where}: le not ascending`);
      if (!(g.buckets[i]![1] >= g.buckets[i - 1]![1])) throw new Error(`${where}: buckets not cumulative`);
    }
    const last = g.buckets[g.buckets.length - 1]!;
    if (last[0] !== Infinity) throw new Error(`${where}: last bucket is not +Inf`);
    if (last[1] !== g.count) throw new Error(`${where}: +Inf bucket ${last[1]} != _count ${g.count}`);
  }
}

/** sampleValue returns the value of the sample `name` whose labels include `labels`, or throws. */
export function sampleValue(families: Map<string, Family>, family: string, name: string, labels: Record<string, string> = {}): number {
  const fam = families.get(family);
  if (fam === undefined) throw new Error(`no family ${family}`);
  const found = fam.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name} with ${JSON.stringify(labels)}`);
  return found[0]!.value;
}
