// Uploaded files never run as script of the server's origin (issue 15), in a
// real browser (Chromium or Firefox), logged in through the app: an uploaded
// HTML page opened with ?inline=1, the script it loads (also uploaded), the
// same script from a page of the static site, and an SVG with a script all
// try fetch('/api/whoami'), and none may reach it. A copy of the same page
// on the static site (the operator's own content, allowed to run its own
// scripts) shows the test can see the attack when it works. Then the
// previews that must keep working under the sandbox: an image, a text file,
// a PDF and a sound opened inline.
//
// Run by tests/web_browser.rs against a real `sockit serve`, or by hand:
//   SOCKIT_URL=http://127.0.0.1:8080 SOCKIT_USER=alice SOCKIT_PASSWORD=pw \
//     SOCKIT_SITE=sockit-data/public node tests/browser/uploads.test.mjs
// SOCKIT_SITE is the static site's folder: the script writes its control
// pages into `control/` there. SOCKIT_BROWSER=firefox drives Firefox ESR.
// Exits 0 when every step passed, 1 with a message naming the failed step.

import { mkdir, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { caPem, requireCaFor } from "./trust.mjs";
import { assert, browserName, engine, Run } from "./browser.mjs";

const OVERALL_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 15_000;
/** What `sockit serve` must send with every uploaded file (docs/http-api.md). */
const SANDBOX_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";

const base = (process.env.SOCKIT_URL || "").replace(/\/+$/, "");
const user = process.env.SOCKIT_USER || "";
const password = process.env.SOCKIT_PASSWORD || "";
const site = process.env.SOCKIT_SITE || "";

if (!base || !user || !password || !site) {
  console.error("FAIL: set SOCKIT_URL, SOCKIT_USER, SOCKIT_PASSWORD and SOCKIT_SITE");
  process.exit(2);
}
requireCaFor(base);

const run = new Run(OVERALL_TIMEOUT_MS);

// ------------------------------------------------------------------ files

/**
 * The script every hostile file carries: it reads the viewer's session and
 * shows it in the title. `from` tells which copy ran.
 */
const attack = (from) =>
  `fetch("/api/whoami?from=${from}").then((r) => r.text()).then((t) => { document.title = "pwned by ${from}: " + t; });`;

const EVIL_JS = `// Uploaded: must never run as a script of this origin.\n${attack("evil.js")}\n`;
/** Relative `src`, so the site's copy loads the site's script and the upload the uploaded one. */
const EVIL_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>evil</title></head>
<body><p>an uploaded page</p>
<script>${attack("inline")}</script>
<script src="evil.js?inline=1"></script>
<img src="x" onerror='${attack("onerror")}'>
</body></html>
`;
const EVIL_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>${attack("svg")}</script></svg>\n`;
/** A page of the static site that loads the uploaded script. */
const USES_UPLOAD = `<!doctype html>
<html><head><meta charset="utf-8"><title>site page</title></head>
<body><p>a page of the site</p><script src="/api/files/evil.js?inline=1"></script></body></html>
`;

/** A 1x1 PNG. */
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
  "base64"
);
const TEXT = "plain text, shown as it is: <b>not bold</b>\n";
const PDF_TEXT = "Hello from a PDF";

/** A one-page PDF that shows `text`, with a correct cross-reference table. */
function pdf(text) {
  const stream = `BT /F1 24 Tf 20 60 Td (${text}) Tj ET`;
  const objects = [
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
    `<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`,
    "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
  ];
  let out = "%PDF-1.4\n";
  const offsets = objects.map((o, i) => {
    const at = out.length;
    out += `${i + 1} 0 obj\n${o}\nendobj\n`;
    return at;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  out += offsets.map((o) => `${String(o).padStart(10, "0")} 00000 n \n`).join("");
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, "latin1");
}

/** Half a second of a 440 Hz tone: 8 kHz, 8-bit mono PCM. */
function wav() {
  const rate = 8000;
  const n = rate / 2;
  const b = Buffer.alloc(44 + n);
  b.write("RIFF", 0);
  b.writeUInt32LE(36 + n, 4);
  b.write("WAVEfmt ", 8);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate, 28); // bytes per second
  b.writeUInt16LE(1, 32); // block align
  b.writeUInt16LE(8, 34); // bits per sample
  b.write("data", 36);
  b.writeUInt32LE(n, 40);
  for (let i = 0; i < n; i++) b[44 + i] = 128 + Math.round(100 * Math.sin((2 * Math.PI * 440 * i) / rate));
  return b;
}

const UPLOADS = {
  "evil.html": Buffer.from(EVIL_HTML),
  "evil.js": Buffer.from(EVIL_JS),
  "evil.svg": Buffer.from(EVIL_SVG),
  "photo.png": PNG,
  "notes.txt": Buffer.from(TEXT),
  "doc.pdf": pdf(PDF_TEXT),
  "tone.wav": wav(),
};

