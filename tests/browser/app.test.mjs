// The file-store web app (/app/) in a real browser (Chromium or Firefox): log in, upload (with a
// connection cut in the middle, to see it resume), download and compare,
// rename, make and enter a folder, delete, log out, and a phone-sized screen.
//
// Run by tests/web_browser.rs against a real `sockit serve`, or by hand:
//   SOCKIT_URL=http://127.0.0.1:8080 SOCKIT_USER=alice SOCKIT_PASSWORD=pw \
//     node tests/browser/app.test.mjs
// Optional: SOCKIT_BROWSER=firefox to drive Firefox ESR instead of Chromium
// (browser.mjs), SOCKIT_CHROMIUM / SOCKIT_FIREFOX for other executables,
// SOCKIT_SCREENSHOTS=DIR to keep screenshots of each step.
// Over HTTPS (`sockit serve --web-tls`): SOCKIT_URL=https://127.0.0.1:8080
// and SOCKIT_CA=sockit-data/tls/cert.pem, the server's self-signed
// certificate, trusted as trust.mjs says; the run then also checks HTTP/2,
// HSTS and a Secure session cookie.
// Exits 0 when every step passed, 1 with a message naming the failed step.

import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { caPem, HSTS, requireCaFor } from "./trust.mjs";
import { assert, browserName, cssString, Run } from "./browser.mjs";

const OVERALL_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 15_000;
/** Two upload chunks (the app sends at most 8 MiB per request) plus an odd tail. */
const BIG_SIZE = 9 * 1024 * 1024 + 123;
const CHUNK_SIZE = 8 * 1024 * 1024;
const BIG_NAME = "big.bin";
/** A name that would run script if the app ever inserted it as HTML. */
const EVIL_NAME = "<img src=x onerror=alert(1)>.txt";
/** No "/" in it: that would make it a path into a folder. */
const RENAMED = 'renamed <b>bold<b> & "q".txt';
const FOLDER = "new folder";

const base = (process.env.SOCKIT_URL || "").replace(/\/+$/, "");
const user = process.env.SOCKIT_USER || "";
const password = process.env.SOCKIT_PASSWORD || "";
const shotsDir = process.env.SOCKIT_SCREENSHOTS || "";
const tls = base.startsWith("https://");

if (!base || !user || !password) {
  console.error("FAIL: set SOCKIT_URL, SOCKIT_USER and SOCKIT_PASSWORD");
  process.exit(2);
}
requireCaFor(base);

const run = new Run(OVERALL_TIMEOUT_MS);

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

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

