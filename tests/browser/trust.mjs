// HTTPS for the browser tests: which certificate a run trusts, and how.
//
// SOCKIT_CA names the server's certificate (PEM; `sockit serve --web-tls`
// makes a self-signed one in <data>/tls/cert.pem). Chromium is then told to
// accept that certificate's key and no other, with
// --ignore-certificate-errors-spki-list (never --ignore-certificate-errors,
// which would accept anything); the test's own requests from node trust it
// as their only CA.

import { createHash, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";

const caFile = process.env.SOCKIT_CA || "";

/** The server's certificate in PEM, or "" (plain HTTP, or public CAs). */
export const caPem = caFile ? await readFile(caFile, "utf8") : "";

/** What an HTTPS response carries (docs/http-api.md, HTTPS). */
export const HSTS = "max-age=31536000";

/**
 * Chromium's arguments that trust the server's certificate: the base64
 * SHA-256 of its SubjectPublicKeyInfo, as the flag wants it.
 */
export function trustArgs() {
  if (!caPem) return [];
  const spki = new X509Certificate(caPem).publicKey.export({ type: "spki", format: "der" });
  return [`--ignore-certificate-errors-spki-list=${createHash("sha256").update(spki).digest("base64")}`];
}

/** Exits with a message when an https:// URL comes without its certificate. */
export function requireCaFor(base) {
  if (base.startsWith("https://") && !caPem) {
    console.error("FAIL: an https:// SOCKIT_URL needs SOCKIT_CA, the server's certificate (PEM)");
    process.exit(2);
  }
}
