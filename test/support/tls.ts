/**
 * selfSigned makes a self-signed certificate and its key in `dir` with openssl, named
 * `<name>.pem` and `<name>.key`, for `cn` with the subjectAltName `san` (by default 127.0.0.1).
 */
import { expect } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";

export function selfSigned(dir: string, name = "cert", cn = "127.0.0.1", san = "IP:127.0.0.1"): { cert: string; key: string } {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  const gen = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
    "-days", "1", "-subj", `/CN=${cn}`, "-addext", `subjectAltName=${san}`], { stderr: "pipe" });
  expect(gen.exitCode).toBe(0);
  return { cert, key };
}

/** withTlsDir runs `fn` with a fresh directory for certificates, removed after it however it ends. */
export async function withTlsDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp("/tmp/mybuncache-tls-");
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
