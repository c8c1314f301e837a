// sockit files: the browser app for the file store (docs/http-api.md).
// The chat page lives in chat.js; this file tells it who is logged in and
// which view the hash names ("sockit:session" and "sockit:route" events).
//
// Plain script, no build step, no dependencies. The page is served under a
// strict Content-Security-Policy, so everything is wired here with
// addEventListener, and user-controlled text (file names, messages) is only
// ever inserted with textContent, never as HTML.
"use strict";

(() => {
  /** Bytes per upload request: a cut connection loses at most this much. */
  const CHUNK_SIZE = 8 * 1024 * 1024;
  /** Waits before each retry after a network error, in milliseconds. */
  const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  /** Uploads that run at the same time; the rest wait in line. */
  const PARALLEL_UPLOADS = 2;

  const $ = (id) => document.getElementById(id);

  const el = {
    account: $("account"),
    brandSub: $("brand-sub"),
    views: $("views"),
    navFiles: $("nav-files"),
    navChat: $("nav-chat"),
    chatView: $("chat-view"),
    accountName: $("account-name"),
    accountUsage: $("account-usage"),
    logout: $("logout"),
    status: $("status"),
    loginView: $("login-view"),
    loginForm: $("login-form"),
    loginName: $("login-name"),
    loginPassword: $("login-password"),
    loginSubmit: $("login-submit"),
    registerSubmit: $("register-submit"),
    browserView: $("browser-view"),
    breadcrumb: $("breadcrumb"),
    newFolder: $("new-folder"),
    fileInput: $("file-input"),
    uploadsSection: $("uploads-section"),
    uploads: $("uploads"),
    uploadsClear: $("uploads-clear"),
    fileTable: $("file-table"),
    fileBody: $("file-table").tBodies[0],
    empty: $("empty"),
  };

  const state = {
    /** The logged-in user, or null when the login form is shown. */
    user: null,
    /** The CSRF value from login/whoami; sent on every non-GET request. */
    csrf: "",
    /** Whether the server lets anyone register (shows the Register button). */
    allowRegister: false,
    /** The folder shown, as path components (empty = the top of the space). */
    folder: [],
    /** Increases on every listing request, so a slow answer for a folder we
        already left is dropped. */
    listSeq: 0,
  };

  // ---------------------------------------------------------------- helpers

  /** An answer from the API that was not a success. */
  class ApiError extends Error {
    constructor(status, body) {
      const code = (body && body.error) || (status === 0 ? "network" : "http_" + status);
      const message =
        (body && body.message) ||
        (status === 0
          ? "The server could not be reached. Check the connection and try again."
          : "The server answered " + status + " (" + code + ").");
      super(message);
      this.status = status;
      this.code = code;
      this.body = body || {};
    }
  }

  /** Percent-encodes each component of a path for use in a URL. */
  function encodePath(parts) {
    return parts.map(encodeURIComponent).join("/");
  }

  /** Splits a user-typed or stored path into its components. */
  function splitPath(path) {
    return String(path).split("/").filter((p) => p !== "");
  }

  function joinPath(parts) {
    return parts.join("/");
  }

  /** Calls the JSON API. Resolves with the parsed body (or null), rejects with ApiError. */
  async function api(method, url, body) {
    const headers = {};
    if (method !== "GET" && method !== "HEAD" && state.csrf) {
      headers["X-Sockit-CSRF"] = state.csrf;
    }
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (_) {
      throw new ApiError(0, null);
    }
    let data = null;
    const text = await res.text().catch(() => "");
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      throw new ApiError(res.status, data);
    }
    return data;
  }

  function formatSize(n) {
    if (typeof n !== "number" || !isFinite(n)) return "";
    if (n < 1024) return n + " B";
    const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (v < 10 ? v.toFixed(1) : Math.round(v).toString()) + " " + units[i];
  }

  function formatSpeed(bytesPerSecond) {
    if (!isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "";
    return formatSize(Math.round(bytesPerSecond)) + "/s";
  }

  function formatDate(mtimeNs) {
    if (typeof mtimeNs !== "number" || !isFinite(mtimeNs)) return "";
    const d = new Date(mtimeNs / 1e6);
    if (isNaN(d.getTime())) return "";
    return d.toLocaleString(undefined, {
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
    });
  }

  /** A short, stable, non-cryptographic hash (cyrb53 twice) as 16 hex digits. */
  function hashHex(str) {
    let h1 = 0xdeadbeef;
    let h2 = 0x41c6ce57;
    for (let i = 0; i < str.length; i++) {
      const ch = str.charCodeAt(i);
      h1 = Math.imul(h1 ^ ch, 2654435761);
      h2 = Math.imul(h2 ^ ch, 1597334677);
    }
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
    return (h2 >>> 0).toString(16).padStart(8, "0") + (h1 >>> 0).toString(16).padStart(8, "0");
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  let statusTimer = 0;

  /** Shows a message in the status area; kind is "error", "ok" or "info". */
  function showStatus(message, kind) {
    clearTimeout(statusTimer);
    el.status.className = "status " + (kind || "info");
    el.status.textContent = message;
    if (kind === "ok" || kind === "info") {
      statusTimer = setTimeout(clearStatus, 5000);
    }
  }

  function clearStatus() {
    clearTimeout(statusTimer);
    el.status.textContent = "";
    el.status.className = "status";
  }

  /** Shows an API failure; a lost session goes back to the login form. */
  function showError(err, what) {
    if (err instanceof ApiError && err.status === 401 && state.user) {
      state.user = null;
      state.csrf = "";
      if (typeof err.body.allow_register === "boolean") {
        state.allowRegister = err.body.allow_register;
      }
      showLogin();
      showStatus("Your session has ended. Please log in again.", "error");
      return;
    }
    const msg = err && err.message ? err.message : String(err);
    showStatus(what ? what + ": " + msg : msg, "error");
  }

  // ---------------------------------------------------------------- views

  /** The user chat.js was last told about. */
  let announcedUser = null;

  /** Tells chat.js who is logged in (null: nobody; it closes its socket). */
  function announceSession(user) {
    if (user === announcedUser) return;
    announcedUser = user;
    document.dispatchEvent(new CustomEvent("sockit:session", { detail: { user } }));
  }

  /** The chat's part of the hash ("#chat/lobby" -> "lobby", "#chat" -> ""), or null for the files. */
  function chatFromHash() {
    const m = /^#chat(?:\/(.*))?$/.exec(location.hash);
    if (!m) return null;
    try {
      return decodeURIComponent(m[1] || "");
    } catch (_) {
      return m[1] || "";
    }
  }

  /** Shows the view the hash names: the chat, or the folder. */
  function route() {
    const chat = chatFromHash();
    const inChat = chat !== null;
    el.browserView.hidden = inChat;
    el.chatView.hidden = !inChat;
    document.body.classList.toggle("chat-mode", inChat);
    el.brandSub.textContent = inChat ? "chat" : "files";
    const [on, off] = inChat ? [el.navChat, el.navFiles] : [el.navFiles, el.navChat];
    on.setAttribute("aria-current", "page");
    off.removeAttribute("aria-current");
    document.dispatchEvent(new CustomEvent("sockit:route", { detail: { chat } }));
    if (!inChat) loadFolder();
  }

  function showLogin() {
    el.account.hidden = true;
    el.views.hidden = true;
    el.chatView.hidden = true;
    document.body.classList.remove("chat-mode");
    announceSession(null);
    document.dispatchEvent(new CustomEvent("sockit:route", { detail: { chat: null } }));
    el.browserView.hidden = true;
    el.loginView.hidden = false;
    el.registerSubmit.hidden = !state.allowRegister;
    el.loginPassword.value = "";
    el.fileBody.replaceChildren();
    el.loginName.focus();
  }

  function showBrowser() {
    el.loginView.hidden = true;
    el.account.hidden = false;
    el.views.hidden = false;
    el.accountName.textContent = state.user;
    announceSession(state.user);
    route();
  }

  function applyWhoami(data) {
    state.user = data.user;
    if (data.csrf) state.csrf = data.csrf;
    if (typeof data.allow_register === "boolean") state.allowRegister = data.allow_register;
    if (typeof data.used === "number") {
      el.accountUsage.textContent =
        formatSize(data.used) +
        (typeof data.quota === "number" && data.quota > 0 ? " of " + formatSize(data.quota) : "") +
        " used";
    } else {
      el.accountUsage.textContent = "";
    }
  }

  /** Asks the server who we are: the file browser when logged in, else the login form. */
  async function checkSession() {
    try {
      const data = await api("GET", "/api/whoami");
      applyWhoami(data);
      showBrowser();
    } catch (err) {
      state.user = null;
      state.csrf = "";
      if (err instanceof ApiError && err.status === 401) {
        state.allowRegister = err.body.allow_register === true;
        showLogin();
      } else {
        showLogin();
        showError(err, "Could not reach the server");
      }
    }
  }

  /** Refreshes the usage shown next to the user name, quietly. */
  async function refreshUsage() {
    try {
      applyWhoami(await api("GET", "/api/whoami"));
    } catch (_) {
      // Not worth a message: the next real action reports problems.
    }
  }

  async function submitCredentials(endpoint, verb) {
    const name = el.loginName.value.trim();
    const password = el.loginPassword.value;
    if (!el.loginForm.reportValidity()) return;
    el.loginSubmit.disabled = true;
    el.registerSubmit.disabled = true;
    try {
      const data = await api("POST", endpoint, { name, password });
      clearStatus();
      if (data && data.csrf) {
        applyWhoami(data);
        showBrowser();
        refreshUsage();
      } else {
        await checkSession();
      }
    } catch (err) {
      if (err instanceof ApiError && typeof err.body.allow_register === "boolean") {
        state.allowRegister = err.body.allow_register;
        el.registerSubmit.hidden = !state.allowRegister;
      }
      showError(err, verb + " failed");
    } finally {
      el.loginSubmit.disabled = false;
      el.registerSubmit.disabled = false;
    }
  }

  el.loginForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitCredentials("/api/login", "Login");
  });

  el.registerSubmit.addEventListener("click", () => {
    submitCredentials("/api/register", "Registration");
  });

  el.logout.addEventListener("click", async () => {
    try {
      await api("POST", "/api/logout");
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        showError(err, "Log out failed");
        return;
      }
    }
    state.user = null;
    state.csrf = "";
    clearStatus();
    // Ask again: the 401 says whether registration is open.
    await checkSession();
  });

  // ---------------------------------------------------------------- folders

  /** The folder named by location.hash, e.g. "#/photos/2026". */
  function folderFromHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    return splitPath(raw).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch (_) {
        return p;
      }
    });
  }

  function hashFor(parts) {
    return "#/" + encodePath(parts);
  }

  window.addEventListener("hashchange", () => {
    if (state.user) route();
  });

  // chat.js saw its socket refused and /api/whoami answer 401.
  document.addEventListener("sockit:unauthorized", () => {
    if (state.user) showError(new ApiError(401, {}));
  });

  function renderBreadcrumb(parts) {
    const nodes = [];
    const make = (label, upto, isCurrent) => {
      let node;
      if (isCurrent) {
        node = document.createElement("span");
        node.className = "crumb-current";
        node.setAttribute("aria-current", "page");
      } else {
        node = document.createElement("a");
        node.href = hashFor(parts.slice(0, upto));
      }
      node.dataset.path = joinPath(parts.slice(0, upto));
      node.textContent = label;
      return node;
    };
    nodes.push(make("Home", 0, parts.length === 0));
    parts.forEach((part, i) => {
      const sep = document.createElement("span");
      sep.className = "sep";
      sep.setAttribute("aria-hidden", "true");
      sep.textContent = "/";
      nodes.push(sep, make(part, i + 1, i === parts.length - 1));
    });
    el.breadcrumb.replaceChildren(...nodes);
  }

  function button(label, className, title) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "button small " + className;
    b.textContent = label;
    if (title) {
      b.title = title;
      b.setAttribute("aria-label", title);
    }
    return b;
  }

  function renderEntries(parts, entries) {
    const rows = entries.map((entry) => {
      const path = parts.concat(entry.name);
      const tr = document.createElement("tr");
      tr.dataset.name = entry.name;
      tr.dataset.kind = entry.kind;

      const nameTd = document.createElement("td");
      nameTd.className = "col-name";
      const nameWrap = document.createElement("span");
      nameWrap.className = "entry-name";
      const icon = document.createElement("span");
      icon.className = "icon icon-" + (entry.kind === "dir" ? "dir" : "file");
      icon.setAttribute("aria-hidden", "true");
      let label;
      if (entry.kind === "dir") {
        label = document.createElement("a");
        label.className = "folder";
        label.href = hashFor(path);
      } else {
        label = document.createElement("span");
        label.className = "file-name";
      }
      label.textContent = entry.name;
      nameWrap.append(icon, label);
      nameTd.append(nameWrap);

      const sizeTd = document.createElement("td");
      sizeTd.className = "col-size";
      sizeTd.textContent = entry.kind === "dir" ? "\u2014" : formatSize(entry.size);
      if (entry.kind !== "dir" && typeof entry.size === "number") {
        sizeTd.title = entry.size.toLocaleString() + " bytes";
      }

      const mtimeTd = document.createElement("td");
      mtimeTd.className = "col-mtime";
      mtimeTd.textContent = formatDate(entry.mtime_ns);

      const actionsTd = document.createElement("td");
      actionsTd.className = "col-actions";
      const actions = document.createElement("span");
      actions.className = "row-actions";
      if (entry.kind === "file" || entry.kind === "symlink") {
        const dl = document.createElement("a");
        dl.className = "button small download";
        dl.href = "/api/files/" + encodePath(path);
        dl.download = entry.name;
        dl.textContent = "Download";
        dl.setAttribute("aria-label", "Download " + entry.name);
        actions.append(dl);
      }
      const rename = button("Rename", "rename", "Rename or move " + entry.name);
      rename.addEventListener("click", () => renameEntry(path));
      const del = button("Delete", "delete danger", "Delete " + entry.name);
      del.addEventListener("click", () => deleteEntry(path, entry.kind));
      actions.append(rename, del);
      actionsTd.append(actions);

      tr.append(nameTd, sizeTd, mtimeTd, actionsTd);
      return tr;
    });
    el.fileBody.replaceChildren(...rows);
    el.empty.hidden = rows.length !== 0;
  }

  /** Lists the folder named by the hash and shows it. */
  async function loadFolder() {
    const parts = folderFromHash();
    const seq = ++state.listSeq;
    state.folder = parts;
    el.navFiles.href = hashFor(parts);
    renderBreadcrumb(parts);
    document.title = (parts.length ? parts[parts.length - 1] + " \u2014 " : "") + "sockit files";
    try {
      const data = await api("GET", "/api/ls/" + encodePath(parts));
      if (seq !== state.listSeq) return;
      const entries = Array.isArray(data && data.entries) ? data.entries.slice() : [];
      // The server sorts already; sort again so folders always come first.
      entries.sort((a, b) => {
        const da = a.kind === "dir" ? 0 : 1;
        const db = b.kind === "dir" ? 0 : 1;
        if (da !== db) return da - db;
        return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
      });
      renderEntries(parts, entries);
    } catch (err) {
      if (seq !== state.listSeq) return;
      el.fileBody.replaceChildren();
      el.empty.hidden = true;
      showError(err, "Could not list “" + (joinPath(parts) || "Home") + "”");
    }
  }

  /** Reloads the listing (after a change) without touching the hash. */
  function refresh() {
    if (state.user) {
      if (chatFromHash() === null) loadFolder();
      refreshUsage();
    }
  }

  el.newFolder.addEventListener("click", async () => {
    const input = window.prompt("Name of the new folder:", "");
    if (input === null) return;
    const name = splitPath(input.trim());
    if (name.length === 0) return;
    const path = joinPath(state.folder.concat(name));
    try {
      await api("POST", "/api/mkdir", { path });
      showStatus("Folder “" + path + "” created.", "ok");
      refresh();
    } catch (err) {
      showError(err, "Could not create the folder");
    }
  });

  async function renameEntry(parts) {
    const from = joinPath(parts);
    const input = window.prompt("New path (from the top of your space):", from);
    if (input === null) return;
    const to = joinPath(splitPath(input.trim()));
    if (!to || to === from) return;
    try {
      try {
        await api("POST", "/api/mv", { from, to, overwrite: false });
      } catch (err) {
        if (!(err instanceof ApiError && err.code === "exists")) throw err;
        if (!window.confirm("“" + to + "” already exists. Replace it?")) return;
        await api("POST", "/api/mv", { from, to, overwrite: true });
      }
      showStatus("Moved “" + from + "” to “" + to + "”.", "ok");
      refresh();
    } catch (err) {
      showError(err, "Could not rename");
    }
  }

  async function deleteEntry(parts, kind) {
    const path = joinPath(parts);
    const what = kind === "dir" ? "the folder" : "";
    if (!window.confirm("Delete " + (what ? what + " " : "") + "“" + path + "”?")) return;
    const url = "/api/files/" + encodePath(parts);
    try {
      try {
        await api("DELETE", url);
      } catch (err) {
        if (!(err instanceof ApiError && err.code === "not_empty")) throw err;
        if (!window.confirm("“" + path + "” is not empty. Delete it and everything in it?")) return;
        await api("DELETE", url + "?recursive=1");
      }
      showStatus("Deleted “" + path + "”.", "ok");
      refresh();
    } catch (err) {
      showError(err, "Could not delete");
    }
  }

  // ---------------------------------------------------------------- uploads

  const uploadQueue = [];
  let uploadsRunning = 0;
  let refreshTimer = 0;

  /** One file being uploaded, with its row in #uploads. */
  class Upload {
    constructor(file, folder) {
      this.file = file;
      this.parts = folder.concat(file.name);
      this.path = joinPath(this.parts);
      this.id = hashHex(file.name + "\u0000" + file.size + "\u0000" + file.lastModified);
      this.overwrite = false;
      this.xhr = null;
      this.cancelled = false;
      this.startedAt = 0;
      this.sentThisSession = 0;
      this.buildRow();
    }

    buildRow() {
      const li = document.createElement("li");
      li.className = "upload";
      li.dataset.name = this.file.name;
      li.dataset.path = this.path;
      const name = document.createElement("span");
      name.className = "upload-name";
      name.textContent = this.path;
      this.cancelButton = button("Cancel", "cancel", "Cancel the upload of " + this.file.name);
      this.cancelButton.addEventListener("click", () => this.cancel());
      this.progress = document.createElement("progress");
      this.progress.max = Math.max(this.file.size, 1);
      this.progress.value = 0;
      this.info = document.createElement("span");
      this.info.className = "upload-info";
      this.statusEl = document.createElement("span");
      this.statusEl.className = "upload-status";
      li.append(name, this.cancelButton, this.progress, this.info, this.statusEl);
      this.row = li;
      this.setState("uploading", "Waiting\u2026");
    }

    setState(state, message) {
      this.row.dataset.state = state;
      this.statusEl.textContent = message;
      if (state !== "uploading") this.cancelButton.hidden = true;
    }

    showProgress(done) {
      const size = this.file.size;
      this.progress.value = size === 0 ? 1 : done;
      const pct = size === 0 ? 100 : Math.floor((done / size) * 100);
      const elapsed = (performance.now() - this.startedAt) / 1000;
      const speed = elapsed > 0.3 ? formatSpeed(this.sentThisSession / elapsed) : "";
      this.info.textContent =
        pct + "% \u00b7 " + formatSize(done) + " of " + formatSize(size) + (speed ? " \u00b7 " + speed : "");
    }

    cancel() {
      this.cancelled = true;
      if (this.xhr) this.xhr.abort();
      this.setState("error", "Cancelled. Select the file again to resume.");
    }

    /** Asks the server how much of this upload it already holds. */
    async queryOffset() {
      const q =
        "?length=" + this.file.size + "&id=" + encodeURIComponent(this.id) + "&mtime=" + this.file.lastModified;
      const data = await api("GET", "/api/uploads/" + encodePath(this.parts) + q);
      const off = data && typeof data.offset === "number" ? data.offset : 0;
      return off >= 0 && off <= this.file.size ? off : 0;
    }

    /** Sends bytes [offset, end) in one PUT; resolves with {status, body}. */
    sendChunk(offset, end) {
      return new Promise((resolve) => {
        const size = this.file.size;
        const xhr = new XMLHttpRequest();
        this.xhr = xhr;
        xhr.open("PUT", "/api/files/" + encodePath(this.parts) + (this.overwrite ? "?overwrite=1" : ""));
        if (state.csrf) xhr.setRequestHeader("X-Sockit-CSRF", state.csrf);
        xhr.setRequestHeader("X-Sockit-Upload-Id", this.id);
        xhr.setRequestHeader("X-Sockit-Mtime", String(this.file.lastModified));
        xhr.setRequestHeader("Content-Type", "application/octet-stream");
        if (size > 0) {
          xhr.setRequestHeader("Content-Range", "bytes " + offset + "-" + (end - 1) + "/" + size);
        }
        let lastLoaded = 0;
        xhr.upload.onprogress = (ev) => {
          this.sentThisSession += ev.loaded - lastLoaded;
          lastLoaded = ev.loaded;
          this.showProgress(Math.min(offset + ev.loaded, size));
        };
        const finish = (status) => {
          this.xhr = null;
          let body = null;
          try {
            body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
          } catch (_) {
            body = null;
          }
          resolve({ status, body });
        };
        xhr.onload = () => finish(xhr.status);
        xhr.onerror = () => finish(0);
        xhr.ontimeout = () => finish(0);
        xhr.onabort = () => finish(-1);
        xhr.send(size > 0 ? this.file.slice(offset, end) : new Blob([]));
      });
    }

    async run() {
      this.startedAt = performance.now();
      const size = this.file.size;
      let attempt = 0;
      let offset = null; // null: ask the server first
      let busyWaits = 0;
      let mismatches = 0; // offset_mismatch answers that did not move us on
      while (!this.cancelled) {
        try {
          if (offset === null) {
            this.setState("uploading", attempt ? "Reconnecting\u2026" : "Starting\u2026");
            offset = await this.queryOffset();
            if (offset > 0) this.setState("uploading", "Resuming from " + formatSize(offset) + "\u2026");
            this.showProgress(offset);
          }
          if (this.cancelled) return false;
          if (size > 0 && offset >= size) {
            // Every byte is on the server yet the file was not published: nothing
            // left to send that could finish it, so say so instead of looping.
            this.setState("error", "The server holds the whole file but did not store it; try again later.");
            return false;
          }
          const end = size === 0 ? 0 : Math.min(offset + CHUNK_SIZE, size);
          if (this.statusEl.textContent !== "Uploading\u2026") this.setState("uploading", "Uploading\u2026");
          const { status, body } = await this.sendChunk(offset, end);
          if (this.cancelled || status === -1) return false;
          const b = body || {};
          if (status === 201) {
            this.progress.value = this.progress.max;
            const secs = (performance.now() - this.startedAt) / 1000;
            // A speed over a few bytes says nothing; show it for real transfers only.
            const speed = this.sentThisSession >= 1024 * 1024 && secs > 0 ? formatSpeed(this.sentThisSession / secs) : "";
            this.info.textContent = "100% \u00b7 " + formatSize(size) + (speed ? " \u00b7 " + speed + " on average" : "");
            this.setState("done", "Done");
            return true;
          }
          if (status === 202 && typeof b.offset === "number") {
            if (b.offset > offset) {
              attempt = 0;
              mismatches = 0;
            }
            offset = b.offset;
            this.showProgress(offset);
            continue;
          }
          if (status === 409 && b.error === "offset_mismatch" && typeof b.offset === "number") {
            mismatches = b.offset === offset ? mismatches + 1 : 0;
            if (mismatches >= 3) throw new ApiError(status, body);
            offset = b.offset;
            continue;
          }
          if (status === 409 && b.error === "exists" && !this.overwrite) {
            if (window.confirm("“" + this.path + "” already exists. Replace it?")) {
              this.overwrite = true;
              continue;
            }
            this.setState("error", "Not uploaded: the file already exists.");
            return false;
          }
          if (status === 409 && b.error === "busy" && busyWaits < 5) {
            busyWaits += 1;
            this.setState("uploading", "Another upload of this file is running; waiting\u2026");
            await sleep(2000 * busyWaits);
            offset = null;
            continue;
          }
          if (status === 401) {
            showError(new ApiError(401, b));
            this.setState("error", "Not logged in.");
            return false;
          }
          if (status === 0 || status >= 502) {
            throw new ApiError(0, null);
          }
          throw new ApiError(status, body);
        } catch (err) {
          if (this.cancelled) return false;
          const transient = err instanceof ApiError && (err.status === 0 || err.status >= 502);
          if (!transient || attempt >= RETRY_DELAYS_MS.length) {
            this.setState("error", err.message || String(err));
            return false;
          }
          const delay = RETRY_DELAYS_MS[attempt];
          attempt += 1;
          this.setState(
            "uploading",
            "Connection lost; retrying in " + Math.round(delay / 1000) + " s (attempt " + attempt + " of " +
              RETRY_DELAYS_MS.length + ")\u2026"
          );
          await sleep(delay);
          offset = null; // ask the server where to continue
        }
      }
      return false;
    }
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 150);
  }

  function pumpUploads() {
    while (uploadsRunning < PARALLEL_UPLOADS && uploadQueue.length) {
      const up = uploadQueue.shift();
      if (up.cancelled) continue;
      uploadsRunning += 1;
      up.run()
        .catch((err) => up.setState("error", err && err.message ? err.message : String(err)))
        .finally(() => {
          uploadsRunning -= 1;
          if (joinPath(state.folder) === joinPath(up.parts.slice(0, -1))) scheduleRefresh();
          pumpUploads();
        });
    }
  }

  function startUploads(files) {
    if (!state.user) return;
    const list = Array.from(files || []);
    if (!list.length) return;
    el.uploadsSection.hidden = false;
    for (const file of list) {
      const up = new Upload(file, state.folder.slice());
      el.uploads.append(up.row);
      uploadQueue.push(up);
    }
    pumpUploads();
  }

  el.fileInput.addEventListener("change", () => {
    startUploads(el.fileInput.files);
    el.fileInput.value = "";
  });

  el.uploadsClear.addEventListener("click", () => {
    for (const row of Array.from(el.uploads.children)) {
      if (row.dataset.state !== "uploading") row.remove();
    }
    if (!el.uploads.children.length) el.uploadsSection.hidden = true;
  });

  // Drag and drop anywhere on the page.
  let dragDepth = 0;
  const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes("Files");

  document.addEventListener("dragenter", (ev) => {
    if (!state.user || !hasFiles(ev) || chatFromHash() !== null) return;
    ev.preventDefault();
    dragDepth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragover", (ev) => {
    if (!state.user || !hasFiles(ev)) return;
    ev.preventDefault();
    // The chat takes no files, but a drop must not open the file instead of the app.
    ev.dataTransfer.dropEffect = chatFromHash() === null ? "copy" : "none";
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (ev) => {
    dragDepth = 0;
    document.body.classList.remove("dragging");
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    if (!state.user || chatFromHash() !== null) return;
    // dataTransfer.files lines up with the items of kind "file"; a dropped
    // folder is one of them too, but cannot be read as a file.
    const items = Array.from(ev.dataTransfer.items || []).filter((it) => it.kind === "file");
    const isFolder = (it) => {
      const entry = it && it.webkitGetAsEntry && it.webkitGetAsEntry();
      return Boolean(entry && entry.isDirectory);
    };
    const folders = items.filter(isFolder).length;
    const files = Array.from(ev.dataTransfer.files || []).filter((_, i) => !isFolder(items[i]));
    if (folders) {
      showStatus("Folders cannot be dropped; drop the files inside them instead.", "error");
    }
    startUploads(files);
  });

  // Leaving the page while bytes are in flight loses nothing (uploads resume),
  // but warn anyway.
  window.addEventListener("beforeunload", (ev) => {
    if (uploadsRunning > 0) {
      ev.preventDefault();
      ev.returnValue = "";
    }
  });

  checkSession();
})();
