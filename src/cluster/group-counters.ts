/**
 * GroupCounters are a group's running totals (groupcache's vocabulary), a plain struct of numbers,
 * each with a trailing comment: Group counts its lookups, loads and writes, and the server modules
 * serving the group's keys add theirs (routed Gets, Sets and Deletes). Read at call time by
 * Group.stats, the NodeStats figures (figures.ts, which lists every field) and /metrics.
 */
export class GroupCounters {
  gets = 0; // Get calls and GetMulti keys looked up (a key owned elsewhere too: see countRouted)
  hits = 0; // of those, served from the store (or the mirror)
  misses = 0; // of those, not in the store (or expired), or forwarded to their owner
  loads = 0; // misses that went to the loader path (gets - hits, with a loader)
  loadsDeduped = 0; // loader calls actually made (loads after singleflight)
  localLoads = 0; // loader calls that returned a value
  localLoadErrs = 0; // loader calls that threw, crashed or were refused
  loadTimeouts = 0; // callers answered LOAD_FAILED because the loader was too slow
  notFound = 0; // loader calls that answered "not found"
  loadsAhead = 0; // loads started before their Get's turn, behind a read its connection waited for (server/look-ahead.ts); each in `loads` once its Get takes it
  loadsRefused = 0; // loads refused OVERLOADED, as many under way as the bound allows (GroupOptions.loads): of `loads`, or a load done again (LOAD_AGAIN)
  negativeHits = 0; // gets answered from a remembered outcome: NOT_FOUND (a negative entry) or VALUE_TOO_LARGE
  admissionsRejected = 0; // loaded values not stored by LRU-K admission
  sets = 0; // Set calls and SetMulti entries stored
  setErrors = 0; // Set calls and SetMulti entries refused, not stored (too large, no memory, not admitted, bad ttl, key too long)
  deletes = 0; // Delete calls that removed a live item
}
