// The chat page of the web app (/app/#chat) in a real browser (Chromium or Firefox), talking to a
// user on the framed protocol: this file is that user too, speaking the
// framed protocol itself over a raw TCP socket (docs/protocol.md: a 4-byte
// big-endian header length, the JSON header, then `size` body bytes).
//
// alice is in the browser, bob on the framed port. They meet in #lobby and
// exchange messages both ways; bob sends alice a direct message with markup
// in it (shown as text, under the conversation with bob, unread first); a
// refused send shows an error; older messages come back when scrolling up;
// the socket dropped under the page comes back by itself with ?since= and
// shows what was said meanwhile; bob leaving takes him off the online list;
// Leave, Join and starting a conversation by name; a phone-sized screen in
// dark mode; logging out closes the socket.
//
// Run by tests/web_browser.rs against a real `sockit serve`, or by hand:
//   SOCKIT_URL=http://127.0.0.1:8080 SOCKIT_FRAMED=127.0.0.1:7070 \
//   SOCKIT_USER=alice SOCKIT_PASSWORD=pw SOCKIT_PEER=bob SOCKIT_PEER_PASSWORD=pw2 \
//     node tests/browser/chat.test.mjs
// Optional: SOCKIT_BROWSER=firefox to drive Firefox ESR instead of Chromium
// (browser.mjs), SOCKIT_CHROMIUM / SOCKIT_FIREFOX for other executables,
// SOCKIT_SCREENSHOTS=DIR to keep screenshots of each step.
// Over HTTPS (`sockit serve --web-tls`, the socket then wss://):
// SOCKIT_URL=https://... and SOCKIT_CA=sockit-data/tls/cert.pem, trusted
// as trust.mjs says.
// Exits 0 when every step passed, 1 with a message naming the failed step.

import { connect as tcpConnect } from "node:net";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { requireCaFor } from "./trust.mjs";
import { assert, browserName, cssString, Run } from "./browser.mjs";

const OVERALL_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 15_000;
/** Every room name is unique per run, so the test can be run twice against one server. */
const RUN = Date.now().toString(36);
const ROOM = "lobby-" + RUN;
/** Text that would run script if the page ever inserted it as HTML. */
const EVIL = "<img src=x onerror=alert(1)> & <b>not bold</b> " + RUN;
/** Over the default chat.max_message (16 KiB), under the WebSocket cap (+4 KiB). */
const TOO_LARGE = 17_000;
/** Over the WebSocket cap too: the server closes the socket. */
const WAY_TOO_LARGE = 25_000;
/** Messages bob adds so that the first one is older than the app's first page (50). */
const FILLER = 52;

const base = (process.env.SOCKIT_URL || "").replace(/\/+$/, "");
const framedAddr = process.env.SOCKIT_FRAMED || "";
const user = process.env.SOCKIT_USER || "";
const password = process.env.SOCKIT_PASSWORD || "";
const peer = process.env.SOCKIT_PEER || "";
const peerPassword = process.env.SOCKIT_PEER_PASSWORD || "";
const shotsDir = process.env.SOCKIT_SCREENSHOTS || "";

if (!base || !framedAddr || !user || !password || !peer || !peerPassword) {
  console.error("FAIL: set SOCKIT_URL, SOCKIT_FRAMED, SOCKIT_USER, SOCKIT_PASSWORD, SOCKIT_PEER and SOCKIT_PEER_PASSWORD");
  process.exit(2);
}
requireCaFor(base);

let bob = null;
const run = new Run(OVERALL_TIMEOUT_MS);

// ------------------------------------------------------------ framed client

/** Largest header and body this client accepts from the server. */
const MAX_HEADER = 65536;
const MAX_BODY = 16 * 1024 * 1024;

/**
 * A framed-protocol connection. Frames are kept in arrival order; `next`
 * takes the first one that matches, so events that come in between (presence,
 * member) wait for whoever asks for them.
 */
