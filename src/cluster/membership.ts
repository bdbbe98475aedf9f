/**
 * Membership sources: where a node learns the member list of its cluster.
 *
 * A source calls `onChange(members)` with the full list of node ids (`host:port`) whenever it
 * learns one (at start, then on every change); the cluster diffs it against the ring. Every
 * source hands on ids in their canonical spelling, each once (member-id.ts): a member listed
 * twice, however written, counts once, logged as such by --peers and a peers file; with them, the
 * spelling each is dialled by where that differs (a name's trailing dot, as first written). Three sources:
 * - `StaticMembers`: `--peers a:1,b:2` — a fixed list.
 * - `FileMembers`: `--peers-file PATH` — one `host:port` per line (or comma-separated; `#` starts
 *   a comment), re-read on any event in its directory (fs.watch, so editors that replace the file
 *   by renaming are seen, and a Kubernetes ConfigMap's `..data` swap), once more shortly after
 *   (a burst of writes), every FILE_POLL_MS (fs.watch can miss a change), and on `reload()`
 *   (SIGHUP). An unreadable or empty file, one that is not a regular file (a FIFO's read would
 *   never end, and every later reload wait behind it), one over 1 MiB or of more than MAX_MEMBERS
 *   members, keeps the last good list and logs why, so a half-written file never empties the ring.
 * - `DnsMembers`: `--peers-dns name:port` — every A/AAAA record of `name` is a member on `port`,
 *   re-resolved periodically: the Kubernetes headless-service convention. A dual-stack name
 *   answers each node twice, an A and an AAAA record: when an answer holds both families, only
 *   the addresses of --self's family are members (taken as two members, a node owned the keys of
 *   its other address under an id that is never its --self: forwarded there, they were served as
 *   another member's, never stored, or not reached at all). The resolver is injectable (tests
 *   map one name to several loopback addresses). A failed lookup keeps the last good list.
 */
