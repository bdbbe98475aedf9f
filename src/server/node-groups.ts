/**
 * The node's groups, built from its config and loaders: one per --group spec and one per loader
 * without a spec (a lone "default" when there are neither), --memory split among them (explicit
 * sizes first, an equal share of the rest for the others: `splitMemory`), a mirror of each in a
 * cluster (--mirror-share), and the bounds on loads under way that they share (--max-loads, and
 * half of it for loads ahead). Loader options on a group without a loader are refused, and memory
 * left to no group is warned of.
 */
import { DEFAULT_MULTI_LOAD_WINDOW, Group } from "../cluster/group.ts";
import { Groups } from "../cluster/groups.ts";
import { LoadBound } from "../cluster/load-bound.ts";
import type { Loader } from "../cluster/loader.ts";
import { monotonicMs } from "../store/clock.ts";
import type { NodeDeps } from "./cache-node.ts";
import { ConfigError, isClustered, type GroupSpec, type NodeConfig } from "./config.ts";
import type { Logger } from "./log.ts";

/** buildGroups makes the node's groups: specs and loaders, memory split, mirrors in a cluster. */
export function buildGroups(config: NodeConfig, deps: NodeDeps): Groups {
  const clock = deps.clock ?? monotonicMs;
  const loaders = collectLoaders(deps);
  const clustered = isClustered(config);
  checkLoaderOptions(config, loaders, clustered, deps.logger);
  const groups = new Groups();
  // The node's loads under way, all groups together, are bounded (--max-loads: load-bound.ts);
  // the worker pool's loads by its own places too. Loads started ahead of their Gets' turn (the
  // look-ahead) take at most half the places, shared by the groups, so loads at their turn always
  // have the other half (one place: none ahead). The pool's loads ahead also take at most half
  // its places, and count within the node's half: a node with in-process loaders and a loaders
  // module both would otherwise let each kind's loads ahead take half, all the places together.
  const loads = new LoadBound(config.maxLoads);
  const poolPlaces = Math.min(config.maxLoads, deps.pool?.capacity ?? Infinity);
  const ownAhead = new LoadBound(Math.floor(config.maxLoads / 2));
  const poolAhead = new LoadBound(Math.floor(poolPlaces / 2), ownAhead);
  const inPool = (name: string): boolean => deps.pool?.groups.includes(name) === true;
  const specs = splitMemory(config, Object.keys(loaders));
  warnUnusedMemory(config, specs, deps.logger);
  for (const spec of specs) {
    const mirror = clustered ? Math.floor(spec.memory * config.mirrorShare) : 0;
    groups.add(namedGroup(spec.name, () => new Group({
      name: spec.name,
      memory: spec.memory,
      mirrorMemory: mirror >= MIN_MIRROR_BYTES ? mirror : 0,
      mirrorTtlMs: config.mirrorTtlMs,
      defaultTtlMs: spec.ttlMs,
      loader: loaders[spec.name],
      admission: spec.admission,
      admissionK: spec.admissionK,
      negativeTtlMs: spec.negativeTtlMs,
      loadTimeoutMs: spec.loadTimeoutMs ?? config.loadTimeoutMs,
      multiLoadWindow: spec.multiLoadWindow ?? loadWindow(inPool(spec.name) ? poolPlaces : config.maxLoads),
      loads,
      loadsAhead: inPool(spec.name) ? poolAhead : ownAhead,
      store: { maxItemSize: spec.maxItemSize ?? config.maxItemSize, clock },
    })));
  }
  return groups;
}

/** namedGroup makes a group, a store's refusal of its size (too small for a page and its metadata) told as the group's. */
function namedGroup(name: string, make: () => Group): Group {
  try {
    return make();
  } catch (e) {
    if (e instanceof RangeError) throw new ConfigError(`group '${name}': ${e.message} (give it more memory: --memory, or its --group size)`);
    throw e;
  }
}

/**
 * loadWindow is how many loads one GetMulti may run at once, of `places` (the node's --max-loads,
 * or the worker pool's threads * concurrency + queue if fewer): half of them, so other clients'
 * loads still find room, and at most the default.
 */
function loadWindow(places: number): number {
  return Math.max(1, Math.min(DEFAULT_MULTI_LOAD_WINDOW, Math.floor(places / 2)));
}

/** MIN_MIRROR_BYTES: below this a group's mirror would hold too few pages (32 of its smallest, 64 KiB) to be of use. */
const MIN_MIRROR_BYTES = 2 * 1024 * 1024;

