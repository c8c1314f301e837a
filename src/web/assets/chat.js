// sockit chat: the chat page of the browser app, over the WebSocket at
// /api/chat (docs/http-api.md, "Chat over WebSocket"; the semantics are the
// framed protocol's, docs/protocol.md, "Chat").
//
// Plain script, no build step, loaded before app.js. app.js owns the login
// and the header; it tells this file who is logged in and what the hash
// names through two events on `document`:
//   "sockit:session" {user}   a user logged in, or null when logged out;
//   "sockit:route"   {chat}   the chat's part of the hash ("" for the list,
//                             "lobby" for a room, "@bob" for a conversation),
//                             or null when the file store is shown.
// and it listens for "sockit:unauthorized" from here (the socket was refused
// and /api/whoami says the session is gone).
//
// Names and texts come from other users: they are only ever inserted with
// textContent, never as HTML.
"use strict";

(() => {
  /** Waits before each reconnection attempt; the last one repeats. */
  const RECONNECT_DELAYS_MS = [1000, 2000, 4000, 8000, 16000, 30000];
  /** Messages asked for per history request (the server allows 1 to 100). */
  const HISTORY_PAGE = 50;
  /** A request without an answer by then fails (the socket is probably dead). */
  const REQUEST_TIMEOUT_MS = 20000;
  /** Within this many pixels of the bottom, new messages keep the view at the bottom. */
  const NEAR_BOTTOM_PX = 48;
  /** Within this many pixels of the top, scrolling up loads older messages. */
  const NEAR_TOP_PX = 40;
  /** The server's default chat.max_message: a socket that dies while a
      longer text is being sent was closed for its size. */
  const DEFAULT_MAX_MESSAGE = 16 * 1024;
  /** The server's rules for names (docs/protocol.md). */
  const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
  const USER_RE = /^[A-Za-z0-9_.-]{1,32}$/;

  const $ = (id) => document.getElementById(id);

  const el = {
    view: $("chat-view"),
    badge: $("chat-badge"),
    conn: $("chat-conn"),
    connText: $("chat-conn-text"),
    retry: $("chat-retry"),
    rooms: $("chat-rooms"),
    joinForm: $("join-form"),
    joinRoom: $("join-room"),
    dms: $("chat-dms"),
    dmForm: $("dm-form"),
    dmUser: $("dm-user"),
    notice: $("chat-notice"),
    online: $("chat-online"),
    onlineCount: $("chat-online-count"),
    empty: $("chat-empty"),
    conv: $("chat-conv"),
    title: $("conv-title"),
    presence: $("conv-presence"),
    members: $("conv-members"),
    membersSummary: $("conv-members-summary"),
    membersList: $("conv-members-list"),
    join: $("conv-join"),
    leave: $("conv-leave"),
    log: $("chat-log"),
    older: $("load-older"),
    logStart: $("log-start"),
    messages: $("chat-messages"),
    sendForm: $("send-form"),
    sendText: $("send-text"),
    sendError: $("send-error"),
  };

  /** A refused or failed request: `code` is the server's error code, or ours. */
  class ChatError extends Error {
    constructor(code, message) {
      super(message || code);
      this.code = code;
    }
  }

  /** What a user should read for each error code. */
  const ERROR_TEXT = {
    rate_limited: "You are sending too fast. Wait a moment, then send again.",
    too_large: "The message is too long. Shorten it or split it into several.",
    not_member: "You are not in this room. Join it first.",
    no_such_user: "There is no user by that name.",
    no_such_room: "There is no room by that name.",
    bad_room: "A room name is 1 to 64 letters, digits, “_”, “.” or “-”.",
    too_many_rooms: "You are in too many rooms. Leave one first.",
    offline: "Not connected to the chat. Wait until it has reconnected, then try again.",
    timeout: "The server did not answer in time. Try again.",
  };

  function errorText(err) {
    if (err instanceof ChatError && ERROR_TEXT[err.code]) return ERROR_TEXT[err.code];
    return (err && err.message) || String(err);
  }

  /** Account and room names are compared without regard to case. */
  const fold = (name) => String(name).toLowerCase();
  const sameName = (a, b) => typeof a === "string" && typeof b === "string" && fold(a) === fold(b);

  /** One room or one direct conversation, with what this page knows of it. */
  class Conv {
    constructor(kind, name) {
      /** "room" or "dm". */
      this.kind = kind;
      /** The room's name, or the other user's, as the server spells it. */
      this.name = name;
      this.key = convKey(kind, name);
      /** Messages and member events, sorted by `order` (a message's is its seq). */
      this.items = [];
      /** The seqs in `items`: a message that arrives twice is shown once. */
      this.seqs = new Set();
      this.unread = 0;
      /** Whether the latest history was asked for (on first opening). */
      this.loaded = false;
      /** Whether there is nothing older than the first item. */
      this.complete = false;
      /** A history request is under way. */
      this.loading = false;
      /** Rooms: whether the user is a member. */
      this.joined = false;
      /** Rooms: folded user name -> {user, online}; null until asked. */
      this.members = null;
      /** Conversations: the other user exists (a message or a history answer came). */
      this.confirmed = kind === "room";
    }
  }

  function convKey(kind, name) {
    return (kind === "room" ? "#" : "@") + fold(name);
  }

  const state = {
    /** The logged-in user (the server's spelling once subscribed), or null. */
    user: null,
    /** The socket, or null between connections. */
    ws: null,
    /** "offline", "connecting", "online" (subscribed) or "reconnecting". */
    conn: "offline",
    /** Failed connections in a row: picks the next delay. */
    attempt: 0,
    /** The pending reconnection. */
    timer: 0,
    /** The highest seq seen: a reconnection resumes after it with ?since=. */
    lastSeq: 0,
    /** Subscribed once in this session: later connections resume with ?since=. */
    resume: false,
    nextId: 1,
    /** Request id -> {resolve, reject, timer}. */
    pending: new Map(),
    /** Conv key -> Conv. */
    convs: new Map(),
    /** Folded name -> name, of the users online. */
    online: new Map(),
    /** The chat is on screen. */
    visible: false,
    /** The chat's part of the hash. */
    target: "",
    /** The key of the conversation shown, or null. */
    current: null,
    /** A send is waiting for its answer (Enter does nothing meanwhile; a
        socket closed with 1009 was closed for it). */
    sending: false,
    /** The UTF-8 length of the text being sent. */
    sendingBytes: 0,
  };

  // ---------------------------------------------------------------- helpers

  function formatTime(ts) {
    const d = new Date(ts);
    if (typeof ts !== "number" || isNaN(d.getTime())) return { short: "", long: "", iso: "" };
    const now = new Date();
    const sameDay = d.toDateString() === now.toDateString();
    const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    const short = sameDay
      ? time
      : d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + ", " + time;
    return { short, long: d.toLocaleString(), iso: d.toISOString() };
  }

  function hashFor(conv) {
    return "#chat/" + (conv.kind === "dm" ? "@" : "") + encodeURIComponent(conv.name);
  }

  function currentConv() {
    return state.current ? state.convs.get(state.current) || null : null;
  }

  /** The conversation is on screen right now (its messages are read). */
  function isShown(conv) {
    return state.visible && state.current === conv.key && document.visibilityState !== "hidden";
  }

  function showNotice(message) {
    el.notice.textContent = message || "";
  }

  function showSendError(message, code) {
    el.sendError.textContent = message || "";
    if (code) el.sendError.dataset.code = code;
    else delete el.sendError.dataset.code;
  }

  /** The list of conversations, kept per user and per tab so it survives a
      reload (sessionStorage: gone with the tab, and dropped at logout). */
  function dmStorageKey() {
    return "sockit.chat.dms." + fold(state.user || "");
  }

  function loadStoredDms() {
    try {
      const list = JSON.parse(sessionStorage.getItem(dmStorageKey()) || "[]");
      if (!Array.isArray(list)) return;
      for (const name of list) {
        if (typeof name === "string" && USER_RE.test(name)) {
          ensureConv("dm", name).confirmed = true;
        }
      }
    } catch (_) {
      // No storage (private mode) or a damaged entry: start without the list.
    }
  }

  function storeDms() {
    try {
      const names = Array.from(state.convs.values())
        .filter((c) => c.kind === "dm" && c.confirmed)
        .map((c) => c.name);
      sessionStorage.setItem(dmStorageKey(), JSON.stringify(names));
    } catch (_) {
      // Not worth a message: the list comes back with the next message.
    }
  }

  function ensureConv(kind, name) {
    const key = convKey(kind, name);
    let conv = state.convs.get(key);
    if (!conv) {
      conv = new Conv(kind, name);
      state.convs.set(key, conv);
    }
    return conv;
  }

  // ---------------------------------------------------------------- items

  /** Puts an item in its place; returns its index, or -1 for a seq already there. */
  function insertItem(conv, item) {
    if (item.kind === "msg") {
      if (conv.seqs.has(item.seq)) return -1;
      conv.seqs.add(item.seq);
    }
    // Usually the newest: search from the end.
    let i = conv.items.length;
    while (i > 0 && conv.items[i - 1].order > item.order) i -= 1;
    conv.items.splice(i, 0, item);
    return i;
  }

  /** The conversation a message belongs to, creating it if needed. */
  function convOf(m) {
    if (typeof m.room === "string" && m.room) return ensureConv("room", m.room);
    if (typeof m.to === "string" && typeof m.from === "string") {
      const peer = sameName(m.from, state.user) ? m.to : m.from;
      const conv = ensureConv("dm", peer);
      if (!sameName(m.from, state.user)) conv.name = m.from;
      if (!conv.confirmed) {
        conv.confirmed = true;
        storeDms();
      }
      return conv;
    }
    return null;
  }

  /**
   * Adds a message from the server. `unread` counts it as unread when it is
   * someone else's and its conversation is not on screen. Returns the
   * conversation, or null for a duplicate or a malformed message.
   */
  function addMessage(m, unread) {
    if (!m || typeof m !== "object" || typeof m.seq !== "number" || typeof m.text !== "string") return null;
    if (m.seq > state.lastSeq) state.lastSeq = m.seq;
    const conv = convOf(m);
    if (!conv) return null;
    const item = {
      kind: "msg",
      order: m.seq,
      seq: m.seq,
      ts: m.ts,
      from: typeof m.from === "string" ? m.from : "?",
      text: m.text,
      node: null,
    };
    const at = insertItem(conv, item);
    if (at < 0) return null;
    if (unread && !sameName(item.from, state.user) && !isShown(conv)) conv.unread += 1;
    if (state.current === conv.key) showItem(conv, at);
    return conv;
  }

  /** A line such as "carol joined", placed after the messages seen so far. */
  function addEvent(conv, text) {
    const item = { kind: "event", order: state.lastSeq + 0.5, text, node: null };
    const at = insertItem(conv, item);
    if (state.current === conv.key) showItem(conv, at);
  }

  function nodeFor(item) {
    if (item.node) return item.node;
    const li = document.createElement("li");
    if (item.kind === "event") {
      li.className = "msg-event";
      li.textContent = item.text;
    } else {
      li.className = "msg" + (sameName(item.from, state.user) ? " mine" : "");
      li.dataset.seq = String(item.seq);
      li.dataset.from = item.from;
      const meta = document.createElement("div");
      meta.className = "msg-meta";
      const from = document.createElement("span");
      from.className = "msg-from";
      from.textContent = item.from;
      const when = formatTime(item.ts);
      const time = document.createElement("time");
      time.className = "msg-time";
      time.textContent = when.short;
      if (when.iso) time.dateTime = when.iso;
      time.title = when.long;
      meta.append(from, time);
      const text = document.createElement("p");
      text.className = "msg-text";
      text.textContent = item.text;
      li.append(meta, text);
    }
    item.node = li;
    return li;
  }

  const nearBottom = () => el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < NEAR_BOTTOM_PX;

  /** Shows one new item of the conversation on screen, keeping the scroll sensible. */
  function showItem(conv, at) {
    const item = conv.items[at];
    const next = conv.items[at + 1];
    if (!next) {
      const stick = nearBottom() || (item.kind === "msg" && sameName(item.from, state.user));
      el.messages.append(nodeFor(item));
      if (stick) el.log.scrollTop = el.log.scrollHeight;
    } else {
      const fromBottom = el.log.scrollHeight - el.log.scrollTop;
      el.messages.insertBefore(nodeFor(item), nodeFor(next));
      el.log.scrollTop = el.log.scrollHeight - fromBottom;
    }
  }

  // ---------------------------------------------------------------- socket

  function setConn(conn) {
    state.conn = conn;
    renderConn();
  }

  function connect() {
    clearTimeout(state.timer);
    state.timer = 0;
    if (!state.user || state.ws) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = scheme + "//" + location.host + "/api/chat" + (state.resume ? "?since=" + state.lastSeq : "");
    setConn(state.resume || state.attempt > 0 ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (_) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
    });
    ws.addEventListener("message", (ev) => {
      if (state.ws === ws && typeof ev.data === "string") onFrame(ev.data);
    });
    ws.addEventListener("close", (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      failPending(new ChatError("offline"));
      if (!state.user) return;
      // Too large for the socket itself: 1009, or no close frame at all.
      if (state.sending && (ev.code === 1009 || state.sendingBytes > DEFAULT_MAX_MESSAGE)) {
        showSendError("Not sent: " + ERROR_TEXT.too_large, "too_large");
      }
      scheduleReconnect();
      // A refused upgrade looks like any network failure: ask whether the
      // session is still there.
      if (!opened) checkSession();
    });
  }

  function scheduleReconnect() {
    clearTimeout(state.timer);
    const delay = RECONNECT_DELAYS_MS[Math.min(state.attempt, RECONNECT_DELAYS_MS.length - 1)];
    state.attempt += 1;
    state.timer = setTimeout(connect, delay);
    setConn("reconnecting");
  }

  async function checkSession() {
    try {
      const res = await fetch("/api/whoami", { credentials: "same-origin", cache: "no-store" });
      if (res.status === 401 && state.user) {
        document.dispatchEvent(new CustomEvent("sockit:unauthorized"));
      }
    } catch (_) {
      // The network is down: the reconnection loop goes on.
    }
  }

  /** Closes the socket for good (logout) and forgets everything. */
  function disconnect() {
    clearTimeout(state.timer);
    state.timer = 0;
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "logged out");
    failPending(new ChatError("offline"));
    if (state.user) {
      try {
        sessionStorage.removeItem(dmStorageKey());
      } catch (_) {
        // Nothing stored.
      }
    }
    state.user = null;
    state.attempt = 0;
    state.lastSeq = 0;
    state.resume = false;
    state.convs.clear();
    state.online.clear();
    state.current = null;
    state.sending = false;
    el.messages.replaceChildren();
    el.sendText.value = "";
    showSendError("");
    showNotice("");
    setConn("offline");
    render();
  }

  function failPending(err) {
    for (const p of state.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    state.pending.clear();
  }

  /** Sends a request and resolves with its answer (rejects with a ChatError). */
  function request(msg) {
    return new Promise((resolve, reject) => {
      const ws = state.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN || state.conn !== "online") {
        reject(new ChatError("offline"));
        return;
      }
      const id = state.nextId++;
      const timer = setTimeout(() => {
        state.pending.delete(id);
        reject(new ChatError("timeout"));
      }, REQUEST_TIMEOUT_MS);
      state.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify(Object.assign({}, msg, { id })));
    });
  }

  function onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    if (msg.id !== undefined && state.pending.has(msg.id)) {
      const p = state.pending.get(msg.id);
      state.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.type === "error") p.reject(new ChatError(String(msg.code || "error"), msg.message));
      else p.resolve(msg);
      return;
    }
    switch (msg.type) {
      case "subscribed":
        onSubscribed(msg);
        break;
      case "message": {
        const conv = addMessage(msg, true);
        if (conv) render();
        break;
      }
      case "presence":
        onPresence(msg);
        break;
      case "member":
        onMember(msg);
        break;
      case "error":
        if (msg.code === "slow_consumer") {
          showNotice("The connection fell behind; catching up\u2026");
        } else {
          showNotice((msg.message || msg.code || "The server reported an error") + "");
        }
        break;
      default:
        break;
    }
  }

  function onSubscribed(msg) {
    if (typeof msg.user === "string" && msg.user) state.user = msg.user;
    state.attempt = 0;
    if (el.notice.textContent.startsWith("The connection fell behind")) showNotice("");
    const rooms = Array.isArray(msg.rooms) ? msg.rooms.filter((r) => typeof r === "string") : [];
    const member = new Set(rooms.map(fold));
    for (const conv of state.convs.values()) {
      if (conv.kind === "room") conv.joined = member.has(fold(conv.name));
    }
    for (const name of rooms) {
      const conv = ensureConv("room", name);
      conv.name = name;
      conv.joined = true;
    }
    const messages = Array.isArray(msg.messages) ? msg.messages : [];
    if (msg.truncated) {
      // More was missed than the server replays: start every conversation
      // afresh from its latest history (unread counts still include what came).
      for (const conv of state.convs.values()) {
        conv.items = [];
        conv.seqs.clear();
        conv.loaded = false;
        conv.complete = false;
      }
      el.messages.replaceChildren();
    }
    for (const m of messages) addMessage(m, true);
    if (typeof msg.seq === "number" && msg.seq > state.lastSeq) state.lastSeq = msg.seq;
    state.resume = true;
    setConn("online");
    refreshOnline();
    // Member lists may have changed while away; ask again when shown.
    for (const conv of state.convs.values()) {
      if (conv.kind === "room" && conv.key !== state.current) conv.members = null;
    }
    const conv = currentConv();
    if (conv) openConv(conv);
    render();
  }

  async function refreshOnline() {
    try {
      const ans = await request({ type: "who" });
      state.online.clear();
      for (const u of Array.isArray(ans.users) ? ans.users : []) {
        if (typeof u === "string") state.online.set(fold(u), u);
      }
      for (const conv of state.convs.values()) {
        if (!conv.members) continue;
        for (const m of conv.members.values()) m.online = state.online.has(fold(m.user));
      }
      render();
    } catch (_) {
      // Offline again: the next subscription asks again.
    }
  }

  function onPresence(msg) {
    if (typeof msg.user !== "string") return;
    const key = fold(msg.user);
    if (msg.online) state.online.set(key, msg.user);
    else state.online.delete(key);
    for (const conv of state.convs.values()) {
      const m = conv.members && conv.members.get(key);
      if (m) m.online = Boolean(msg.online);
    }
    render();
  }

  function onMember(msg) {
    if (typeof msg.room !== "string" || typeof msg.user !== "string") return;
    const conv = ensureConv("room", msg.room);
    const me = sameName(msg.user, state.user);
    if (msg.joined) {
      if (conv.members) conv.members.set(fold(msg.user), { user: msg.user, online: me || state.online.has(fold(msg.user)) });
      if (me) conv.joined = true;
    } else {
      if (conv.members) conv.members.delete(fold(msg.user));
      if (me) conv.joined = false;
    }
    addEvent(conv, msg.user + (msg.joined ? " joined" : " left"));
    render();
  }

  // ---------------------------------------------------------------- requests

  function setMembers(conv, list) {
    conv.members = new Map();
    for (const m of Array.isArray(list) ? list : []) {
      if (m && typeof m.user === "string") {
        conv.members.set(fold(m.user), { user: m.user, online: Boolean(m.online) });
        if (m.online) state.online.set(fold(m.user), m.user);
      }
    }
  }

  /** Adds a page of history (oldest first); returns how many were new. */
  function addHistory(conv, messages) {
    const list = Array.isArray(messages) ? messages : [];
    const before = conv.items.length;
    const fromBottom = el.log.scrollHeight - el.log.scrollTop;
    const wasAtBottom = nearBottom();
    for (const m of list) {
      if (m && typeof m.seq === "number") addMessageTo(conv, m);
    }
    if (state.current === conv.key) {
      renderMessages();
      if (wasAtBottom && before === 0) el.log.scrollTop = el.log.scrollHeight;
      else el.log.scrollTop = el.log.scrollHeight - fromBottom;
    }
    return conv.items.length - before;
  }

  /** Like addMessage, for a message known to belong to `conv`, never unread. */
  function addMessageTo(conv, m) {
    if (typeof m.text !== "string") return;
    if (m.seq > state.lastSeq) state.lastSeq = m.seq;
    insertItem(conv, {
      kind: "msg",
      order: m.seq,
      seq: m.seq,
      ts: m.ts,
      from: typeof m.from === "string" ? m.from : "?",
      text: m.text,
      node: null,
    });
  }

  function historyRequest(conv, before) {
    const req = { type: "history", limit: HISTORY_PAGE };
    if (conv.kind === "room") req.room = conv.name;
    else req.with = conv.name;
    if (before !== undefined) req.before = before;
    return request(req);
  }

  /** On first opening: the latest messages, and a room's members. */
  async function openConv(conv) {
    if (state.conn !== "online") return;
    if (conv.kind === "room" && !conv.members) {
      request({ type: "members", room: conv.name })
        .then((ans) => {
          setMembers(conv, ans.members);
          if (typeof ans.room === "string") conv.name = ans.room;
          render();
        })
        .catch(() => {
          // no_such_room: the room has no members yet; the header says "Join".
          conv.members = new Map();
          render();
        });
    }
    if (conv.loaded || conv.loading) return;
    if (conv.kind === "room" && !conv.joined) return;
    conv.loading = true;
    renderOlder();
    try {
      const ans = await historyRequest(conv);
      const list = Array.isArray(ans.messages) ? ans.messages : [];
      conv.loaded = true;
      if (list.length < HISTORY_PAGE) conv.complete = true;
      if (conv.kind === "dm" && !conv.confirmed) {
        conv.confirmed = true;
        storeDms();
      }
      addHistory(conv, list);
    } catch (err) {
      if (err instanceof ChatError && err.code === "no_such_user") {
        state.convs.delete(conv.key);
        storeDms();
        if (state.current === conv.key) {
          showNotice("There is no user “" + conv.name + "”.");
          location.hash = "#chat";
        }
      } else if (err instanceof ChatError && err.code === "not_member") {
        conv.joined = false;
      } else if (state.current === conv.key) {
        showSendError("Could not load the messages: " + errorText(err), err.code);
      }
    } finally {
      conv.loading = false;
      render();
    }
  }

  async function loadOlder() {
    const conv = currentConv();
    if (!conv || !conv.loaded || conv.complete || conv.loading) return;
    const first = conv.items.find((it) => it.kind === "msg");
    if (!first) {
      conv.complete = true;
      renderOlder();
      return;
    }
    conv.loading = true;
    renderOlder();
    try {
      const ans = await historyRequest(conv, first.seq);
      const list = Array.isArray(ans.messages) ? ans.messages : [];
      if (list.length < HISTORY_PAGE) conv.complete = true;
      addHistory(conv, list);
    } catch (err) {
      if (state.current === conv.key) showSendError("Could not load older messages: " + errorText(err), err.code);
    } finally {
      conv.loading = false;
      renderOlder();
    }
  }

  /** Joins a room and shows it; `report` shows a failure where it was asked for. */
  async function join(name, report) {
    report("");
    if (!ROOM_RE.test(name)) {
      report(ERROR_TEXT.bad_room);
      return false;
    }
    try {
      const ans = await request({ type: "join", room: name });
      const conv = ensureConv("room", typeof ans.room === "string" && ans.room ? ans.room : name);
      if (typeof ans.room === "string" && ans.room) conv.name = ans.room;
      conv.joined = true;
      setMembers(conv, ans.members);
      if (!conv.members.has(fold(state.user))) {
        conv.members.set(fold(state.user), { user: state.user, online: true });
      }
      const history = Array.isArray(ans.history) ? ans.history : [];
      conv.loaded = true;
      conv.complete = history.length === 0;
      addHistory(conv, history);
      conv.unread = 0;
      if (location.hash !== hashFor(conv)) location.hash = hashFor(conv);
      render();
      return true;
    } catch (err) {
      report("Could not join “" + name + "”: " + errorText(err));
      return false;
    }
  }

  async function leave(conv) {
    showSendError("");
    try {
      await request({ type: "leave", room: conv.name });
      conv.joined = false;
      if (conv.members) conv.members.delete(fold(state.user));
      if (state.current === conv.key) location.hash = "#chat";
      render();
    } catch (err) {
      showSendError("Could not leave “" + conv.name + "”: " + errorText(err), err.code);
    }
  }

  async function send() {
    const conv = currentConv();
    if (!conv || state.sending) return;
    const text = el.sendText.value;
    if (!text.trim()) return;
    showSendError("");
    if (conv.kind === "room" && !conv.joined) {
      showSendError("Not sent: " + ERROR_TEXT.not_member, "not_member");
      return;
    }
    state.sending = true;
    state.sendingBytes = new TextEncoder().encode(text).length;
    el.sendForm.dataset.sending = "1";
    try {
      const req = { type: "send", text };
      if (conv.kind === "room") req.room = conv.name;
      else req.to = conv.name;
      const ans = await request(req);
      const m = { seq: ans.seq, ts: ans.ts, from: state.user, text };
      if (conv.kind === "room") m.room = conv.name;
      else m.to = conv.name;
      if (addMessage(m, false)) render();
      if (el.sendText.value === text) el.sendText.value = "";
    } catch (err) {
      // A 1009 close already said "too long"; keep that.
      if (!(err.code === "offline" && el.sendError.dataset.code === "too_large")) {
        showSendError("Not sent: " + errorText(err), err.code);
      }
    } finally {
      state.sending = false;
      delete el.sendForm.dataset.sending;
    }
  }

  // ---------------------------------------------------------------- render

  function renderConn() {
    el.conn.dataset.state = state.conn;
    const text = {
      offline: "Offline",
      connecting: "Connecting\u2026",
      online: "Connected",
      reconnecting: "Reconnecting\u2026",
    }[state.conn];
    el.connText.textContent = text;
    el.retry.hidden = state.conn !== "reconnecting" || !state.timer;
    el.view.dataset.conn = state.conn;
  }

  function badge(count) {
    const b = document.createElement("span");
    b.className = "badge";
    b.textContent = count > 99 ? "99+" : String(count);
    b.setAttribute("aria-label", count + " unread");
    return b;
  }

  function dot(online) {
    const d = document.createElement("span");
    d.className = "dot" + (online ? " online" : "");
    d.setAttribute("aria-hidden", "true");
    return d;
  }

  function convLink(conv) {
    const a = document.createElement("a");
    a.className = "conv-link";
    a.href = hashFor(conv);
    a.dataset.key = conv.key;
    if (conv.kind === "room") a.dataset.room = conv.name;
    else a.dataset.user = conv.name;
    if (state.current === conv.key) a.setAttribute("aria-current", "page");
    if (conv.kind === "dm") a.append(dot(state.online.has(fold(conv.name))));
    const name = document.createElement("span");
    name.className = "conv-name";
    name.textContent = conv.kind === "room" ? "#" + conv.name : conv.name;
    a.append(name);
    if (conv.unread > 0) a.append(badge(conv.unread));
    const li = document.createElement("li");
    li.append(a);
    return li;
  }

  const byName = (a, b) => (fold(a.name) < fold(b.name) ? -1 : fold(a.name) > fold(b.name) ? 1 : 0);

  function renderSidebar() {
    const convs = Array.from(state.convs.values());
    el.rooms.replaceChildren(...convs.filter((c) => c.kind === "room" && c.joined).sort(byName).map(convLink));
    el.dms.replaceChildren(
      ...convs.filter((c) => c.kind === "dm" && (c.confirmed || c.key === state.current)).sort(byName).map(convLink)
    );
    const users = Array.from(state.online.values()).sort((a, b) => (fold(a) < fold(b) ? -1 : 1));
    el.online.replaceChildren(
      ...users.map((u) => {
        const li = document.createElement("li");
        li.dataset.user = u;
        li.append(dot(true));
        if (sameName(u, state.user)) {
          const me = document.createElement("span");
          me.className = "online-name";
          me.textContent = u + " (you)";
          li.append(me);
        } else {
          const a = document.createElement("a");
          a.className = "online-name";
          a.href = "#chat/@" + encodeURIComponent(u);
          a.textContent = u;
          a.title = "Message " + u;
          li.append(a);
        }
        return li;
      })
    );
    el.onlineCount.textContent = users.length ? "(" + users.length + ")" : "";
    let total = 0;
    for (const c of convs) total += c.unread;
    el.badge.hidden = total === 0;
    el.badge.textContent = total > 99 ? "99+" : String(total);
    el.badge.setAttribute("aria-label", total + " unread");
  }

  function renderHead(conv) {
    el.title.textContent = conv.kind === "room" ? "#" + conv.name : conv.name;
    if (conv.kind === "dm") {
      const on = state.online.has(fold(conv.name));
      el.presence.textContent = on ? "online" : "offline";
      el.presence.dataset.online = on ? "1" : "0";
      el.presence.hidden = false;
      el.members.hidden = true;
      el.join.hidden = true;
      el.leave.hidden = true;
      return;
    }
    el.presence.hidden = true;
    el.join.hidden = conv.joined;
    el.leave.hidden = !conv.joined;
    const members = conv.members ? Array.from(conv.members.values()) : [];
    el.members.hidden = !conv.members;
    const online = members.filter((m) => m.online).length;
    el.membersSummary.textContent =
      members.length + (members.length === 1 ? " member" : " members") + ", " + online + " online";
    members.sort((a, b) => (b.online - a.online) || (fold(a.user) < fold(b.user) ? -1 : 1));
    el.membersList.replaceChildren(
      ...members.map((m) => {
        const li = document.createElement("li");
        li.dataset.user = m.user;
        li.dataset.online = m.online ? "1" : "0";
        const name = document.createElement("span");
        name.textContent = m.user;
        li.append(dot(m.online), name);
        return li;
      })
    );
  }

  function renderOlder() {
    const conv = currentConv();
    el.older.hidden = !(conv && conv.loaded && !conv.complete);
    el.older.disabled = Boolean(conv && conv.loading);
    el.older.textContent = conv && conv.loading ? "Loading\u2026" : "Load older messages";
    el.logStart.hidden = !(conv && conv.loaded && conv.complete);
  }

  /** Shows every item of the current conversation (after switching or a history page). */
  function renderMessages() {
    const conv = currentConv();
    el.messages.replaceChildren(...(conv ? conv.items.map(nodeFor) : []));
    renderOlder();
  }

  function render() {
    const conv = currentConv();
    if (conv && isShown(conv)) conv.unread = 0;
    renderConn();
    renderSidebar();
    el.view.classList.toggle("show-conv", Boolean(conv));
    el.empty.hidden = Boolean(conv);
    el.conv.hidden = !conv;
    if (conv) {
      renderHead(conv);
      renderOlder();
    }
    if (state.visible) {
      const total = Array.from(state.convs.values()).reduce((n, c) => n + c.unread, 0);
      const where = conv ? (conv.kind === "room" ? "#" + conv.name : conv.name) + " \u2014 " : "";
      document.title = (total ? "(" + total + ") " : "") + where + "sockit chat";
    }
  }

  /** Follows the hash: which conversation is shown. */
  function applyRoute() {
    const target = state.target || "";
    let conv = null;
    showSendError("");
    if (target.startsWith("@")) {
      const name = target.slice(1);
      if (USER_RE.test(name)) conv = ensureConv("dm", name);
      else showNotice("“" + name + "” is not a user name.");
    } else if (target) {
      if (ROOM_RE.test(target)) conv = ensureConv("room", target);
      else showNotice(ERROR_TEXT.bad_room);
    }
    const changed = (conv ? conv.key : null) !== state.current;
    state.current = conv ? conv.key : null;
    if (changed) renderMessages();
    render();
    if (conv) {
      if (changed) el.log.scrollTop = el.log.scrollHeight;
      openConv(conv);
    }
  }

  // ---------------------------------------------------------------- events

  document.addEventListener("sockit:session", (ev) => {
    const user = ev.detail && ev.detail.user;
    if (user && state.user && sameName(user, state.user)) return;
    disconnect();
    if (!user) return;
    state.user = user;
    loadStoredDms();
    if (state.visible) {
      connect();
      applyRoute();
    } else {
      render();
    }
  });

  document.addEventListener("sockit:route", (ev) => {
    const chat = ev.detail ? ev.detail.chat : null;
    state.visible = typeof chat === "string";
    if (!state.visible) {
      render();
      return;
    }
    state.target = chat;
    // The socket opens the first time the chat is shown and stays open
    // until logout, so the Chat tab counts unread messages meanwhile.
    if (state.user && !state.ws && state.conn === "offline") connect();
    applyRoute();
  });

  el.retry.addEventListener("click", () => {
    if (!state.ws) connect();
  });

  // Back online: try at once instead of waiting out the delay.
  window.addEventListener("online", () => {
    if (state.user && !state.ws) connect();
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") render();
  });

  el.joinForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = el.joinRoom.value.trim();
    if (!name) return;
    if (await join(name, showNotice)) el.joinRoom.value = "";
  });

  el.dmForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = el.dmUser.value.trim();
    if (!name) return;
    if (!USER_RE.test(name)) {
      showNotice("A user name is 1 to 32 letters, digits, “_”, “.” or “-”.");
      return;
    }
    showNotice("");
    el.dmUser.value = "";
    location.hash = "#chat/@" + encodeURIComponent(name);
  });

  el.join.addEventListener("click", () => {
    const conv = currentConv();
    if (conv && conv.kind === "room") join(conv.name, (m) => showSendError(m));
  });

  el.leave.addEventListener("click", () => {
    const conv = currentConv();
    if (conv && conv.kind === "room") leave(conv);
  });

  el.older.addEventListener("click", loadOlder);

  el.log.addEventListener("scroll", () => {
    if (el.log.scrollTop < NEAR_TOP_PX) loadOlder();
  });

  el.sendForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send();
  });

  // Enter sends; Shift+Enter makes a new line; an input method composing
  // text keeps its Enter.
  el.sendText.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });

  el.sendText.addEventListener("input", () => {
    if (el.sendError.textContent) showSendError("");
  });
})();
