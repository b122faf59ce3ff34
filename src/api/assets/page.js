// healthsweep status page. Plain DOM, no libraries, nothing fetched but this daemon's JSON.
// Every value from a service (names, errors) goes in as text, never as HTML.
"use strict";
(function () {
  const app = document.getElementById("app");
  const meta = document.getElementById("meta");
  const bannerEl = document.getElementById("banner");
  const page = document.body.dataset.page;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k) e.append(k);
    return e;
  }

  function duration(secs) {
    secs = Math.max(0, Math.round(secs));
    if (secs < 60) return secs + "s";
    const m = Math.floor(secs / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (d > 0) return d + "d " + (h % 24) + "h";
    if (h > 0) return h + "h " + (m % 60) + "m";
    return m + "m " + (secs % 60) + "s";
  }
  // An interval: under a second in ms (sweeps may run every 250 ms), 1.5 s not rounded to 2.
  function period(secs) {
    if (secs < 1) return Math.round(secs * 1000) + " ms";
    return secs < 60 && !Number.isInteger(secs) ? +secs.toFixed(3) + "s" : duration(secs);
  }
  // The daemon's clock minus the browser's: relative times are on the daemon's clock.
  let skew = 0;
  function ago(iso) { return duration((Date.now() + skew - Date.parse(iso)) / 1000); }
  function exact(iso) { return new Date(iso).toLocaleString() + " (" + iso + ")"; }
  function when(iso, suffix) {
    return el("span", { title: exact(iso), text: ago(iso) + (suffix || "") });
  }
  function pct(u) {
    if (u === null || u === undefined) return "–";
    const p = u * 100;
    return (p === 100 ? "100" : p >= 99.9 ? p.toFixed(3) : p.toFixed(2)) + "%";
  }
  function latency(s) {
    if (s === null || s === undefined) return "–";
    return s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(2) + " s";
  }
  function stateBadge(state) { return el("span", { class: "state " + state, text: state }); }
  function strip(results) {
    const s = el("span", { class: "strip", role: "img",
      "aria-label": "last " + results.length + " results: " +
        results.filter((r) => r !== "down").length + " passed" });
    for (const r of results) s.append(el("i", { class: r, title: r }));
    return s;
  }

  // Stale data, said plainly: the daemon does not answer, or it answers but stopped sweeping.
  let failingSince = null;
  function banner(text) {
    bannerEl.textContent = text || "";
    bannerEl.classList.toggle("show", !!text);
  }
  function fresh(data) {
    failingSince = null;
    if (data.now && data.received) skew = Date.parse(data.now) - data.received;
    const s = data.sweep;
    if (!s) { banner(""); return; }
    const limit = (2 * data.interval_seconds + data.deadline_seconds + 5) * 1000;
    // On the daemon's clock (the browser's may be off), plus the time since it answered.
    const age = Date.parse(data.now) - Date.parse(s.finished_at) + (Date.now() - data.received);
    banner(age > limit ? "Sweeps have stopped: the latest finished " + duration(age / 1000) +
      " ago (" + s.finished_at + "). What is shown may no longer be true." : "");
    meta.textContent = "sweep " + s.number + " finished " + ago(s.finished_at) + " ago · every " +
      period(data.interval_seconds) + " · generation " + data.generation;
    meta.title = exact(s.finished_at);
  }
  function unreachable(why) {
    if (failingSince === null) failingSince = Date.now();
    banner("The daemon is not answering (" + why + ") since " +
      new Date(failingSince).toLocaleTimeString() + "; showing what it said before.");
  }
  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }
  function every(data) {
    const i = data && data.interval_seconds ? data.interval_seconds : 5;
    return Math.min(10, Math.max(1, i / 3)) * 1000;
  }

  // ---- overview ----------------------------------------------------------------------------
  function overview() {
    const params = new URLSearchParams(location.search);
    const filter = { state: params.get("state") || "", group: params.get("group") || "",
      q: params.get("q") || "", page: parseInt(params.get("page") || "0", 10) || 0 };
    const summary = el("div", { class: "summary", id: "summary" });
    const search = el("input", { type: "search", id: "filter-name", placeholder: "Filter by name…",
      "aria-label": "Filter by name", value: filter.q });
    const group = el("select", { id: "filter-group", "aria-label": "Group" },
      el("option", { value: "", text: "All groups" }));
    const stateSel = el("select", { id: "filter-state", "aria-label": "State" },
      ...["", "down", "degraded", "unknown", "up"].map((s) =>
        el("option", { value: s, text: s || "All states" })));
    stateSel.value = filter.state;
    const tbody = el("tbody", { id: "services" });
    const pager = el("div", { class: "pager" });
    const table = el("table", {},
      el("thead", {}, el("tr", {},
        el("th", { text: "Service" }), el("th", { text: "State" }), el("th", { text: "Since" }),
        el("th", { text: "Latest result" }), el("th", { class: "hide-narrow", text: "Latency" }),
        el("th", { class: "hide-narrow", text: "Last 60" }),
        el("th", { class: "hide-narrow", text: "24 h" }), el("th", { class: "hide-narrow", text: "7 d" }),
        el("th", { class: "hide-narrow", text: "30 d" }))),
      tbody);
    app.replaceChildren(summary, el("div", { class: "filters" }, search, group, stateSel), table, pager,
      el("p", { class: "why", text: "Uptime is the share of the time known (checked, not in a maintenance window) the service was up." }));

    let data = null, timer = null, seq = 0;
    function url() {
      const p = new URLSearchParams();
      for (const k of ["state", "group", "q"]) if (filter[k]) p.set(k, filter[k]);
      if (filter.page) p.set("page", String(filter.page));
      return p;
    }
    function changed() {
      const p = url().toString();
      history.replaceState(null, "", p ? "?" + p : location.pathname);
      load();
    }
    let debounce = null;
    search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { filter.q = search.value.trim(); filter.page = 0; changed(); }, 120);
    });
    group.addEventListener("change", () => { filter.group = group.value; filter.page = 0; changed(); });
    stateSel.addEventListener("change", () => { filter.state = stateSel.value; filter.page = 0; changed(); });

    function render() {
      fresh(data);
      const s = data.summary;
      summary.replaceChildren(...["down", "degraded", "unknown", "up"].map((st) => {
        const a = el("a", { href: "?state=" + st, class: filter.state === st ? "active" : null },
          stateBadge(st), " " + s[st]);
        a.addEventListener("click", (e) => {
          e.preventDefault();
          filter.state = filter.state === st ? "" : st; stateSel.value = filter.state;
          filter.page = 0; changed();
        });
        return a;
      }), el("span", { text: s.total + " services" }));
      const have = new Set([...group.options].map((o) => o.value));
      for (const g of data.groups) if (!have.has(g)) group.append(el("option", { value: g, text: g }));
      group.value = filter.group;
      const rows = data.services.map((v) => el("tr", { "data-name": v.name, "data-state": v.state },
        el("td", {}, el("a", { href: "/service/" + encodeURIComponent(v.name), text: v.name }),
          v.group ? el("div", { class: "group", text: v.group }) : null),
        el("td", {}, stateBadge(v.state),
          v.blocked_by.length ? el("div", { class: "why", text: "blocked by " + v.blocked_by.join(", ") }) : null,
          v.maintenance_until ? el("div", { class: "why", title: exact(v.maintenance_until),
            text: "in maintenance, " + duration((Date.parse(v.maintenance_until) - Date.now() - skew) / 1000) + " left" }) : null),
        el("td", { class: "num" }, when(v.since)),
        el("td", { class: "why" }, v.reason ? el("strong", { text: v.reason }) : (v.checked ? "ok" : "–"),
          v.error ? el("div", { text: v.error }) : null),
        el("td", { class: "num hide-narrow", text: latency(v.latency_seconds) }),
        el("td", { class: "hide-narrow" }, strip(v.recent)),
        ...v.uptime.map((u) => el("td", { class: "num hide-narrow", text: pct(u) }))));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "9", class: "empty",
        text: "No service matches." })));
      tbody.replaceChildren(...rows);
      const pages = Math.max(1, Math.ceil(data.matching / data.per_page));
      const prev = el("button", { type: "button", disabled: filter.page <= 0 ? "" : null, text: "‹ Previous" });
      const next = el("button", { type: "button", disabled: filter.page + 1 >= pages ? "" : null, text: "Next ›" });
      prev.addEventListener("click", () => { filter.page--; changed(); });
      next.addEventListener("click", () => { filter.page++; changed(); });
      pager.replaceChildren(prev, next, el("span", { text: data.matching + " shown of " + s.total +
        " · page " + (filter.page + 1) + " of " + pages }));
    }
    async function load() {
      clearTimeout(timer);
      const mine = ++seq;
      try {
        const d = await getJSON("/ui/overview?" + url().toString());
        d.received = Date.now();
        if (mine !== seq) return;
        data = d; render();
      } catch (e) {
        if (mine !== seq) return;
        unreachable(e.message);
      }
      timer = setTimeout(load, every(data));
    }
    load();
  }

  // ---- one service -------------------------------------------------------------------------
  function servicePage() {
    let name = location.pathname.slice("/service/".length);
    try { name = decodeURIComponent(name); } catch (e) { /* shown as it is */ }
    document.title = name + " · healthsweep";
    let data = null;
    function chart(history) {
      // Drawn at the width it is shown at, so text and line are not stretched.
      const W = Math.max(300, Math.round(app.clientWidth) || 600), H = 140, P = 22;
      const s = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img",
        "aria-label": "latency of the last " + history.length + " results" });
      if (!history.length) { s.append(svg("text", { x: P, y: H / 2, text: "no results yet" })); return s; }
      const max = Math.max(0.001, ...history.map((r) => r.duration_seconds));
      const x = (i) => P + (history.length === 1 ? 0 : i * (W - 2 * P) / (history.length - 1));
      const y = (v) => H - P - v / max * (H - 2 * P);
      s.append(svg("text", { x: 2, y: P - 6, text: latency(max) }), svg("text", { x: 2, y: H - 6, text: "0" }));
      s.append(svg("polyline", { class: "line",
        points: history.map((r, i) => x(i) + "," + y(r.duration_seconds)).join(" ") }));
      history.forEach((r, i) => {
        if (r.state === "down") s.append(svg("circle", { class: "fail", cx: x(i), cy: H - P, r: 3 },
          svg("title", { text: r.at + ": " + (r.reason || "down") })));
      });
      return s;
    }
    function days(list) {
      const d = el("div", { class: "days", role: "img", "aria-label": "uptime per day, 30 days" });
      for (const day of list) {
        const u = day.uptime;
        const cls = u === null ? "" : u >= 0.9999 ? "full" : u >= 0.99 ? "part" : "bad";
        d.append(el("i", { class: cls, title: day.day + ": " + pct(u) }));
      }
      return d;
    }
    // A service checked every 5 minutes looks stale beside one checked every 15 s unless the
    // page says when its turn comes.
    function nextCheck(v) {
      if (!v.next_check_at) return null;
      const left = (Date.parse(v.next_check_at) - Date.now() - skew) / 1000;
      return el("div", { class: "why", id: "next-check", title: exact(v.next_check_at),
        text: (left > 0.5 ? "next in " + duration(left) : "next now") + " · every " +
          period(v.interval_seconds) });
    }
    function render() {
      fresh(data.daemon);
      const v = data.service, last = v.last;
      const events = v.events.length ? el("table", {},
        el("thead", {}, el("tr", {}, el("th", { text: "When" }), el("th", { text: "Change" }),
          el("th", { text: "Reason" }), el("th", { text: "Lasted" }))),
        el("tbody", {}, ...v.events.map((e) => el("tr", {},
          el("td", { class: "num" }, when(e.at, " ago")),
          el("td", {}, stateBadge(e.from), " → ", stateBadge(e.to)),
          el("td", { class: "why" }, e.reason ? el("strong", { text: e.reason }) : "",
            e.error ? el("div", { text: e.error }) : null),
          el("td", { class: "num", text: duration(e.lasted_seconds) + (e.current ? " so far" : "") })))))
        : el("p", { class: "empty", text: "No state changes recorded yet." });
      const config = el("dl", { class: "config" });
      for (const [k, val] of Object.entries(v.config)) {
        if (val === null || (Array.isArray(val) && !val.length)) continue;
        config.append(el("dt", { text: k }), el("dd", { text: Array.isArray(val) ? val.join(", ") : String(val) }));
      }
      app.replaceChildren(
        el("section", {}, el("h2", { text: v.name + (v.group ? " · " + v.group : "") }),
          el("div", { class: "cards" },
            el("div", { class: "card", id: "current" }, el("h2", { text: "State" }), stateBadge(v.state),
              el("div", {}, "since ", when(v.since, " ago")),
              v.blocked_by.length ? el("div", { class: "why", text: "blocked by " + v.blocked_by.join(", ") }) : null,
              v.maintenance ? el("div", { class: "why", text: "in maintenance (" + v.maintenance.name + ") until " +
                new Date(v.maintenance.ends_at).toLocaleString() }) : null),
            el("div", { class: "card" }, el("h2", { text: "Latest check" }),
              last ? el("div", { class: "big", text: last.ok ? "passed" : (last.reason || "failed") }) : el("div", { text: "not checked yet" }),
              last ? el("div", { class: "why" }, latency(last.duration_seconds) + " · ", when(last.at, " ago"),
                last.error ? el("div", { text: last.error }) : null) : null,
              nextCheck(v)),
            el("div", { class: "card", title: "Maintenance time is left out of uptime." }, el("h2", { text: "Uptime 24 h · 7 d · 30 d (maintenance left out)" }),
              el("div", { class: "big", text: [v.uptime["24h"], v.uptime["7d"], v.uptime["30d"]].map(pct).join(" · ") })))),
        el("section", {}, el("h2", { text: "Last " + v.history.length + " results" }),
          strip(v.history.map((r) => r.state))),
        el("section", {}, el("h2", { text: "Latency" }), chart(v.history)),
        el("section", {}, el("h2", { text: "Uptime per day (UTC), last 30 days" }), days(v.daily_uptime)),
        el("section", { id: "events" }, el("h2", { text: "Events" }), events),
        el("section", {}, el("h2", { text: "Config as checked (secrets left out)" }), config));
    }
    let timer = null;
    async function load() {
      clearTimeout(timer);
      try {
        const [service, daemon] = await Promise.all([
          getJSON("/status/" + encodeURIComponent(name)),
          getJSON("/ui/overview?per_page=1"),
        ]);
        daemon.received = Date.now();
        data = { service, daemon }; render();
      } catch (e) {
        if (e.message === "HTTP 404") {
          app.replaceChildren(el("p", { class: "empty", text: "No service named " + JSON.stringify(name) + "." }));
        } else unreachable(e.message);
      }
      timer = setTimeout(load, every(data && data.daemon));
    }
    load();
  }

  if (page === "service") servicePage(); else overview();
})();
