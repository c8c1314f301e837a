// The live statistics page: polls GET /api/stats every two seconds (the
// session cookie authenticates it) and redraws the cards. Everything is
// built with DOM calls and textContent, never from HTML strings, and no
// script is inline (the app's Content-Security-Policy forbids it).
"use strict";

(() => {
  const EVERY_MS = 2000;
  const $ = (id) => document.getElementById(id);

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = n, u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u += 1; }
    return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
  }

  function duration(secs) {
    const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24;
    const m = Math.floor(secs / 60) % 60, s = secs % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // A card: a title and a table of [label, value] rows; a value that is a
  // number between 0 and 1 in an object {ratio, text} gets a meter.
  function card(title, rows) {
    const c = el("section", undefined, "stats-card");
    c.append(el("h2", title));
    const table = el("table");
    for (const [label, value] of rows) {
      const tr = el("tr");
      tr.append(el("th", label));
      const td = el("td");
      if (value && typeof value === "object") {
        tr.className = "stats-bar";
        const meter = el("meter");
        meter.min = 0; meter.max = 1; meter.low = 0.7; meter.high = 0.9; meter.optimum = 0;
        meter.value = Math.min(1, Math.max(0, value.ratio));
        meter.title = value.text;
        td.append(meter, el("div", value.text));
      } else {
        td.textContent = String(value);
      }
      tr.append(td);
      table.append(tr);
    }
    c.append(table);
    return c;
  }

  const part = (used, total) => ({
    ratio: total ? used / total : 0,
    text: `${bytes(used)} of ${bytes(total)}`,
  });

  function render(s) {
    const cards = [];
    const h = s.host;
    cards.push(card("Host", [
      ["name", h.name], ["system", h.os], ["kernel", h.kernel], ["arch", h.arch],
      ["up", duration(h.uptime_secs)],
      ["load", h.load.map((l) => l.toFixed(2)).join("  ")],
    ]));
    cards.push(card("CPU", [
      ["all cores", { ratio: s.cpu.usage / 100, text: `${s.cpu.usage.toFixed(1)}%` }],
      ...s.cpu.cores.map((u, i) => [`core ${i}`, { ratio: u / 100, text: `${u.toFixed(0)}%` }]),
    ]));
    const m = s.memory;
    cards.push(card("Memory", [
      ["memory", part(m.used, m.total)],
      ["swap", part(m.swap_used, m.swap_total)],
    ]));
    cards.push(card("Disks", s.disks.map((d) => [
      // As df's Use%: in use out of what users can have (reserved blocks left out).
      `${d.mount} (${d.fs})`, { ratio: d.used + d.free ? d.used / (d.used + d.free) : 0,
        text: `${bytes(d.used)} used, ${bytes(d.free)} free of ${bytes(d.total)}` },
    ])));
    cards.push(card("Network", s.networks.map((n) => [
      n.name, `in ${bytes(n.bytes_in)} (${bytes(Math.round(n.rate_in))}/s), ` +
        `out ${bytes(n.bytes_out)} (${bytes(Math.round(n.rate_out))}/s)`,
    ])));
    const v = s.server;
    cards.push(card("sockit", [
      ["version", v.version], ["up", duration(v.uptime_secs)], ["memory (RSS)", bytes(v.rss)],
      ["bytes in / out", `${bytes(v.bytes_in)} / ${bytes(v.bytes_out)}`],
      ...v.services.map((x) => [x.name,
        `${x.open} open, ${x.accepted} accepted, ${bytes(x.bytes_in)} in, ${bytes(x.bytes_out)} out`]),
    ]));
    $("stats-grid").replaceChildren(...cards);
    $("stats-when").textContent = `Sampled ${new Date(s.time * 1000).toLocaleTimeString()}; refreshed every ${EVERY_MS / 1000} s.`;
    $("status").textContent = "";
  }

  let timer = null;
  let busy = false;
  async function poll() {
    if (busy) return;
    busy = true;
    timer = null;
    try {
      const r = await fetch("/api/stats", { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) {
        $("stats-when").textContent = "";
        const p = el("p", "Log in to see the statistics: ");
        const a = el("a", "open the app");
        a.href = "./";
        p.append(a);
        $("stats-grid").replaceChildren(p);
        return; // no point polling until the user logs in
      }
      const body = await r.json();
      if (!r.ok) {
        $("status").textContent = body.message || `HTTP ${r.status}`;
        if (r.status === 403 || r.status === 404) return;
      } else {
        render(body);
      }
    } catch (e) {
      $("status").textContent = `Cannot reach the server (${e.message}); retrying.`;
    } finally {
      busy = false;
    }
    if (!document.hidden && timer === null) timer = setTimeout(poll, EVERY_MS);
  }

  // Poll only while the page is visible.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) poll();
  });
  poll();
})();
