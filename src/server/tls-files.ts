/**
 * The node's TLS files, read and checked before the port listens, so a bad one is refused as a
 * `ConfigError` that names it and its flag: its certificate and key (--tls-cert, --tls-key:
 * `readTls`, the key checked against the certificate) and the certificates peers are checked
 * against (--tls-ca: `readPem`).
 */
import { readFileSync } from "node:fs";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { ConfigError } from "./config.ts";

/** readPem reads PEM certificates from `path`, refusing a file that holds none it can parse (named). */
export function readPem(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read ${what}: ${(e as Error).message}`);
  }
  checkPem(path, what, () => void new X509Certificate(text));
  return text;
}

/**
 * readTls reads the node's certificate and key, and checks them before the port listens: a bad
 * file was reported as the port failing to listen (`ERR_OSSL_PEM_NO_START_LINE` for --port).
 */
export function readTls(certPath: string, keyPath: string): { cert: string; key: string } {
  const cert = readPem(certPath, "the TLS certificate (--tls-cert)");
  let key: string;
  try {
    key = readFileSync(keyPath, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read the TLS key (--tls-key): ${(e as Error).message}`);
  }
  checkPem(keyPath, "the TLS key (--tls-key)", () => {
    if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) throw new Error("it is not the key of the certificate (--tls-cert)");
  });
  return { cert, key };
}

function checkPem(path: string, what: string, check: () => void): void {
  try {
    check();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(`${what} ${path} is not usable: ${err.message}${err.code !== undefined && !err.message.includes(err.code) ? ` (${err.code})` : ""}`);
  }
}
