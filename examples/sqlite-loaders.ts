/**
 * A loaders module backed by a real embedded database (`bun:sqlite`): the cache in front of a
 * slow store, as users run it. Each named function export is the loader of the group of the
 * same name: `users(key)` and `products(key)` return the row with id `key` as a JSON string,
 * or `null` when there is none (the cache answers NOT_FOUND).
 *
 *   bun run node.ts --loaders ./examples/sqlite-loaders.ts      # see the README for the flags
 *
 * The database is `$EXAMPLE_DB`, or `example.sqlite` next to this file (gitignored).
 *
 * Seeding happens on import, and is safe when several threads import at once. The LoaderPool
 * imports this module in a thread of its own (to list its exports) and then in every worker
 * thread, so there are always several importers. Each runs `seed()`: one `BEGIN IMMEDIATE`
 * transaction that checks `PRAGMA user_version`. The first to take the write lock creates the
 * tables, fills them, and sets the version. The others, waiting on `busy_timeout` rather than
 * failing with SQLITE_BUSY, find the version already set and do nothing. Loads use a separate
 * read-only connection, opened on the first load, so the listing thread, which never loads, holds
 * no connection open.
 */
import { Database, type Statement } from "bun:sqlite";
import { join } from "node:path";

const DB_PATH = process.env.EXAMPLE_DB ?? join(import.meta.dir, "example.sqlite");
const SCHEMA_VERSION = 1;
const USERS = 1000;
const PRODUCTS = 100;
const BUSY_TIMEOUT_MS = 5000;

type Row = { json: string };
type ById = Statement<Row, [number]>;

/** seed creates and fills the tables once per database file; a no-op when already done. */
function seed(): void {
  using db = new Database(DB_PATH, { create: true, strict: true });
  db.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  db.transaction(() => {
    const { user_version } = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!;
    if (user_version >= SCHEMA_VERSION) return;
    db.run("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, json TEXT NOT NULL)");
    db.run("CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, json TEXT NOT NULL)");
    const user = db.prepare<void, [number, string]>("INSERT OR IGNORE INTO users (id, json) VALUES (?, ?)");
    for (let id = 1; id <= USERS; id++) {
      user.run(id, JSON.stringify({ id, name: `user ${id}`, email: `user${id}@example.com` }));
    }
    const product = db.prepare<void, [number, string]>("INSERT OR IGNORE INTO products (id, json) VALUES (?, ?)");
    for (let id = 1; id <= PRODUCTS; id++) {
      product.run(id, JSON.stringify({ id, name: `product ${id}`, priceCents: 100 + ((id * 37) % 900) }));
    }
    db.run(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

seed();

let queries: { users: ById; products: ById } | null = null;

function open(): { users: ById; products: ById } {
  const db = new Database(DB_PATH, { readonly: true, strict: true });
  db.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  return {
    users: db.query<Row, [number]>("SELECT json FROM users WHERE id = ?"),
    products: db.query<Row, [number]>("SELECT json FROM products WHERE id = ?"),
  };
}

function find(statement: ById, key: string): string | null {
  if (!/^\d{1,15}$/.test(key)) return null; // not an id: no such row
  return statement.get(Number(key))?.json ?? null;
}

/** users loads the user with id `key` as JSON, or null when there is none. */
export function users(key: string): string | null {
  queries ??= open();
  return find(queries.users, key);
}

/** products loads the product with id `key` as JSON, or null when there is none. */
export function products(key: string): string | null {
  queries ??= open();
  return find(queries.products, key);
}
