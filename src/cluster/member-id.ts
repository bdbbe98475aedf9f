/**
 * Member ids: `host:port`, an IPv6 host in brackets (a link-local one with its zone), read once
 * where they come in (--self, --peers, a peers file, a DNS answer) and kept in one canonical
 * spelling. The id is what the ring hashes, what a node looks for to find itself and what
 * duplicates are told by, so one node written two ways (`127.0.0.1:08001`, `[0:0:0:0:0:0:0:1]:8001`,
 * `Cache-A.:8001`) was two members, or a node that did not find itself.
 *
 * The canonical spelling (`canonicalMember`):
 * - the port in decimal without leading zeros (it may be written with some);
 * - an IPv6 address as RFC 5952 writes it: lower-case hex without leading zeros, the longest run
 *   of two or more zero groups (the first of equal runs) as `::`, and an IPv4-mapped address
 *   (::ffff:0:0/96) with its IPv4 part dotted (`[::ffff:10.0.0.1]:8001`); a zone is kept as written
 *   (interface names are case-sensitive);
 * - a host name in lower case (ASCII: DNS names are case-insensitive), without one trailing dot
 *   (`cache-a.` is the same host as `cache-a`); a dotted IPv4 address as written.
 * An id already written so is left as it is, so it hashes to the same ring points as before.
 *
 * The id is not what a node dials: `dialSpelling` keeps a host name's trailing dot as written,
 * and `memberAddress` reads the host to connect to (and resolve) from it. The dot makes the name
 * absolute: dropped, the resolver tries the search domains first (more lookups, and under
 * Kubernetes' ndots:5 perhaps another answer).
 */

/** MEMBER_ID is a member id's form: `host:port`, an IPv6 host in brackets (a link-local one with its zone). */
const MEMBER_ID = /^([^\s:/\[\]]+|\[([0-9a-fA-F:.]+)(%[\w.-]+)?\]):(\d{1,16})$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/**
 * canonicalMember returns the canonical spelling of member id `id` (see the header), or undefined
 * when it is not one: not `host:port`, a port not 1..65535, brackets that do not hold an IPv6 address.
 */
export function canonicalMember(id: string): string | undefined {
  const m = MEMBER_ID.exec(id);
  if (m === null) return undefined;
  const port = Number(m[4]);
  if (port < 1 || port > 65535) return undefined;
  if (m[2] === undefined) return `${canonicalName(m[1]!)}:${port}`;
  const groups = ipv6Groups(m[2]);
  if (groups === undefined) return undefined;
  return `[${formatIpv6(groups)}${m[3] ?? ""}]:${port}`;
}

/**
 * dialSpelling returns `id` as a node dials it: its canonical spelling, but a host name written
 * with a trailing dot keeps it (not a dotted IPv4 address: that is no name to look up); undefined
 * when `id` is not an id. It is its own dialSpelling.
 */
export function dialSpelling(id: string): string | undefined {
  const canonical = canonicalMember(id);
  if (canonical === undefined || id.startsWith("[")) return canonical;
  const host = id.slice(0, id.lastIndexOf(":"));
  if (host.length < 2 || !host.endsWith(".") || IPV4.test(host.slice(0, -1))) return canonical;
  const colon = canonical.lastIndexOf(":");
  return `${canonical.slice(0, colon)}.${canonical.slice(colon)}`;
}

/** canonicalName lower-cases a host name's ASCII letters and drops one trailing dot. */
function canonicalName(host: string): string {
  const name = host.length > 1 && host.endsWith(".") ? host.slice(0, -1) : host;
  return /[A-Z]/.test(name) ? name.replace(/[A-Z]+/g, (s) => s.toLowerCase()) : name;
}

/** ipv6Groups reads an IPv6 address (RFC 4291 text, an IPv4 tail allowed) as its 8 groups; undefined when it is not one. */
export function ipv6Groups(text: string): number[] | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const read = (part: string, last: boolean): number[] | undefined => {
    if (part === "") return [];
    const fields = part.split(":");
    const out: number[] = [];
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i]!;
      if (last && i === fields.length - 1 && f.includes(".")) {
        if (!IPV4.test(f)) return undefined;
        const [a, b, c, d] = f.split(".").map(Number) as [number, number, number, number];
        out.push((a << 8) | b, (c << 8) | d);
      } else if (HEX_GROUP.test(f)) out.push(parseInt(f, 16));
      else return undefined;
    }
    return out;
  };
  const head = read(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? read(halves[1]!, true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const zeros = 8 - head.length - tail.length;
  if (halves.length === 1 ? zeros !== 0 : zeros < 1) return undefined;
  return [...head, ...new Array<number>(zeros).fill(0), ...tail];
}

/** formatIpv6 writes 8 groups as RFC 5952 does (section 4, and 5 for IPv4-mapped addresses). */
export function formatIpv6(g: readonly number[]): string {
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`;
  }
  let best = -1;
  let bestLen = 1; // a single zero group is not shortened
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(":");
  return best < 0 ? hex(0, 8) : `${hex(0, best)}::${hex(best + bestLen, 8)}`;
}

/**
 * memberAddress reads a member id (`host:port`, `[::1]:8001`, `[fe80::1%eth0]:8001`) as the host to
 * connect to (brackets dropped; a name's trailing dot kept: dialSpelling) and the port; undefined
 * when it is not one (canonicalMember).
 */
export function memberAddress(id: string): { host: string; port: number } | undefined {
  const dial = dialSpelling(id);
  if (dial === undefined) return undefined;
  const colon = dial.lastIndexOf(":");
  return { host: dial.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(dial.slice(colon + 1)) };
}

/** memberAddressOf is memberAddress for an id a client is made for: not one throws RangeError. */
export function memberAddressOf(id: string): { host: string; port: number } {
  const at = memberAddress(id);
  if (at === undefined) throw new RangeError(`member '${id}' is not host:port with a port of 1..65535`);
  return at;
}

/**
 * canonicalMembers returns the canonical ids of `ids` in their order, each once; `onRepeat` is
 * told of each id that names a member listed before it (as written, and the member), and
 * `dialAs` gets each member's dialSpelling where it is not the id (its first spelling's). An id
 * that is not one throws Error.
 */
export function canonicalMembers(ids: Iterable<string>, onRepeat?: (written: string, member: string) => void, dialAs?: Map<string, string>): string[] {
  const out = new Set<string>();
  for (const id of ids) {
    const c = canonicalMember(id);
    if (c === undefined) throw new Error(`bad member '${id}': expected host:port (port 1..65535)`);
    if (out.has(c)) {
      onRepeat?.(id, c);
      continue;
    }
    out.add(c);
    const dial = dialAs === undefined ? c : dialSpelling(id)!;
    if (dial !== c) dialAs!.set(c, dial);
  }
  return [...out];
}