import { errorText } from "../protocol/errors.ts";
import { hostPort } from "../bytes/bytes.ts";
import { canonicalMembers } from "./member-id.ts";
import { constants, watch, type FSWatcher, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { dirname } from "node:path";

/**
 * MembersCallback applies a member list; false (or a throw) means not all of it could be (a member
 * left out), and the source tries the same list again at its next read. `dialAs` maps a member
 * to the spelling it is dialled by where that is not its id (a name's trailing dot: member-id.ts).
 */
export type MembersCallback = (members: string[], dialAs?: ReadonlyMap<string, string>) => boolean | void;

export interface MembershipLogger {
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
}

export interface MembershipSource {
  start(onChange: MembersCallback): void;
  /** reload re-reads the source now (SIGHUP). */
  reload(): void;
  close(): void;
}

/**
 * parseMembers reads `host:port` ids separated by newlines or commas; `#` starts a comment. An
 * IPv6 host is in brackets, a link-local one with its zone (`[fe80::1%eth0]:8001`). The ids come
 * out canonical (member-id.ts), each once; `onRepeat` is told of an id that names a member
 * listed before it; `dialAs` gets the spellings to dial (canonicalMembers).
 */
export function parseMembers(text: string, onRepeat?: (written: string, member: string) => void, dialAs?: Map<string, string>): string[] {
  const ids = text.split("\n").flatMap((line) => line.replace(/#.*/, "").split(",")).map((id) => id.trim()).filter((id) => id !== "");
  const members = canonicalMembers(ids, onRepeat, dialAs);
  if (members.length > MAX_MEMBERS) throw new Error(`more than ${MAX_MEMBERS} members`);
  return members;
}

/** warnRepeats is an onRepeat that logs each member listed twice, counted once. */
function warnRepeats(logger: MembershipLogger, source: string): (written: string, member: string) => void {
  return (written, member) => logger.warn("member listed twice: counted once", { source, written, member });
}

/**
 * MAX_MEMBERS bounds a member list (each member costs the ring its virtual nodes, and a client):
 * a longer one, a hostile or broken file or DNS answer, is refused and the last good list kept.
 */
export const MAX_MEMBERS = 1024;
/** MAX_PEERS_FILE_BYTES bounds the peers file read (MAX_MEMBERS ids take well under it). */
const MAX_PEERS_FILE_BYTES = 1 << 20;
/**
 * FILE_POLL_MS: a peers file is also re-read this often. fs.watch can miss a change (a second
 * write right after the first; a Kubernetes ConfigMap, whose `..data` symlink is swapped; a
 * directory replaced), and reads are cheap: an unchanged file is one small read and a comparison.
 */
const FILE_POLL_MS = 2_000;
/** FILE_SETTLE_MS: after a watch event the file is read again this much later (a burst of writes). */
const FILE_SETTLE_MS = 100;

/**
 * applyMembers hands a new list to the node; a failure is logged, and the next change is applied
 * as usual (reloads are chained: one that threw would otherwise stop every later one).
 */
function applyMembers(onChange: MembersCallback | null, members: string[], logger: MembershipLogger, dialAs?: ReadonlyMap<string, string>): boolean {
  try {
    return onChange?.(members, dialAs) !== false;
  } catch (e) {
    logger.warn("member list not applied", { members: members.join(","), error: errorText(e) });
    return false;
  }
}

export class StaticMembers implements MembershipSource {
  private readonly members: string[];
  private readonly dialAs = new Map<string, string>();
  private onChange: MembersCallback | null = null;

  /** members are read as parseMembers reads them (a bad one throws); a repeat is logged to `logger`. */
  constructor(members: readonly string[], logger?: MembershipLogger) {
    this.members = canonicalMembers(members, logger === undefined ? undefined : warnRepeats(logger, "--peers"), this.dialAs);
  }

  start(onChange: MembersCallback): void {
    this.onChange = onChange;
    onChange([...this.members], this.dialAs);
  }

  reload(): void {
    this.onChange?.([...this.members], this.dialAs);
  }

  close(): void {
    this.onChange = null;
  }
}

export class FileMembers implements MembershipSource {
  private readonly path: string;
  private readonly logger: MembershipLogger;
  private watcher: FSWatcher | null = null;
  private poll: ReturnType<typeof setInterval> | null = null;
  private settle: ReturnType<typeof setTimeout> | null = null;
  private onChange: MembersCallback | null = null;
  /** lastText: the text last read (applied, or refused and logged): a poll does not parse it again. */
  private lastText = "";
  /** last: the member list last applied. */
  private last = "";
  /** lastError: the read error last logged (a missing file is logged once, not at every poll). */
  private lastError = "";
  private reading: Promise<void> = Promise.resolve();

  constructor(path: string, logger: MembershipLogger) {
    this.path = path;
    this.logger = logger;
  }

  start(onChange: MembersCallback): void {
    this.onChange = onChange;
    this.reload();
    // Any event in the directory: the file's own, a rename over it, a ConfigMap's `..data` swap.
    // Read now, and once more when a burst of writes has settled; and poll besides (FILE_POLL_MS).
    this.watcher = watch(dirname(this.path), () => {
      this.reread();
      if (this.settle === null) {
        this.settle = setTimeout(() => {
          this.settle = null;
          this.reread();
        }, FILE_SETTLE_MS);
        this.settle.unref();
      }
    });
    this.watcher.on("error", (e) => this.logger.warn("peers file watch failed; polling it", { path: this.path, error: errorText(e) }));
    this.watcher.unref();
    this.poll = setInterval(() => this.reread(), FILE_POLL_MS);
    this.poll.unref();
  }

  /**
   * reload re-reads the file (serialized, so two quick changes apply in order); asked for (SIGHUP),
   * it logs why a file it cannot use is not applied every time.
   */
  reload(): void {
    this.reading = this.reading.then(() => this.read(true));
  }

  /** reread is a read of the watch or the poll: a reason not to apply the file is logged once. */
  private reread(): void {
    this.reading = this.reading.then(() => this.read(false));
  }

  /** settled resolves when every reload asked for so far has been applied (for tests). */
  settled(): Promise<void> {
    return this.reading;
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.poll !== null) clearInterval(this.poll);
    this.poll = null;
    if (this.settle !== null) clearTimeout(this.settle);
    this.settle = null;
    this.onChange = null;
  }

  /** apply hands `members` on; if that fails, the same list is tried again at the next read. */
  private apply(members: string[], dialAs: ReadonlyMap<string, string>): void {
    if (applyMembers(this.onChange, members, this.logger, dialAs)) return;
    this.last = "";
    this.lastText = "";
  }

  private async read(asked: boolean): Promise<void> {
    if (this.onChange === null) return; // closed
    let text: string;
    try {
      text = await readRegularFile(this.path, MAX_PEERS_FILE_BYTES);
    } catch (e) {
      const error = (e as Error).message;
      if (asked || error !== this.lastError) this.logger.warn("peers file not applied; keeping the last good member list", { path: this.path, error });
      this.lastError = error;
      this.lastText = ""; // read again in full once it can be
      return;
    }
    this.lastError = "";
    if (text === this.lastText && !asked) return;
    this.lastText = text;
    let members: string[];
    const dialAs = new Map<string, string>();
    try {
      members = parseMembers(text, warnRepeats(this.logger, this.path), dialAs);
    } catch (e) {
      this.logger.warn("peers file not applied; keeping the last good member list", { path: this.path, error: (e as Error).message });
      return;
    }
    if (members.length === 0) {
      this.logger.warn("peers file lists no member; keeping the last good member list", { path: this.path });
      return;
    }
    const key = members.join(",");
    if (key === this.last) return;
    this.last = key;
    this.apply(members, dialAs);
  }
}

/**
 * readRegularFile returns the text of the file at `path`, and throws for anything else: the open
 * does not block (a FIFO's would wait for a writer), and the opened file is checked before a read.
 */
async function readRegularFile(path: string, maxBytes: number): Promise<string> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const found = await fh.stat();
    if (!found.isFile()) throw new Error(`not a regular file (it is ${fileKind(found)})`);
    if (found.size > maxBytes) throw new Error(`${found.size} bytes: more than a member list takes (${maxBytes})`);
    return await fh.readFile("utf8");
  } finally {
    await fh.close().catch(() => {});
  }
}