/**
 * checkLoaderOptions refuses loader options on a --group that has no loader (a misspelt name
 * made a second, plain group that took them, and the loader's group ran with the defaults), and
 * warns of a group without a loader beside a loaders module: it only holds what is Set in it.
 * `admit=lru-k=K` is also the mirror's K in a cluster.
 */
function checkLoaderOptions(config: NodeConfig, loaders: Record<string, Loader>, clustered: boolean, logger: Logger | undefined): void {
  const names = Object.keys(loaders);
  for (const g of config.groups) {
    if (loaders[g.name] !== undefined) continue;
    const options = [
      g.admission === "always" || (g.admission !== undefined && !clustered) ? "admit=" : "",
      g.negativeTtlMs !== undefined ? "negttl=" : "",
      g.loadTimeoutMs !== undefined ? "timeout=" : "",
      g.multiLoadWindow !== undefined ? "multi=" : "",
    ].filter((o) => o !== "");
    const loadersAre = names.length > 0 ? `the loaders are ${names.join(", ")}` : "no loaders are given (--loaders)";
    if (options.length > 0) {
      throw new ConfigError(`--group ${g.name}: ${options.join(", ")} apply to a group with a loader, and none is named '${g.name}' (${loadersAre})`);
    }
    if (names.length > 0) logger?.warn("group without a loader: it holds only what clients Set in it", { group: g.name, loaders: names.join(",") });
  }
}

/**
 * collectLoaders merges the pool's loaders and the in-process ones (a name may not be in both),
 * in an object with no prototype: it is looked up by group names, which --group takes from the
 * command line, and a plain object's `toString` or `constructor` read as a loader (a Get miss of
 * a group named so was answered "[object Undefined]", and stored).
 */
function collectLoaders(deps: NodeDeps): Record<string, Loader> {
  const loaders: Record<string, Loader> = Object.assign(Object.create(null) as Record<string, Loader>, deps.loaders);
  const pool = deps.pool;
  for (const name of pool?.groups ?? []) {
    if (loaders[name] !== undefined) throw new ConfigError(`loader '${name}' is defined both in-process and in the loaders module`);
    loaders[name] = (key) => pool!.run(name, key);
  }
  return loaders;
}

/**
 * warnUnusedMemory warns when every group has an explicit size and together they leave part of
 * --memory to none: `--memory 64mb --group users:16mb` holds 16 MiB. (A group without a size
 * takes what the others leave, less a few bytes of rounding.)
 */
function warnUnusedMemory(config: NodeConfig, specs: readonly { name: string; memory: number }[], logger: Logger | undefined): void {
  const sized = new Set(config.groups.filter((g) => g.memory !== undefined).map((g) => g.name));
  if (!specs.every((g) => sized.has(g.name))) return;
  const used = specs.reduce((sum, g) => sum + g.memory, 0);
  if (used >= config.memory) return;
  const mib = (bytes: number): string => `${(bytes / 1048576).toFixed(1)}MiB`;
  logger?.warn("part of --memory is in no group: every group has an explicit size (give one group no size to have it take the rest, or lower --memory)", {
    memory: mib(config.memory), groups: mib(used), unused: mib(config.memory - used),
  });
}

/**
 * splitMemory lists the node's groups (the --group specs, plus one per loader without a spec; a
 * lone "default" when there are neither) and gives each its memory: explicit sizes first, an equal
 * share of the rest for the others.
 */
export function splitMemory(config: NodeConfig, loaderNames: readonly string[] = []): (GroupSpec & { memory: number })[] {
  const specs: GroupSpec[] = [...config.groups];
  for (const name of loaderNames) if (!specs.some((g) => g.name === name)) specs.push({ name, ttlMs: 0 });
  if (specs.length === 0) specs.push({ name: "default", ttlMs: 0 });
  const fixed = specs.reduce((sum, g) => sum + (g.memory ?? 0), 0);
  const open = specs.filter((g) => g.memory === undefined).length;
  if (open > 0 && fixed >= config.memory) {
    throw new ConfigError(`groups with explicit sizes use ${fixed} B of --memory ${config.memory} B, leaving nothing for the others`);
  }
  if (fixed > config.memory) {
    throw new ConfigError(`groups with explicit sizes need ${fixed} B, more than --memory ${config.memory} B: raise --memory`);
  }
  const share = open > 0 ? Math.floor((config.memory - fixed) / open) : 0;
  return specs.map((g) => ({ ...g, memory: g.memory ?? share }));
}
