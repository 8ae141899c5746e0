// Communalia's live page. Reads /api/state (live over server-sent events on /api/events, with
// polling as a fallback), /api/plan, /api/assembly and, where the site keeps a ledger,
// /api/ledger/balances, and builds the page with plain DOM calls: no library, no CDN, text only
// through textContent.
"use strict";
(function () {
  var STALE_AFTER_S = 30, POLL_MS = 5000, PLAN_MS = 60000, ASSEMBLY_MS = 300000, COMMUNS_MS = 15000;
  var SVG = "http://www.w3.org/2000/svg";
  var STATUS = {
    surplus: ["Plenty", "\u2600", "There is enough energy for everything that asks, and some to spare. A good time for laundry, pumping and charging."],
    tight: ["Tight", "\u25D0", "Every tier is served, but with little to spare. Please wait before starting big flexible loads."],
    scarcity: ["Scarce", "\u26A0", "Not everything can run. Energy goes to the tiers in the order the assembly voted; each load that is off says why below."]
  };
  var state = null, plan = null, assembly = null;
  // The site's offset from UTC in minutes (from the state): every time shown is site time,
  // whatever the clock of the phone or laptop showing the page. The API speaks UTC.
  var siteOffset = null;
  var lastReceived = 0, skewMs = 0, reachable = true, source = null, shownErrors = null;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text, kids) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    (kids || []).forEach(function (k) { if (k) e.appendChild(k); });
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text != null) e.textContent = text;
    return e;
  }
  function setText(id, s) { $(id).textContent = s; }
  function known(x) { return typeof x === "number" && isFinite(x); }
  function watts(w) {
    if (!known(w)) return "unknown";
    var a = Math.abs(w);
    if (a >= 1000) return (w / 1000).toFixed(a >= 10000 ? 0 : 1) + "\u00A0kW";
    return Math.round(w) + "\u00A0W";
  }
  function pct(p) { return Math.round(p) + "\u00A0%"; }
  function title(name) { var s = String(name).replace(/_/g, " "); return s.charAt(0).toUpperCase() + s.slice(1); }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return "?";
    if (siteOffset === null) return two(d.getHours()) + ":" + two(d.getMinutes());
    var t = new Date(d.getTime() + siteOffset * 60000);
    return two(t.getUTCHours()) + ":" + two(t.getUTCMinutes());
  }
  function zone() {
    if (siteOffset === null) return "";
    var a = Math.abs(siteOffset);
    return "UTC" + (siteOffset < 0 ? "\u2212" : "+") + two(Math.floor(a / 60)) + ":" + two(a % 60);
  }
  function ago(s) {
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function guard(what, f) {
    try { f(); } catch (e) { if (window.console) console.error(what, e); }
  }

  // ---- state ----
  function renderStatus(s) {
    var st = STATUS[s.grid_state] || ["Unknown", "?", "The controller reports a state this page does not know."];
    $("status").className = "status " + (STATUS[s.grid_state] ? s.grid_state : "unknown");
    $("status-word").querySelector(".symbol").textContent = st[1];
    setText("status-text", st[0]);
    // The controller's own sentence says why, in numbers, from the same decisions as the loads.
    setText("status-sentence", s.status || st[2]);
    $("dry-run").hidden = !s.dry_run;
    if (s.site && s.site.name) {
      setText("site-name", s.site.name);
      document.title = st[0] + " \u2014 " + s.site.name;
    }
  }

  function renderFigures(s) {
    setText("pv", watts(s.pv_watts));
    var b = s.battery, dd = $("battery");
    dd.textContent = b && known(b.soc_percent) ? pct(b.soc_percent) : (b ? "unknown" : "none");
    if (b && known(b.watts)) {
      var how = b.watts < -5 ? "charging " + watts(-b.watts) : b.watts > 5 ? "giving " + watts(b.watts) : "resting";
      dd.appendChild(el("small", null, how));
    }
    setText("consumption", watts(s.consumption_watts));
    setText("available", watts(s.available_watts));
  }

  function renderLoad(l) {
    var li = el("li", "load", null, [
      el("div", "load-head", null, [
        el("span", "badge " + (l.on ? "on" : "off"), l.on ? "ON" : "OFF"),
        el("span", "load-name", l.name || l.id)
      ]),
      el("p", "watts", "gets " + watts(l.allocated_watts) + " \u00B7 uses " + watts(l.measured_watts)),
      el("p", "reason", l.reason)
    ]);
    li.id = "load-" + l.id;
    li.setAttribute("data-load-id", l.id);
    li.setAttribute("data-on", l.on ? "true" : "false");
    if (l.fault) li.appendChild(el("p", "fault", "\u26A0 Fault: " + l.fault));
    return li;
  }

  function renderTiers(s) {
    var list = $("tiers"), tiers = (s.tiers || []).slice().sort(function (a, b) { return a.rank - b.rank; });
    var placed = {};
    list.textContent = "";
    function add(name, rank, head, loads) {
      var ul = el("ul");
      loads.forEach(function (l) { placed[l.id] = true; ul.appendChild(renderLoad(l)); });
      list.appendChild(el("li", "tier", null, [
        el("div", "tier-head", null, [el("h3", null, rank + ". " + title(name)), head ? el("span", null, head) : null]),
        ul
      ]));
    }
    tiers.forEach(function (t) {
      var loads = (s.loads || []).filter(function (l) { return l.tier === t.name; });
      add(t.name, t.rank, "served " + watts(t.served_watts) + " of " + watts(t.demanded_watts) + " asked", loads);
    });
    var rest = (s.loads || []).filter(function (l) { return !placed[l.id]; });
    if (rest.length) add("other loads", tiers.length + 1, null, rest);
    if (!list.children.length) list.appendChild(el("li", null, "No loads are configured."));
  }

  function renderDevices(s) {
    var ul = $("devices");
    ul.textContent = "";
    (s.devices || []).forEach(function (d) {
      var li = el("li", null, null, [
        el("span", d.online ? "online" : "offline", d.online ? "\u25CF online" : "\u25CB OFFLINE"),
        el("span", null, (d.name || d.id) + (d.online || !d.last_seen ? "" : " \u2014 last heard at " + clock(d.last_seen)) +
          (!d.online && !d.last_seen ? " \u2014 never heard" : ""))
      ]);
      li.setAttribute("data-device-id", d.id);
      ul.appendChild(li);
    });
    if (!ul.children.length) ul.appendChild(el("li", null, "No devices are configured."));
  }

  function renderAssemblyErrors() {
    var errs = (state && state.assembly_errors && state.assembly_errors.length ? state.assembly_errors : null) ||
      (assembly && assembly.rejected_errors) || [];
    var ul = $("assembly-error-list");
    ul.textContent = "";
    errs.forEach(function (e) { ul.appendChild(el("li", null, e)); });
    $("assembly-errors").hidden = errs.length === 0;
  }

  function onState(s) {
    // A poll answered late must not undo a newer event; a big jump back is a clock reset, kept.
    if (state) {
      var back = Date.parse(state.time) - Date.parse(s.time);
      if (back > 0 && back < 60000) return;
    }
    state = s;
    lastReceived = Date.now();
    var offset = s.site && known(s.site.utc_offset_minutes) ? s.site.utc_offset_minutes : null;
    if (offset !== siteOffset) {
      siteOffset = offset;
      if (plan) guard("plan", drawPlan);
    }
    guard("status", function () { renderStatus(s); });
    guard("figures", function () { renderFigures(s); });
    guard("tiers", function () { renderTiers(s); });
    guard("devices", function () { renderDevices(s); });
    var errs = JSON.stringify(s.assembly_errors || []);
    if (shownErrors !== null && errs !== shownErrors) loadAssembly();
    shownErrors = errs;
    guard("assembly errors", renderAssemblyErrors);
    tick();
  }

  // ---- freshness ----
  function tick() {
    if (!state) {
      setText("freshness", reachable ? "Waiting for the controller\u2026" : "Cannot reach the controller.");
      return;
    }
    var age = Math.max(0, (Date.now() + skewMs - Date.parse(state.time)) / 1000);
    var how = source && source.readyState === 1 ? "live" : "checking every " + POLL_MS / 1000 + " s";
    setText("freshness", (isNaN(age) ? "Last update time unknown" : "Last update " + ago(age) + " ago") + " \u00B7 " + how);
    // The warning is an alert: its text changes only when the situation does, not every second.
    var warn = $("stale"), says = (reachable ? "" : "Cannot reach the controller. ") +
      "No fresh values for more than " + STALE_AFTER_S + " s: the controller may have stopped. " +
      "What you see may be out of date.";
    if (isNaN(age) || age > STALE_AFTER_S || !reachable) {
      if (warn.textContent !== says) warn.textContent = says;
      warn.hidden = false;
    } else {
      warn.hidden = true;
    }
  }

  // ---- network ----
  function getJson(url) {
    return fetch(url, { cache: "no-store" }).then(function (r) {
      var date = Date.parse(r.headers.get("Date"));
      if (!isNaN(date)) { var skew = date - Date.now(); skewMs = Math.abs(skew) > 5000 ? skew : 0; }
      if (!r.ok) throw new Error(url + " answered " + r.status);
      return r.json();
    });
  }
  function pollState() {
    getJson("/api/state").then(function (s) { reachable = true; onState(s); })
      .catch(function () { reachable = false; tick(); });
  }
  function listen() {
    if (!window.EventSource) return;
    source = new EventSource("/api/events");
    source.addEventListener("state", function (e) {
      reachable = true;
      guard("event", function () { onState(JSON.parse(e.data)); });
    });
  }
  function loadPlan() {
    getJson("/api/plan").then(function (p) { plan = p; guard("plan", drawPlan); })
      .catch(function () { setText("plan-summary", "The plan is not available right now."); });
  }
  function loadAssembly() {
    getJson("/api/assembly").then(function (a) {
      assembly = a;
      guard("decision", renderDecision);
      guard("assembly errors", renderAssemblyErrors);
      if (plan) guard("plan", drawPlan);
    }).catch(function () { /* the decision keeps its last value */ });
  }

  // ---- the assembly's decision ----
  function renderDecision() {
    var d = assembly.decision, box = $("decision"), dl = el("dl");
    function row(k, v) { if (v != null && v !== "") { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, v)); } }
    row("Voted on", d.date);
    row("Minutes", d.reference);
    row("Summary", d.summary);
    row("Votes", d.votes_for + " for, " + d.votes_against + " against, " + d.abstentions + " abstaining");
    row("Present", d.present + " (quorum " + d.quorum + ")" + (d.present >= d.quorum ? "" : " \u2014 below quorum"));
    var r = assembly.health_reserve;
    if (r) row("Kept for " + r.tier, "battery reserve of at least " + watts(r.min_wh).replace("W", "Wh") + ", plus " + pct(r.margin_percent));
    box.textContent = "";
    box.appendChild(dl);
  }

  // ---- the plan chart ----
  function rankOf() {
    var m = {};
    ((assembly && assembly.tiers) || []).forEach(function (t) { t.loads.forEach(function (id) { m[id] = t.rank; }); });
    ((state && state.loads) || []).forEach(function (l) { m[l.id] = l.rank; });
    return m;
  }
  function tierName(rank) {
    var t = ((assembly && assembly.tiers) || []).filter(function (t) { return t.rank === rank; })[0] ||
      ((state && state.tiers) || []).filter(function (t) { return t.rank === rank; })[0];
    return t ? title(t.name) : "Tier " + rank;
  }

  function drawPlan() {
    var box = $("plan-chart"), steps = (plan && plan.steps) || [];
    box.textContent = "";
    if (!steps.length) { setText("plan-summary", "No plan yet."); return; }
    var W = 420, H = 230, L = 44, R = 42, T = 10, B = 22, n = steps.length;
    var ranks = rankOf(), used = {}, maxW = 100, energyWh = 0, hours = (plan.step_minutes || 15) / 60;
    var stacks = steps.map(function (s) {
      var by = {}, total = 0;
      Object.keys(s.loads || {}).forEach(function (id) {
        var r = Math.min(ranks[id] || 6, 6), w = s.loads[id];
        if (!known(w) || w <= 0) return;
        by[r] = (by[r] || 0) + w; total += w; used[r] = true;
      });
      energyWh += total * hours;
      maxW = Math.max(maxW, total, known(s.pv_watts) ? s.pv_watts : 0);
      return by;
    });
    var unit = maxW > 5000 ? 1000 : maxW > 1000 ? 500 : 100;
    maxW = Math.ceil(maxW / unit) * unit;
    var bw = (W - L - R) / n;
    function x(i) { return L + i * bw; }
    function yW(w) { return T + (1 - w / maxW) * (H - T - B); }
    function yS(p) { return T + (1 - p / 100) * (H - T - B); }
    var g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": "plan-svg-title" });
    g.appendChild(svg("title", { id: "plan-svg-title" }, "Planned power per tier, solar forecast and battery charge for the coming hours"));
    [0, 0.5, 1].forEach(function (f) {
      var y = yW(maxW * f);
      g.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, "class": "grid" }));
      g.appendChild(svg("text", { x: L - 4, y: y + 4, "text-anchor": "end" }, watts(maxW * f)));
      g.appendChild(svg("text", { x: W - R + 4, y: y + 4 }, pct(100 * f)));
    });
    var every = Math.max(1, Math.round(n / 4));
    stacks.forEach(function (by, i) {
      var base = 0;
      Object.keys(by).map(Number).sort(function (a, b) { return a - b; }).forEach(function (r) {
        var top = base + by[r];
        g.appendChild(svg("rect", { x: x(i) + 0.5, width: Math.max(bw - 1, 0.5), y: yW(top), height: Math.max(yW(base) - yW(top), 0), "class": "t" + r }));
        base = top;
      });
      if (i % every === 0) g.appendChild(svg("text", { x: x(i), y: H - 6 }, clock(steps[i].start)));
    });
    function line(cls, value, y) {
      var d = "", pen = "M";
      steps.forEach(function (s, i) {
        var v = value(s);
        if (!known(v)) { pen = "M"; return; }
        d += pen + (x(i) + bw / 2).toFixed(1) + " " + y(v).toFixed(1) + " ";
        pen = "L";
      });
      if (d) g.appendChild(svg("path", { d: d, "class": cls }));
    }
    line("pv", function (s) { return s.pv_watts; }, yW);
    line("soc", function (s) { return s.soc_percent; }, yS);
    box.appendChild(g);

    var legend = el("p", "legend");
    Object.keys(used).map(Number).sort(function (a, b) { return a - b; }).forEach(function (r) {
      legend.appendChild(el("span", null, null, [el("i", "t" + r), document.createTextNode(tierName(r))]));
    });
    legend.appendChild(el("span", null, null, [el("i", "l-pv"), document.createTextNode("Solar forecast (left scale)")]));
    legend.appendChild(el("span", null, null, [el("i", "l-soc"), document.createTextNode("Battery charge (right scale)")]));
    box.appendChild(legend);

    var soc = steps.filter(function (s) { return known(s.soc_percent); });
    var words = [];
    if (soc.length) {
      var lo = soc.reduce(function (a, b) { return b.soc_percent < a.soc_percent ? b : a; });
      words.push("The battery is planned to go no lower than " + pct(lo.soc_percent) + " (at " + clock(lo.start) + ").");
    }
    var peak = steps.reduce(function (a, b) { return (b.pv_watts || 0) > (a.pv_watts || 0) ? b : a; });
    if (known(peak.pv_watts) && peak.pv_watts > 0) words.push("Solar peaks at " + watts(peak.pv_watts) + " around " + clock(peak.start) + ".");
    words.push("Planned use: " + (energyWh / 1000).toFixed(1) + " kWh from " + clock(steps[0].start) + " over " + Math.round(n * hours) + " h.");
    if (siteOffset !== null) words.push("Times are site time (" + zone() + ").");
    setText("plan-summary", words.join(" "));
  }

  // ---- the Communs ledger (only where the site keeps one) ----
  function communs(s) { return String(s).replace(/\.?0+$/, "") + "\u00A0C"; }
  function renderCommuns(b) {
    var accounts = (b.accounts || []).filter(function (a) { return a.active; })
      .sort(function (x, y) { return String(x.name).localeCompare(String(y.name)); });
    setText("communs-sentence", "Balances on " + b.as_of + ". The common pool holds " + communs(b.pool) +
      ". Communs are earned by shifting use into sunny hours and by work others attest; they lose a little value when held, and cannot be bought or sold.");
    var ul = $("communs-accounts");
    ul.textContent = "";
    var pending = b.pending_credits || [];
    accounts.forEach(function (a) {
      var parts = [el("span", "who", title(a.name)), el("span", "balance", communs(a.balance))];
      // Meter credits earned but still open to contest: they post on the day shown.
      var mine = pending.filter(function (p) { return p.member === a.member; });
      if (mine.length) {
        var sum = mine.reduce(function (t, p) { return t + p.amount_millis; }, 0);
        var last = mine.reduce(function (d, p) { return p.matures > d ? p.matures : d; }, "");
        parts.push(el("span", "pending", "+" + communs((sum / 1000).toFixed(3)) + " earned, posts on " + last + " unless contested"));
      }
      var li = el("li", null, null, parts);
      li.setAttribute("data-member", a.name);
      ul.appendChild(li);
    });
    if (!accounts.length) ul.appendChild(el("li", null, "No members yet."));
    var claims = $("communs-claims");
    claims.textContent = "";
    (b.open_claims || []).forEach(function (c) {
      claims.appendChild(el("li", null, title(c.name) + ": " + (c.description || "work") + " (" + communs(c.amount) +
        ") waits for attestations, " + c.attestations + " of " + c.needed + ", until " + c.expires));
    });
    $("communs").hidden = false;
  }
  function loadCommuns() {
    getJson("/api/ledger/balances").then(function (b) { guard("communs", function () { renderCommuns(b); }); })
      .catch(function () { /* no ledger on this site, or not reachable now: the section stays as it was */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    pollState();
    listen();
    loadPlan();
    loadAssembly();
    setInterval(tick, 1000);
    setInterval(function () {
      if (!source || source.readyState !== 1 || Date.now() - lastReceived > 2 * POLL_MS) pollState();
    }, POLL_MS);
    setInterval(loadPlan, PLAN_MS);
    setInterval(loadAssembly, ASSEMBLY_MS);
    loadCommuns();
    setInterval(loadCommuns, COMMUNS_MS);
  });
})();