/**
 * One request of the test's own (not the page's), trusting only SOCKIT_CA
 * over https. Resolves to { status, text }.
 */
function call(method, path, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const url = new URL(base + path);
    const send = url.protocol === "https:" ? httpsRequest : httpRequest;
    const options = url.protocol === "https:" ? { method, headers, ca: caPem } : { method, headers };
    const req = send(url, options, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Uploads every file over the API with a bearer token (replacing what a run by hand left). */
async function upload() {
  const login = await call("POST", "/api/login", {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: user, password, token: true }),
  });
  assert(login.status === 200, `POST /api/login with "token": true answered ${login.status}: ${login.text}`);
  const { token } = JSON.parse(login.text);
  for (const [name, bytes] of Object.entries(UPLOADS)) {
    const res = await call("PUT", `/api/files/${name}?overwrite=1`, {
      headers: { Authorization: `Bearer ${token}`, "Content-Length": String(bytes.length) },
      body: bytes,
    });
    assert(res.status === 201, `uploading ${name} answered ${res.status}: ${res.text}`);
  }
  await call("POST", "/api/logout", { headers: { Authorization: `Bearer ${token}` } });
}

/** The site's copies: the same page and script, and a page that loads the upload. */
async function writeControls() {
  const dir = join(site, "control");
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "evil.html"), EVIL_HTML);
  await writeFile(join(dir, "evil.js"), EVIL_JS);
  await writeFile(join(dir, "uses-upload.html"), USES_UPLOAD);
}

// ------------------------------------------------------------------ the run