/** fileKind names what a path that is not a regular file is, for an error message (a peers file, a snapshot). */
export function fileKind(found: Stats): string {
  return found.isDirectory() ? "a directory" : found.isFIFO() ? "a FIFO" : found.isSocket() ? "a socket" : "a device";
}

export type Resolver = (name: string) => Promise<string[]>;

/** systemResolver returns every A and AAAA address of `name`. */
export const systemResolver: Resolver = async (name) => (await lookup(name, { all: true })).map((a) => a.address);

export class DnsMembers implements MembershipSource {
  private readonly name: string;
  private readonly port: number;
  private readonly intervalMs: number;
  private readonly resolve: Resolver;
  private readonly logger: MembershipLogger;
  private timer: ReturnType<typeof setInterval> | null = null;
  private onChange: MembersCallback | null = null;
  private last = "";
  /** lastError is the error of the last lookup, if it failed (logged once until it changes). */
  private lastError = "";
  private resolving: Promise<void> = Promise.resolve();
  /** family: --self's address family (4 or 6; undefined when --self names a host), kept from a dual-stack answer. */
  private readonly family: number | undefined;

  constructor(name: string, port: number, intervalMs: number, logger: MembershipLogger, resolve: Resolver = systemResolver, family?: number) {
    this.name = name;
    this.port = port;
    this.intervalMs = intervalMs;
    this.resolve = resolve;
    this.logger = logger;
    this.family = family;
  }

  start(onChange: MembersCallback): void {
    this.onChange = onChange;
    this.reload();
    this.timer = setInterval(() => this.reload(), this.intervalMs);
    this.timer.unref();
  }

  reload(): void {
    this.resolving = this.resolving.then(() => this.lookup());
  }

  settled(): Promise<void> {
    return this.resolving;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.onChange = null;
  }

  /** apply hands `members` on; if that fails, the same list is tried again at the next reload. */
  private apply(members: string[]): void {
    if (!applyMembers(this.onChange, members, this.logger)) this.last = "";
  }

  /**
   * failed logs a failed lookup once, not at every interval (at 5 s, 17,000 lines a day for a name
   * that does not resolve), and again when its error changes.
   */
  private failed(what: string, error: string): void {
    if (error === this.lastError) return;
    this.lastError = error;
    const kept = this.last === "" ? "no member list yet: this node serves alone" : "keeping the last good member list";
    this.logger.warn(`${what}; ${kept}`, { name: this.name, error });
  }

  private async lookup(): Promise<void> {
    let addresses: string[];
    try {
      addresses = await this.resolve(this.name);
    } catch (e) {
      this.failed("peers DNS lookup failed", (e as Error).message);
      return;
    }
    const unique = [...new Set(addresses)];
    // Both families (dual stack: each node twice): --self's only. One family: all of it, whatever --self's.
    const own = this.family === undefined ? unique : unique.filter((a) => isIP(a) === this.family);
    let members: string[];
    try {
      members = canonicalMembers((own.length > 0 ? own : unique).sort().map((a) => hostPort(a, this.port))).sort();
    } catch (e) {
      this.failed("peers DNS answer not applied", (e as Error).message);
      return;
    }
    if (members.length === 0) return;
    if (members.length > MAX_MEMBERS) {
      this.failed("peers DNS answer not applied", `${members.length} members: more than ${MAX_MEMBERS}`);
      return;
    }
    if (this.lastError !== "") this.logger.info("peers DNS lookup works again", { name: this.name });
    this.lastError = "";
    const key = members.join(",");
    if (key === this.last) return;
    this.last = key;
    this.apply(members);
  }
}