async function main() {
  const work = await mkdtemp(join(tmpdir(), "sockit-browser-"));
  try {
    await drive(work);
  } finally {
    await rm(work, { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * Removes what an earlier run against the same server may have left, so the
 * test can be run by hand twice. Done over the API with a bearer token, not
 * in the page: a 404 there would show up as a console error.
 */
async function removeLeftovers() {
  const login = await call("POST", "/api/login", {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: user, password, token: true }),
  });
  const body = login.text;
  assert(login.status === 200, `POST /api/login with "token": true answered ${login.status}: ${body}`);
  const { token } = JSON.parse(body);
  assert(typeof token === "string" && token, `POST /api/login with "token": true gave no token: ${body}`);
  const auth = { Authorization: `Bearer ${token}` };
  for (const name of [BIG_NAME, EVIL_NAME, RENAMED, FOLDER]) {
    const res = await call("DELETE", `/api/files/${encodeURIComponent(name)}?recursive=1`, { headers: auth });
    assert(res.status === 204 || res.status === 404, `cleaning up ${JSON.stringify(name)}: DELETE answered ${res.status}`);
  }
  await call("POST", "/api/logout", { headers: auth });
}

async function drive(work) {
  await removeLeftovers();
  await run.launch(base);
  const context = await run.browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  run.page = page;
  page.setDefaultTimeout(STEP_TIMEOUT_MS);

  // Dialogs: each one must have been announced by expectDialog(); anything else
  // (an alert() from injected markup above all) fails the run.
  const expectedDialogs = [];
  const expectDialog = (type, answer, check) => expectedDialogs.push({ type, answer, check });
  page.on("dialog", async (dialog) => {
    const want = expectedDialogs.shift();
    if (!want || want.type !== dialog.type()) {
      run.problems.push(`unexpected ${dialog.type()} dialog: ${JSON.stringify(dialog.message())}`);
      await dialog.dismiss().catch(() => {});
      return;
    }
    if (want.check) {
      const bad = want.check(dialog);
      if (bad) run.problems.push(bad);
    }
    if (want.answer === false) await dialog.dismiss().catch(() => {});
    else await dialog.accept(typeof want.answer === "string" ? want.answer : undefined).catch(() => {});
  });

  // Console errors catch CSP violations and script errors. Expected ones:
  // the 401 of /api/whoami while logged out, and the one request this test
  // cuts on purpose.
  let allowedNetErrors = 0;
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (/Failed to load resource: the server responded with a status of 401/.test(text)) return;
    if (/Failed to load resource: net::ERR_/.test(text) && allowedNetErrors > 0) {
      allowedNetErrors -= 1;
      return;
    }
    run.problems.push(`console error: ${text} (${msg.location().url || "?"})`);
  });
  page.on("pageerror", (err) => run.problems.push(`uncaught page error: ${err.message}`));

  // Every API request the app makes, to check headers and the resume sequence.
  const apiRequests = [];
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (!url.pathname.startsWith("/api/")) return;
    const headers = req.headers();
    apiRequests.push({ method: req.method(), path: url.pathname, search: url.search, headers });
    const method = req.method();
    if (method !== "GET" && method !== "HEAD" && !/^\/api\/(login|register)$/.test(url.pathname)) {
      if (!headers["x-sockit-csrf"]) run.problems.push(`${method} ${url.pathname} was sent without X-Sockit-CSRF`);
    }
  });

  const shot = async (name) => {
    if (!shotsDir) return;
    await mkdir(shotsDir, { recursive: true });
    await page.screenshot({ path: join(shotsDir, `${String(run.stepNo).padStart(2, "0")}-${name}.png`), fullPage: true });
  };

  const row = (name) => page.locator(`#file-table tbody tr[data-name=${cssString(name)}]`);
  const noHorizontalScroll = async (where) => {
    const m = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }));
    assert(
      m.scrollWidth <= m.innerWidth + 1,
      `${where}: the page scrolls sideways (scrollWidth ${m.scrollWidth} > innerWidth ${m.innerWidth})`
    );
  };
  const login = async () => {
    await page.locator("#login-form").waitFor({ state: "visible" });
    await page.fill("#login-name", user);
    await page.fill("#login-password", password);
    await page.click("#login-submit");
    await page.locator("#file-table").waitFor({ state: "visible" });
    await page.locator("#login-form").waitFor({ state: "hidden" });
  };

  // ------------------------------------------------------------------ 1
  await run.step("open /app/, see the login form, log in, see the file table", async () => {
    const res = await page.goto(base + "/app/");
    assert(res && res.status() === 200, `GET /app/ answered ${res && res.status()}`);
    const csp = res.headers()["content-security-policy"] || "";
    assert(/script-src 'self'/.test(csp), `GET /app/ has no strict Content-Security-Policy (got ${JSON.stringify(csp)})`);
    await page.locator("#login-form").waitFor({ state: "visible" });
    assert(await page.locator("#file-table").isHidden(), "the file table is visible before logging in");
    if (tls) {
      const hsts = res.headers()["strict-transport-security"];
      assert(hsts === HSTS, `GET /app/ over https has Strict-Transport-Security ${JSON.stringify(hsts)}, expected ${JSON.stringify(HSTS)}`);
      const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
      assert(protocol === "h2", `GET /app/ over https was served with ${JSON.stringify(protocol)}, expected h2 (ALPN)`);
      assert(await page.evaluate(() => window.isSecureContext), "the https page is not a secure context");
    }
    await shot("login");
    await login();
    const who = await page.locator("#account-name").textContent();
    assert(who === user, `the page names the user ${JSON.stringify(who)}, expected ${JSON.stringify(user)}`);
    if (tls) {
      const cookie = (await context.cookies(base)).find((c) => c.name === "sockit_session");
      assert(cookie, "no sockit_session cookie after logging in");
      assert(cookie.secure, "the session cookie is not Secure over https");
    }
  });

  // ------------------------------------------------------------------ 2
  const bigData = randomBytes(BIG_SIZE);
  const bigPath = join(work, BIG_NAME);
  await writeFile(bigPath, bigData);
  const evilPath = join(work, EVIL_NAME);
  await writeFile(evilPath, "hello from a hostile name\n");

  await run.step("upload two files (one cut off mid-way and resumed), see them listed, names as text", async () => {
    // Cut the connection of the big file's second chunk: the app must ask the
    // server where to continue and send the rest from there.
    let bigPuts = 0;
    const cut = async (route) => {
      const req = route.request();
      if (req.method() === "PUT" && decodeURIComponent(new URL(req.url()).pathname) === `/api/files/${BIG_NAME}`) {
        bigPuts += 1;
        if (bigPuts === 2) {
          allowedNetErrors += 1;
          await route.abort("connectionreset");
          await page.unroute("**/api/files/**", cut);
          return;
        }
      }
      await route.continue();
    };
    await page.route("**/api/files/**", cut);

    await page.setInputFiles("#file-input", [bigPath, evilPath]);

    const names = [BIG_NAME, EVIL_NAME];
    let states = null;
    const until = Date.now() + 30_000;
    for (;;) {
      states = await page.evaluate((wanted) => {
        const rows = Array.from(document.querySelectorAll("#uploads [data-name]"));
        return wanted.map((n) => {
          const r = rows.find((x) => x.dataset.name === n);
          return r ? { name: n, state: r.dataset.state, text: r.textContent } : { name: n, state: "missing" };
        });
      }, names);
      const failed = states.find((s) => s.state === "error");
      assert(!failed, `upload of ${JSON.stringify(failed && failed.name)} failed: ${failed && failed.text}`);
      if (states.every((s) => s.state === "done")) break;
      run.checkProblems();
      assert(Date.now() < until, `uploads did not finish in 30 s: ${JSON.stringify(states)}`);
      await page.waitForTimeout(100);
    }
    assert(bigPuts >= 2, `the big file was sent in ${bigPuts} request(s); expected chunks of at most 8 MiB`);

    // The requests: chunks with Content-Range, the resume asked the server.
    const puts = apiRequests.filter((r) => r.method === "PUT" && r.path === `/api/files/${BIG_NAME}`);
    for (const p of puts) {
      assert(p.headers["x-sockit-upload-id"], "an upload PUT has no X-Sockit-Upload-Id");
      assert(/^\d+$/.test(p.headers["x-sockit-mtime"] || ""), "an upload PUT has no numeric X-Sockit-Mtime");
    }
    const ranges = puts.map((p) => p.headers["content-range"]);
    const last = BIG_SIZE - 1;
    const want = [`bytes 0-${CHUNK_SIZE - 1}/${BIG_SIZE}`, `bytes ${CHUNK_SIZE}-${last}/${BIG_SIZE}`, `bytes ${CHUNK_SIZE}-${last}/${BIG_SIZE}`];
    assert(
      JSON.stringify(ranges) === JSON.stringify(want),
      `big file Content-Range sequence ${JSON.stringify(ranges)}, expected ${JSON.stringify(want)} (first chunk, the cut one, the resumed one)`
    );
    const queries = apiRequests.filter((r) => r.method === "GET" && r.path === `/api/uploads/${BIG_NAME}`);
    assert(queries.length >= 2, `the app asked /api/uploads/ ${queries.length} time(s) for the big file; expected once before and once after the cut`);
    const q = new URLSearchParams(queries[0].search);
    assert(q.get("length") === String(BIG_SIZE) && q.get("id") && q.get("mtime"), `bad upload query ${queries[0].search}`);

    for (const n of names) {
      await row(n).waitFor({ state: "visible" });
    }
    const evilText = await row(EVIL_NAME).locator("td").first().textContent();
    assert(evilText.includes(EVIL_NAME), `the hostile name is not shown as text: ${JSON.stringify(evilText)}`);
    const imgs = await page.locator("img").count();
    assert(imgs === 0, `${imgs} <img> element(s) in the page: a file name was inserted as HTML`);
    await shot("uploaded");
  });

  // ------------------------------------------------------------------ 3
  await run.step("download the big file and compare its bytes", async () => {
    const link = row(BIG_NAME).locator("a.download");
    assert((await link.getAttribute("download")) !== null, "the download link has no download attribute");
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    const failure = await download.failure();
    assert(!failure, `the download failed: ${failure}`);
    assert(download.suggestedFilename() === BIG_NAME, `downloaded as ${JSON.stringify(download.suggestedFilename())}`);
    const saved = join(work, "downloaded.bin");
    await download.saveAs(saved);
    const got = await readFile(saved);
    assert(got.length === BIG_SIZE, `downloaded ${got.length} bytes, expected ${BIG_SIZE}`);
    assert(sha256(got) === sha256(bigData), "the downloaded bytes differ from the uploaded file (sha256)");
  });

  // ------------------------------------------------------------------ 4
  await run.step("rename the small file; make a folder, enter it, come back by the breadcrumb", async () => {
    expectDialog("prompt", RENAMED, (d) =>
      d.defaultValue() === EVIL_NAME ? null : `the rename prompt's default is ${JSON.stringify(d.defaultValue())}, expected the current path`
    );
    await row(EVIL_NAME).locator("button.rename").click();
    await row(RENAMED).waitFor({ state: "visible" });
    await row(EVIL_NAME).waitFor({ state: "detached" });
    assert(expectedDialogs.length === 0, "the rename prompt was not shown");

    expectDialog("prompt", FOLDER);
    await page.click("#new-folder");
    await row(FOLDER).waitFor({ state: "visible" });
    assert(
      (await page.locator("#file-table tbody tr").first().getAttribute("data-name")) === FOLDER,
      "the folder is not listed first"
    );

    await row(FOLDER).locator("a.folder").click();
    await page.waitForFunction((h) => location.hash === h, "#/" + encodeURIComponent(FOLDER));
    await page.locator("#breadcrumb .crumb-current", { hasText: FOLDER }).waitFor();
    await page.locator("#empty").waitFor({ state: "visible" });
    assert((await page.locator("#file-table tbody tr").count()) === 0, "the new folder is not empty");

    // The folder survives a reload (it lives in location.hash).
    await page.reload();
    await page.locator("#breadcrumb .crumb-current", { hasText: FOLDER }).waitFor();
    await page.locator("#empty").waitFor({ state: "visible" });
    await shot("folder");

    await page.click('#breadcrumb a[data-path=""]');
    await row(BIG_NAME).waitFor({ state: "visible" });
    await row(FOLDER).waitFor({ state: "visible" });

    // Back and forward move between the two folders.
    await page.goBack();
    await page.locator("#breadcrumb .crumb-current", { hasText: FOLDER }).waitFor();
    await row(BIG_NAME).waitFor({ state: "detached" });
    await page.goForward();
    await row(BIG_NAME).waitFor({ state: "visible" });
  });

  // ------------------------------------------------------------------ 5
  await run.step("delete the big file", async () => {
    expectDialog("confirm", true);
    await row(BIG_NAME).locator("button.delete").click();
    await row(BIG_NAME).waitFor({ state: "detached" });
    assert(expectedDialogs.length === 0, "no confirm() was asked before deleting");
    await row(RENAMED).waitFor({ state: "visible" });
  });

  // ------------------------------------------------------------------ 6
  await run.step("log out, reload, still logged out", async () => {
    await page.click("#logout");
    await page.locator("#login-form").waitFor({ state: "visible" });
    await page.locator("#file-table").waitFor({ state: "hidden" });
    await page.reload();
    await page.locator("#login-form").waitFor({ state: "visible" });
    assert(await page.locator("#file-table").isHidden(), "the file table is visible after logging out and reloading");
    const status = await page.evaluate(async () => (await fetch("/api/whoami")).status);
    assert(status === 401, `GET /api/whoami answers ${status} after logging out, expected 401`);
  });

  // ------------------------------------------------------------------ 7
  await run.step("phone-sized screen (375x740): no sideways scrolling, logged out and in", async () => {
    await page.setViewportSize({ width: 375, height: 740 });
    await page.locator("#login-form").waitFor({ state: "visible" });
    await noHorizontalScroll("login form at 375 px");
    await shot("phone-login");
    await login();
    await row(RENAMED).waitFor({ state: "visible" });
    await noHorizontalScroll("file table at 375 px");
    for (const sel of ["#logout", "#new-folder", "label[for=file-input]", `#file-table tbody tr[data-name=${cssString(RENAMED)}] button.delete`]) {
      const box = await page.locator(sel).boundingBox();
      assert(box && box.height >= 32 && box.width >= 32, `${sel} is too small to tap at 375 px: ${JSON.stringify(box)}`);
    }
    await shot("phone-files");
  });

  assert(expectedDialogs.length === 0, `expected dialogs never came: ${JSON.stringify(expectedDialogs.map((d) => d.type))}`);
  run.checkProblems();
}

let code = 0;
try {
  await main();
  console.log(`PASS (${browserName}): all ${run.stepNo} steps`);
} catch (err) {
  code = 1;
  // Playwright's messages carry terminal colour codes; keep the log plain.
  const message = String(err && err.message ? err.message : err).replace(/\x1b\[[0-9;]*m/g, "");
  console.error(`FAIL at step ${run.current}: ${message}`);
  const more = run.problems.filter((p) => !message.includes(p));
  if (more.length) console.error("  also seen:\n  " + more.join("\n  "));
  if (run.page) {
    const status = await run.page.locator("#status").textContent({ timeout: 1000 }).catch(() => null);
    if (status) console.error(`  the page's #status says: ${status}`);
    if (shotsDir) {
      await mkdir(shotsDir, { recursive: true }).catch(() => {});
      await run.page.screenshot({ path: join(shotsDir, "failure.png"), fullPage: true }).catch(() => {});
    }
  }
} finally {
  await run.close();
  run.done();
}
process.exit(code);