class Framed {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.frames = [];
    this.waiters = [];
    this.error = null;
    this.nextId = 1;
    socket.setNoDelay(true);
    socket.on("data", (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      try {
        this.parse();
      } catch (err) {
        this.fail(err);
        socket.destroy();
      }
    });
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(new Error("the framed connection closed")));
  }

  static open(addr) {
    const at = addr.lastIndexOf(":");
    const host = addr.slice(0, at).replace(/^\[|\]$/g, "");
    const port = Number(addr.slice(at + 1));
    return new Promise((resolve, reject) => {
      const socket = tcpConnect({ host, port }, () => {
        socket.off("error", reject);
        resolve(new Framed(socket));
      });
      socket.once("error", reject);
    });
  }

  parse() {
    for (;;) {
      if (this.buf.length < 4) return;
      const n = this.buf.readUInt32BE(0);
      if (n < 1 || n > MAX_HEADER) throw new Error(`the server sent a header length of ${n}`);
      if (this.buf.length < 4 + n) return;
      const header = JSON.parse(this.buf.subarray(4, 4 + n).toString("utf8"));
      const size = header.size === undefined ? 0 : header.size;
      if (!Number.isInteger(size) || size < 0 || size > MAX_BODY) throw new Error(`the server sent size ${size}`);
      if (this.buf.length < 4 + n + size) return;
      const body = Buffer.from(this.buf.subarray(4 + n, 4 + n + size));
      this.buf = this.buf.subarray(4 + n + size);
      this.frames.push({ header, body });
      this.wake();
    }
  }

  fail(err) {
    if (!this.error) this.error = err;
    this.wake();
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  send(header, body) {
    const b = Buffer.from(body === undefined ? "" : body, "utf8");
    const h = Buffer.from(JSON.stringify(b.length ? { ...header, size: b.length } : header), "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32BE(h.length);
    this.socket.write(Buffer.concat([len, h, b]));
  }

  /** The first frame (kept or to come) for which `pred` holds; removed from the queue. */
  async next(pred, what, timeoutMs = STEP_TIMEOUT_MS) {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (this.error) throw new Error(`bob waited for ${what}: ${this.error.message}`);
      const left = until - Date.now();
      if (left <= 0) {
        const seen = this.frames.map((f) => JSON.stringify(f.header)).join("\n    ");
        throw new Error(`bob waited ${timeoutMs / 1000} s for ${what}; frames received meanwhile:\n    ${seen}`);
      }
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a request and returns its answer; an error frame throws (with `.code`). */
  async request(header, body) {
    const id = this.nextId++;
    this.send({ ...header, id }, body);
    const answer = await this.next((f) => f.header.id === id, `the answer to ${header.type}`);
    if (answer.header.type === "error") {
      const err = new Error(`${header.type} was refused: ${answer.header.code}: ${answer.header.message}`);
      err.code = answer.header.code;
      throw err;
    }
    return answer;
  }

  /** The body as JSON (lists and objects in chat answers). */
  static json(frame) {
    return JSON.parse(frame.body.toString("utf8"));
  }

  close() {
    this.socket.end();
  }
}

/** bob sends a text to a room or a user; retries when rate-limited. Returns the `sent` header. */
async function bobSends(target, text) {
  for (let tries = 0; ; tries++) {
    try {
      const ans = await bob.request({ type: "send", ...target }, text);
      assert(ans.header.type === "sent" && typeof ans.header.seq === "number", `send answered ${JSON.stringify(ans.header)}`);
      return ans.header;
    } catch (err) {
      // The limit refills with time (chat.rate per second): nothing to await but the clock.
      if (err.code !== "rate_limited" || tries > 50) throw err;
      await new Promise((r) => setTimeout(r, 150));
    }
  }
}

// ------------------------------------------------------------------- browser

async function main() {
  await run.launch(base);
  const context = await run.browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  run.page = page;
  page.setDefaultTimeout(STEP_TIMEOUT_MS);

  page.on("dialog", async (dialog) => {
    run.problems.push(`unexpected ${dialog.type()} dialog: ${JSON.stringify(dialog.message())}`);
    await dialog.dismiss().catch(() => {});
  });
  // Console errors catch CSP violations, script errors and failed sockets.
  // Expected: the 401 of /api/whoami while logged out.
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (/Failed to load resource: the server responded with a status of 401/.test(text)) return;
    run.problems.push(`console error: ${text} (${msg.location().url || "?"})`);
  });
  page.on("pageerror", (err) => run.problems.push(`uncaught page error: ${err.message}`));

  // Every chat socket goes through here, on to the real server, so the test
  // can drop one and hold the next back (see the reconnection step).
  const routes = [];
  let gate = null;
  await page.routeWebSocket(/\/api\/chat(\?|$)/, async (ws) => {
    const entry = { ws, url: new URL(ws.url()), server: null, closedByPage: false };
    entry.pageClosed = new Promise((resolve) => {
      // The page closing its socket, passed on to the server as it would be
      // without the handler. (Seen here rather than with page.on("websocket"),
      // which the Firefox driver does not report.)
      ws.onClose((code, reason) => {
        entry.closedByPage = true;
        entry.server?.close({ code, reason });
        resolve();
      });
    });
    routes.push(entry);
    if (gate) await gate;
    entry.server = ws.connectToServer();
  });

  const shot = async (name) => {
    if (!shotsDir) return;
    await mkdir(shotsDir, { recursive: true });
    await page.screenshot({ path: join(shotsDir, `chat-${String(run.stepNo).padStart(2, "0")}-${name}.png`), fullPage: true });
  };
  const noHorizontalScroll = async (where) => {
    const m = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth }));
    assert(m.scrollWidth <= m.innerWidth + 1, `${where}: the page scrolls sideways (scrollWidth ${m.scrollWidth} > innerWidth ${m.innerWidth})`);
  };
  const waitHash = (hash) => page.waitForFunction((h) => location.hash === h, hash);
  const online = () => page.locator('#chat-conn[data-state="online"]').waitFor();
  const msg = (from, text) =>
    page.locator(`#chat-messages li.msg[data-from=${cssString(from)}]`).filter({
      has: page.locator(".msg-text", { hasText: text }),
    });
  /** The seqs shown, in order: none twice, increasing. */
  const shownSeqs = async () => {
    const seqs = await page.$$eval("#chat-messages li.msg", (lis) => lis.map((li) => Number(li.dataset.seq)));
    for (let i = 1; i < seqs.length; i++) {
      assert(seqs[i] > seqs[i - 1], `messages out of order or shown twice: seq ${seqs[i]} after ${seqs[i - 1]}`);
    }
    return seqs;
  };

  // ------------------------------------------------------------------ 1
  let hello;
  await run.step("bob connects to the framed port, logs in, subscribes", async () => {
    bob = await Framed.open(framedAddr);
    hello = await bob.request({ type: "hello", version: 1 });
    const services = hello.header.services || [];
    assert(services.includes("chat"), `the server's hello lists no chat service: ${JSON.stringify(services)}`);
    const login = await bob.request({ type: "login", user: peer, password: peerPassword });
    assert(login.header.type === "logged_in", `login answered ${JSON.stringify(login.header)}`);
    const sub = await bob.request({ type: "subscribe" });
    assert(sub.header.type === "subscribed", `subscribe answered ${JSON.stringify(sub.header)}`);
  });

  // ------------------------------------------------------------------ 2
  await run.step("alice logs in, opens Chat: the socket connects", async () => {
    const res = await page.goto(base + "/app/");
    assert(res && res.status() === 200, `GET /app/ answered ${res && res.status()}`);
    await page.locator("#login-form").waitFor({ state: "visible" });
    await page.fill("#login-name", user);
    await page.fill("#login-password", password);
    await page.click("#login-submit");
    await page.locator("#file-table").waitFor({ state: "visible" });
    assert(routes.length === 0, "the chat socket opened before the chat was shown");
    await page.click("#nav-chat");
    await waitHash("#chat");
    await page.locator("#chat-view").waitFor({ state: "visible" });
    assert(await page.locator("#file-table").isHidden(), "the file table is still shown in the chat");
    await online();
    assert(routes.length === 1, `${routes.length} chat sockets opened, expected 1`);
    assert(!routes[0].url.searchParams.has("since"), `the first socket resumes: ${routes[0].url}`);
    await page.locator(`#chat-online li[data-user=${cssString(user)}]`).waitFor();
  });

  // ------------------------------------------------------------------ 3
  await run.step("bob joins the room; alice joins it by name: both are members, bob sees her join", async () => {
    const joined = await bob.request({ type: "join", room: ROOM });
    assert(joined.header.type === "joined", `join answered ${JSON.stringify(joined.header)}`);
    await page.fill("#join-room", ROOM);
    await page.click("#join-submit");
    await waitHash("#chat/" + ROOM);
    await page.locator(`#chat-rooms a[data-room=${cssString(ROOM)}][aria-current="page"]`).waitFor();
    await page.locator("#conv-title", { hasText: "#" + ROOM }).waitFor();
    await bob.next(
      (f) => f.header.type === "member" && f.header.room === ROOM && f.header.user === user && f.header.joined === true,
      `the member event of ${user} joining ${ROOM}`
    );
    await page.click("#conv-members summary");
    await page.locator(`#conv-members-list li[data-user=${cssString(peer)}][data-online="1"]`).waitFor();
    await page.locator(`#chat-online li[data-user=${cssString(peer)}]`).waitFor();
    await page.click("#conv-members summary");
    await shot("joined");
  });

  // ------------------------------------------------------------------ 4
  let firstSeq = 0;
  await run.step("bob writes in the room, alice sees it; alice answers with Enter, bob gets a message frame", async () => {
    const sent = await bobSends({ room: ROOM }, "hello from the terminal");
    firstSeq = sent.seq;
    await msg(peer, "hello from the terminal").waitFor();
    const seqAttr = await msg(peer, "hello from the terminal").getAttribute("data-seq");
    assert(Number(seqAttr) === sent.seq, `the message shows seq ${seqAttr}, bob was told ${sent.seq}`);

    await page.fill("#send-text", "hi bob, from the browser");
    await page.press("#send-text", "Enter");
    const got = await bob.next(
      (f) => f.header.type === "message" && f.header.room === ROOM && f.header.from === user,
      `alice's message in ${ROOM}`
    );
    assert(got.body.toString("utf8") === "hi bob, from the browser", `bob got ${JSON.stringify(got.body.toString("utf8"))}`);
    assert(typeof got.header.ts === "number" && got.header.seq > sent.seq, `bad message header ${JSON.stringify(got.header)}`);
    await msg(user, "hi bob, from the browser").waitFor();
    await page.waitForFunction(() => document.getElementById("send-text").value === "");
    // Her own message: once, with the seq bob saw, whether the server echoes it or not.
    await page.locator(`#chat-messages li.msg[data-seq="${got.header.seq}"]`).waitFor();
    assert((await msg(user, "hi bob, from the browser").count()) === 1, "alice's own message is shown twice");
    await shownSeqs();
  });

  // ------------------------------------------------------------------ 5
  await run.step("a direct message from bob with markup: unread under his name, shown as text", async () => {
    const sent = await bobSends({ to: user }, EVIL);
    const dmLink = page.locator(`#chat-dms a[data-user=${cssString(peer)}]`);
    await dmLink.locator(".badge", { hasText: "1" }).waitFor();
    await page.locator("#chat-badge", { hasText: "1" }).waitFor();
    assert((await msg(peer, EVIL).count()) === 0, "the direct message shows in the room");
    await dmLink.click();
    await waitHash("#chat/@" + peer);
    await page.locator(`#chat-messages li.msg[data-seq="${sent.seq}"]`).waitFor();
    const text = await page.locator(`#chat-messages li.msg[data-seq="${sent.seq}"] .msg-text`).textContent();
    assert(text === EVIL, `the message reads ${JSON.stringify(text)}, expected the markup as text`);
    assert((await page.locator("#chat-messages img, #chat-messages b").count()) === 0, "markup from a message became elements");
    await dmLink.locator(".badge").waitFor({ state: "detached" });
    await page.locator("#chat-badge").waitFor({ state: "hidden" });
    await page.locator("#conv-presence", { hasText: "online" }).waitFor();

    await page.fill("#send-text", "got it");
    await page.press("#send-text", "Enter");
    const got = await bob.next(
      (f) => f.header.type === "message" && f.header.to === peer && f.header.from === user,
      "alice's direct message"
    );
    assert(got.body.toString("utf8") === "got it", `bob got ${JSON.stringify(got.body.toString("utf8"))}`);
    assert(got.header.room === undefined, `a direct message carries a room: ${JSON.stringify(got.header)}`);
    await msg(user, "got it").waitFor();
    await shot("dm");
  });

  // ------------------------------------------------------------------ 6
  await run.step("a refused send shows an error line and keeps the text (too large, and too large for the socket)", async () => {
    for (const size of [TOO_LARGE, WAY_TOO_LARGE]) {
      const opened = routes.length;
      const big = "x".repeat(size);
      await page.fill("#send-text", big);
      await page.press("#send-text", "Enter");
      await page.locator('#send-error[data-code="too_large"]').waitFor();
      const shown = await page.locator("#send-error").textContent();
      assert(/too long/i.test(shown), `${size} bytes: the error line says ${JSON.stringify(shown)}`);
      assert((await page.inputValue("#send-text")) === big, `${size} bytes: the refused text was not kept in the input`);
      // The larger one costs the socket; the page comes back by itself.
      await online();
      assert(routes.length === opened + (size === TOO_LARGE ? 0 : 1), `${size} bytes: ${routes.length - opened} new sockets`);
      await page.fill("#send-text", "");
      await page.locator("#send-error").waitFor({ state: "hidden" });
    }
  });

  // ------------------------------------------------------------------ 7
  await run.step(`older messages: after ${FILLER} more, a reload shows the latest; scrolling up brings the first back`, async () => {
    let last = null;
    for (let i = 1; i <= FILLER; i++) last = await bobSends({ room: ROOM }, `filler ${i}`);
    await page.goto(base + "/app/#chat/" + ROOM);
    await page.reload();
    await online();
    await msg(peer, `filler ${FILLER}`).waitFor();
    await page.locator(`#chat-messages li.msg[data-seq="${last.seq}"]`).waitFor();
    await page.locator("#load-older").waitFor({ state: "visible" });
    assert((await msg(peer, "hello from the terminal").count()) === 0, "the first message is in the first page already");
    // The conversation with bob is still listed after the reload.
    await page.locator(`#chat-dms a[data-user=${cssString(peer)}]`).waitFor();
    // Scroll the log to the top: the app asks for the page before.
    await page.locator("#chat-log").evaluate((log) => {
      log.scrollTop = 0;
    });
    await msg(peer, "hello from the terminal").waitFor();
    await page.locator("#log-start").waitFor({ state: "visible" });
    await page.locator("#load-older").waitFor({ state: "hidden" });
    const seqs = await shownSeqs();
    assert(seqs[0] === firstSeq, `the oldest message shown is seq ${seqs[0]}, expected ${firstSeq}`);
    assert(seqs.length === FILLER + 2, `${seqs.length} messages shown, expected ${FILLER + 2}`);
  });

  // ------------------------------------------------------------------ 8
  await run.step("the socket drops: Reconnecting…, then back with ?since=, with what bob said meanwhile", async () => {
    const live = routes[routes.length - 1];
    assert(live.server, "the live socket has no server side");
    const before = routes.length;
    const maxSeq = Math.max(...(await shownSeqs()));
    let open;
    gate = new Promise((resolve) => {
      open = resolve;
    });
    await live.server.close({ code: 4000, reason: "dropped by the test" });
    await page.locator('#chat-conn[data-state="reconnecting"]').waitFor();
    const shown = await page.locator("#chat-conn-text").textContent();
    assert(/reconnecting/i.test(shown), `the connection state reads ${JSON.stringify(shown)}`);
    // bob speaks while alice is away; her next socket is held until he has.
    const missed = await bobSends({ room: ROOM }, "said while you were away");
    open();
    gate = null;
    await online();
    assert(routes.length === before + 1, `${routes.length - before} sockets opened to reconnect, expected 1`);
    const since = routes[routes.length - 1].url.searchParams.get("since");
    assert(since !== null && Number(since) >= maxSeq && Number(since) < missed.seq,
      `the reconnection asked for since=${since}; the page had seen up to ${maxSeq}, bob's new message is ${missed.seq}`);
    await msg(peer, "said while you were away").waitFor();
    await shownSeqs();
    // Sending works on the new socket.
    await page.fill("#send-text", "back again");
    await page.press("#send-text", "Enter");
    await bob.next((f) => f.header.type === "message" && f.header.from === user && f.body.toString("utf8") === "back again",
      "alice's message after the reconnection");
  });

  // ------------------------------------------------------------------ 9
  await run.step("bob leaves the room and disconnects: alice sees him leave and go offline", async () => {
    await page.click("#conv-members summary");
    await page.locator(`#conv-members-list li[data-user=${cssString(peer)}]`).waitFor();
    await bob.request({ type: "leave", room: ROOM });
    await page.locator("#chat-messages li.msg-event", { hasText: `${peer} left` }).waitFor();
    await page.locator(`#conv-members-list li[data-user=${cssString(peer)}]`).waitFor({ state: "detached" });
    await page.click("#conv-members summary");
    bob.close();
    await page.locator(`#chat-online li[data-user=${cssString(peer)}]`).waitFor({ state: "detached" });
  });

  // ------------------------------------------------------------------ 10
  await run.step("leave and join again with the buttons; start conversations by name", async () => {
    await page.click("#conv-leave");
    await waitHash("#chat");
    await page.locator(`#chat-rooms a[data-room=${cssString(ROOM)}]`).waitFor({ state: "detached" });
    await page.evaluate((h) => {
      location.hash = h;
    }, "#chat/" + ROOM);
    await page.locator("#conv-join").waitFor({ state: "visible" });
    assert(await page.locator("#conv-leave").isHidden(), "Leave is offered in a room alice left");
    await page.click("#conv-join");
    await page.locator(`#chat-rooms a[data-room=${cssString(ROOM)}][aria-current="page"]`).waitFor();
    await page.locator("#conv-leave").waitFor({ state: "visible" });
    await msg(peer, "said while you were away").waitFor();
    await shownSeqs();

    await page.fill("#dm-user", "nobody-" + RUN);
    await page.click("#dm-submit");
    await page.locator("#chat-notice", { hasText: "no user" }).waitFor();
    await waitHash("#chat");
    await page.locator(`#chat-dms a[data-user=${cssString("nobody-" + RUN)}]`).waitFor({ state: "detached" });
    await page.fill("#dm-user", peer);
    await page.click("#dm-submit");
    await waitHash("#chat/@" + peer);
    await msg(peer, EVIL).waitFor();
    await page.locator("#conv-presence", { hasText: "offline" }).waitFor();
    await page.click(`#chat-rooms a[data-room=${cssString(ROOM)}]`);
    await waitHash("#chat/" + ROOM);
  });

  // ------------------------------------------------------------------ 11
  await run.step("phone-sized screen in dark mode: list or conversation, no sideways scrolling", async () => {
    await page.emulateMedia({ colorScheme: "dark" });
    await page.setViewportSize({ width: 375, height: 740 });
    await page.locator("#chat-messages").waitFor({ state: "visible" });
    assert(await page.locator(".chat-side").isHidden(), "the sidebar is shown beside the conversation at 375 px");
    await noHorizontalScroll("conversation at 375 px");
    const bg = await page.locator("#chat-view").evaluate((e) => getComputedStyle(e).backgroundColor);
    const rgb = (bg.match(/\d+/g) || []).slice(0, 3).map(Number);
    assert(rgb.length === 3 && rgb.every((c) => c < 100), `the chat is not dark in dark mode: ${bg}`);
    for (const sel of ["#chat-back", "#send-submit", "#send-text"]) {
      const box = await page.locator(sel).boundingBox();
      assert(box && box.height >= 32 && box.width >= 32, `${sel} is too small to tap at 375 px: ${JSON.stringify(box)}`);
    }
    await shot("phone-conv");
    await page.click("#chat-back");
    await waitHash("#chat");
    await page.locator(".chat-side").waitFor({ state: "visible" });
    assert(await page.locator("#chat-main").isHidden(), "the conversation is shown beside the list at 375 px");
    await noHorizontalScroll("list at 375 px");
    await shot("phone-list");
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 1100, height: 800 });
  });

  // ------------------------------------------------------------------ 12
  await run.step("log out: the socket closes, the chat is gone", async () => {
    const last = routes[routes.length - 1];
    assert(last && !last.closedByPage, "no open chat socket before logging out");
    await page.click("#logout");
    await page.locator("#login-form").waitFor({ state: "visible" });
    await last.pageClosed;
    assert(await page.locator("#chat-view").isHidden(), "the chat is shown after logging out");
  });

  run.checkProblems();
}

let code = 0;
try {
  await main();
  console.log(`PASS (${browserName}): all ${run.stepNo} steps`);
} catch (err) {
  code = 1;
  const message = String(err && err.message ? err.message : err).replace(/\x1b\[[0-9;]*m/g, "");
  console.error(`FAIL at step ${run.current}: ${message}`);
  const more = run.problems.filter((p) => !message.includes(p));
  if (more.length) console.error("  also seen:\n  " + more.join("\n  "));
  if (run.page) {
    for (const sel of ["#status", "#chat-notice", "#send-error", "#chat-conn-text"]) {
      const t = await run.page.locator(sel).textContent({ timeout: 1000 }).catch(() => null);
      if (t) console.error(`  the page's ${sel} says: ${t}`);
    }
    if (shotsDir) {
      await mkdir(shotsDir, { recursive: true }).catch(() => {});
      await run.page.screenshot({ path: join(shotsDir, "chat-failure.png"), fullPage: true }).catch(() => {});
    }
  }
} finally {
  if (bob) bob.socket.destroy();
  await run.close();
  run.done();
}
process.exit(code);