async function drive() {
  await upload();
  await writeControls();
  await run.launch(base);
  const context = await run.browser.newContext({ acceptDownloads: true, viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  run.page = page;
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("dialog", async (d) => {
    run.problems.push(`unexpected ${d.type()} dialog: ${JSON.stringify(d.message())}`);
    await d.dismiss().catch(() => {});
  });

  // Every request any page of the context makes: an attack that ran shows
  // up here as a request to /api/whoami.
  const requests = [];
  context.on("request", (req) => requests.push(new URL(req.url())));
  const whoami = () => requests.filter((u) => u.pathname === "/api/whoami").map((u) => u.search);
  const fetched = (path) => requests.some((u) => u.pathname === path);
  /** Console lines, shown when a step fails (blocked scripts are expected). */
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));

  /**
   * Opens `path` and waits for its load event: every script in it has run
   * by then, and a script that ran has sent its request (the browser reports
   * requests in the order they were made, before the load event).
   */
  const open = async (path) => {
    requests.length = 0;
    consoleLines.length = 0;
    const res = await page.goto(base + path, { waitUntil: "load" });
    assert(res, `no response for ${path}`);
    return res;
  };
  const noAttack = async (where) => {
    const title = await page.title();
    assert(!title.startsWith("pwned"), `${where}: the uploaded script ran: title ${JSON.stringify(title)}`);
    const calls = whoami();
    assert(
      calls.length === 0,
      `${where}: the page asked /api/whoami (${calls.join(", ")}): uploaded bytes ran as script of this origin\n  console: ${consoleLines.join("\n  ")}`
    );
  };
  const sandboxed = (res, path) => {
    const h = res.headers();
    assert(h["content-security-policy"] === SANDBOX_CSP, `${path}: Content-Security-Policy ${JSON.stringify(h["content-security-policy"])}, expected ${JSON.stringify(SANDBOX_CSP)}`);
    assert(h["x-content-type-options"] === "nosniff", `${path}: no X-Content-Type-Options: nosniff`);
  };

  // ------------------------------------------------------------------ 1
  await run.step("log in through the app", async () => {
    await page.goto(base + "/app/");
    await page.locator("#login-form").waitFor({ state: "visible" });
    await page.fill("#login-name", user);
    await page.fill("#login-password", password);
    await page.click("#login-submit");
    await page.locator("#file-table").waitFor({ state: "visible" });
  });

  // ------------------------------------------------------------------ 2
  await run.step("control: the same page on the static site runs its script and reads the session", async () => {
    requests.length = 0;
    const asked = page.waitForRequest((r) => new URL(r.url()).pathname === "/api/whoami");
    await open("/control/evil.html");
    const req = await asked;
    assert(new URL(req.url()).search === "?from=evil.js", `the control page asked ${req.url()}`);
    await page.waitForFunction(() => document.title.startsWith("pwned by evil.js"));
    const title = await page.title();
    assert(title.includes(`"user":"${user}"`), `the control page's script did not get the session: title ${JSON.stringify(title)}`);
  });

  // ------------------------------------------------------------------ 3
  await run.step("the uploaded page opened with ?inline=1 is shown as text and runs nothing", async () => {
    const path = "/api/files/evil.html?inline=1";
    const res = await open(path);
    assert(res.status() === 200, `${path} answered ${res.status()}`);
    await noAttack(path);
    assert(!fetched("/api/files/evil.js"), `${path} loaded evil.js: it was parsed as HTML`);
    sandboxed(res, path);
    const type = res.headers()["content-type"];
    assert(type.startsWith("text/plain"), `${path} was sent as ${type}, expected text/plain`);
    const shown = await page.locator("body").innerText();
    assert(shown.includes("<script"), `${path} does not show its source as text: ${JSON.stringify(shown.slice(0, 200))}`);
  });

  // ------------------------------------------------------------------ 4
  await run.step("a page of the site that loads the uploaded script does not run it", async () => {
    const res = await open("/control/uses-upload.html");
    assert(res.status() === 200, `the site page answered ${res.status()}`);
    assert(fetched("/api/files/evil.js"), "the site page did not even ask for the uploaded script");
    await noAttack("/control/uses-upload.html");
  });

  // ------------------------------------------------------------------ 5
  await run.step("an uploaded SVG with a script, asked inline, is downloaded instead of shown", async () => {
    requests.length = 0;
    const path = "/api/files/evil.svg?inline=1";
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      // Navigating to a download ends the navigation with an error.
      page.goto(base + path).catch(() => null),
    ]);
    assert(download.suggestedFilename() === "evil.svg", `downloaded as ${JSON.stringify(download.suggestedFilename())}`);
    await download.delete();
    await noAttack(path);
  });

  // ------------------------------------------------------------------ 6
  await run.step("previews still work under the sandbox: an image, a text, a PDF, a sound", async () => {
    let res = await open("/api/files/photo.png?inline=1");
    sandboxed(res, "photo.png");
    const size = await page.evaluate(() => {
      const img = document.querySelector("img");
      return img && img.complete ? [img.naturalWidth, img.naturalHeight] : null;
    });
    assert(JSON.stringify(size) === "[1,1]", `the image is not shown: ${JSON.stringify(size)}`);

    res = await open("/api/files/notes.txt?inline=1");
    sandboxed(res, "notes.txt");
    const text = await page.locator("body").innerText();
    assert(text.trim() === TEXT.trim(), `the text file shows ${JSON.stringify(text)}`);

    res = await open("/api/files/doc.pdf?inline=1");
    if (engine === "firefox") {
      // (Chromium hands the PDF to its viewer and reports the response
      // without its policy; tests/web_api.rs checks what the server sends.)
      sandboxed(res, "doc.pdf");
      // pdf.js draws the page and lays its text out in a text layer.
      await page.locator(".textLayer", { hasText: PDF_TEXT }).waitFor();
    } else {
      // Chromium's viewer is an extension frame inside the page; blocked,
      // the page would be Chromium's error page instead.
      const isViewer = (f) => f.url().startsWith("chrome-extension://");
      const navigated = page.waitForEvent("framenavigated", { predicate: isViewer });
      const viewer = page.frames().find(isViewer) || (await navigated);
      navigated.catch(() => {});
      await viewer.locator("pdf-viewer").waitFor({ state: "attached" });
    }

    // Firefox driven this way saves a sound instead of playing it, with or
    // without these headers; Chromium plays it in a page of its own, whose
    // player fetches it again (with CORS, and the session cookie).
    if (engine !== "firefox") {
      res = await open("/api/files/tone.wav?inline=1");
      await page
        .waitForFunction(() => {
          const m = document.querySelector("video, audio");
          return m && m.readyState >= 1 && Math.abs(m.duration - 0.5) < 0.05;
        })
        .catch((e) => {
          throw new Error(`the sound does not load in the browser's player: ${e.message}\n  console: ${consoleLines.join("\n  ")}`);
        });
      const csp = res.headers()["content-security-policy"];
      assert(csp === SANDBOX_CSP + " allow-same-origin", `tone.wav: Content-Security-Policy ${JSON.stringify(csp)}`);
      await noAttack("tone.wav");
    }
  });

  // ------------------------------------------------------------------ 7
  await run.step("after all that, the app still has its session", async () => {
    await page.goto(base + "/app/");
    await page.locator("#file-table").waitFor({ state: "visible" });
    const name = await page.locator("#account-name").textContent();
    assert(name === user, `the app names ${JSON.stringify(name)} after the visits`);
  });

  run.checkProblems();
}

let code = 0;
try {
  await drive();
  console.log(`PASS (${browserName}): all ${run.stepNo} steps`);
} catch (err) {
  code = 1;
  const message = String(err && err.message ? err.message : err).replace(/\x1b\[[0-9;]*m/g, "");
  console.error(`FAIL at step ${run.current}: ${message}`);
  const more = run.problems.filter((p) => !message.includes(p));
  if (more.length) console.error("  also seen:\n  " + more.join("\n  "));
} finally {
  await run.close();
  run.done();
}
process.exit(code);
