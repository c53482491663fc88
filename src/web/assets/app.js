// Herald dashboard: progressive enhancement only. Every page works without this file;
// it adds live campaign progress (server-sent events), the template preview while typing,
// and confirmation dialogs in place of the confirmation pages. No inline script anywhere:
// the Content-Security-Policy forbids it.
"use strict";

(function () {
  document.documentElement.classList.add("js");

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function csrfToken() {
    var m = $('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  function fmt(n) {
    n = Number(n) || 0;
    return n.toLocaleString("en-US");
  }
  function label(s) {
    s = String(s || "").replace(/_/g, " ");
    return s.charAt(0).toUpperCase() + s.slice(1);
  }
  function when(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return iso; }
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  // ---------------------------------------------------------------------------------
  // Confirmation dialogs
  // ---------------------------------------------------------------------------------

  function openDialog(dialog) {
    if (!dialog || typeof dialog.showModal !== "function") { return false; }
    dialog.showModal();
    // Focus the safe choice ("Go back"): a stray Enter must not start, cancel or revoke.
    var safe = $("[data-close]", dialog) || $("input:not([type=hidden]), button", dialog);
    if (safe) { safe.focus(); }
    return true;
  }

  // A form that came back with errors: focus its summary, so that a screen reader reads it
  // and Tab goes on to the fields (the summary has tabindex="-1").
  var errorSummary = $("[data-error-summary]");
  if (errorSummary) {
    var closed = errorSummary.closest ? errorSummary.closest("details:not([open])") : null;
    if (closed) { closed.open = true; }
    errorSummary.focus();
  }

  document.addEventListener("click", function (ev) {
    var opener = ev.target.closest ? ev.target.closest("[data-dialog]") : null;
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog"));
      if (openDialog(dialog)) { ev.preventDefault(); }
      return;
    }
    var closer = ev.target.closest ? ev.target.closest("[data-close]") : null;
    if (closer) {
      var d = closer.closest("dialog");
      if (d) { d.close(); }
    }
  });

  // Forms that ask before they act (revoke a key, remove a user).
  var confirmDialog = null;
  function askFirst(form) {
    if (!confirmDialog) {
      confirmDialog = document.createElement("dialog");
      confirmDialog.setAttribute("aria-labelledby", "confirm-dialog-text");
      var p = document.createElement("p");
      p.id = "confirm-dialog-text";
      var actions = document.createElement("div");
      actions.className = "actions";
      var yes = document.createElement("button");
      yes.type = "button";
      yes.className = "danger";
      yes.textContent = "Yes, go ahead";
      yes.id = "confirm-dialog-yes";
      var no = document.createElement("button");
      no.type = "button";
      no.textContent = "Go back";
      no.setAttribute("data-close", "");
      actions.appendChild(yes);
      actions.appendChild(no);
      confirmDialog.appendChild(p);
      confirmDialog.appendChild(actions);
      document.body.appendChild(confirmDialog);
    }
    $("#confirm-dialog-text", confirmDialog).textContent = form.getAttribute("data-confirm");
    var yesButton = $("#confirm-dialog-yes", confirmDialog);
    yesButton.onclick = function () { confirmDialog.close(); form.submit(); };
    return openDialog(confirmDialog);
  }
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.hasAttribute && form.hasAttribute("data-confirm")) {
      if (askFirst(form)) { ev.preventDefault(); }
    }
  });

  // ---------------------------------------------------------------------------------
  // Channel form: show the settings of the chosen kind only
  // ---------------------------------------------------------------------------------

  var kindRadios = $all("[data-kind-switch]");
  function showKind() {
    var chosen = kindRadios.filter(function (r) { return r.checked; })[0];
    $all("fieldset.kind-settings").forEach(function (fs) {
      fs.hidden = !chosen || fs.getAttribute("data-kind") !== chosen.value;
    });
  }
  if (kindRadios.length) {
    kindRadios.forEach(function (r) { r.addEventListener("change", showKind); });
    showKind();
  }

  // ---------------------------------------------------------------------------------
  // Template preview while typing
  // ---------------------------------------------------------------------------------

  var panel = $("#preview-panel");
  if (panel) {
    var body = $("#body");
    var contact = $("#preview_contact");
    var channel = $("#channel_id");
    var list = $("#list_id");
    var out = $("#preview-output");
    var timer = null;
    var seq = 0;

    var showPreview = function (data) {
      out.textContent = "";
      var p = document.createElement("p");
      p.className = "rendered";
      p.textContent = data.rendered;
      out.appendChild(p);
      var meta = document.createElement("p");
      meta.className = "small muted";
      meta.id = "preview-meta";
      var text = fmt(data.characters) + " characters";
      if (data.segments) {
        text += " · " + data.segments + " SMS segment" + (data.segments === 1 ? "" : "s") +
          " · " + (data.encoding === "gsm7" ? "GSM-7" : "UCS-2 (Unicode)") + " encoding";
      }
      meta.textContent = text;
      out.appendChild(meta);
    };
    var showError = function (message) {
      out.textContent = "";
      var p = document.createElement("p");
      p.className = "field-error";
      p.textContent = message;
      out.appendChild(p);
    };
    var refresh = function () {
      var request = { body: body.value };
      if (contact && contact.value) { request.contact_id = contact.value; }
      if (channel && channel.value) { request.channel_id = channel.value; }
      if (!body.value.trim()) { showError("Write the message to see a preview."); return; }
      var mine = ++seq;
      fetch(panel.getAttribute("data-preview-url"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken(), "Accept": "application/json" },
        body: JSON.stringify(request)
      }).then(function (r) {
        return r.json().then(function (data) { return { ok: r.ok, data: data }; });
      }).then(function (res) {
        if (mine !== seq) { return; }
        if (res.ok) { showPreview(res.data); } else { showError(res.data.detail || res.data.title || "The preview failed."); }
      }).catch(function () {
        if (mine === seq) { showError("The preview could not be loaded; the Preview button still works."); }
      });
    };
    var soon = function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 350);
    };
    body.addEventListener("input", soon);
    if (contact) { contact.addEventListener("change", refresh); }
    if (channel) { channel.addEventListener("change", refresh); }
    if (list && contact) {
      list.addEventListener("change", function () {
        fetch("/api/v1/lists/" + encodeURIComponent(list.value) + "/members?limit=50", {
          credentials: "same-origin", headers: { "Accept": "application/json" }
        }).then(function (r) { return r.ok ? r.json() : { items: [] }; }).then(function (data) {
          var keep = contact.options[0];
          contact.textContent = "";
          contact.appendChild(keep);
          (data.items || []).forEach(function (c) {
            var o = document.createElement("option");
            o.value = c.id;
            o.textContent = c.name ? c.name + " (" + c.address + ")" : c.address;
            contact.appendChild(o);
          });
          refresh();
        }).catch(function () { /* the select keeps its contacts */ });
      });
    }
    var button = $("#preview-button");
    if (button) {
      button.addEventListener("click", function (ev) { ev.preventDefault(); refresh(); });
    }
    refresh();
  }

  // ---------------------------------------------------------------------------------
  // Live campaign progress
  // ---------------------------------------------------------------------------------

  var live = $("#campaign-live");
  if (!live) { return; }

  var id = live.getAttribute("data-campaign");
  var state = {
    status: live.getAttribute("data-status"),
    total: Number(live.getAttribute("data-total")) || 0,
    counters: null,
    lastSummary: 0
  };
  var TERMINAL = { completed: true, cancelled: true };
  var OK = ["sent", "delivered", "read"];
  var FAILED = ["failed", "undelivered"];
  var ATTEMPTED = ["sent", "delivered", "read", "undelivered", "failed"];

  function sum(counters, keys) {
    return keys.reduce(function (a, k) { return a + (Number(counters[k]) || 0); }, 0);
  }
  function setText(sel, text) {
    var el = $(sel);
    if (el) { el.textContent = text; }
  }

  // The actor and move of an audit entry as a sentence (as the server words it).
  function actor(a) {
    a = String(a || "");
    if (a.indexOf("user:") === 0) { return a.slice(5); }
    if (a.indexOf("api_key:") === 0) { return "API key “" + a.slice(8) + "”"; }
    if (a.indexOf("cli:") === 0) { return "the command line (" + a.slice(4) + ")"; }
    if (a.indexOf("scheduler") === 0) { return "the scheduler"; }
    if (a.indexOf("reconciler") === 0) { return "Herald's reconciler"; }
    if (a.indexOf("instance ") === 0) { return "Herald instance " + a.slice(9); }
    if (a.indexOf("dispatcher") === 0 || a.indexOf("engine") === 0) { return "Herald"; }
    return a;
  }
  function sentence(e) {
    var who = actor(e.actor), from = e.from, to = e.to;
    var person = /^(user:|api_key:|cli:)/.test(String(e.actor || ""));
    if (!from) { return (to === "scheduled" ? "Created and scheduled by " : "Created by ") + who; }
    if (from === to && (to === "draft" || to === "scheduled")) { return "Edited by " + who; }
    if (to === "scheduled") { return "Scheduled by " + who; }
    if (to === "sending") { return (from === "paused" ? "Resumed by " : "Started by ") + who; }
    if (to === "paused") { return "Paused by " + who; }
    if (to === "cancelled") { return "Cancelled by " + who; }
    if (to === "completed") { return person ? "Marked complete by " + who : "Completed (" + who + ")"; }
    return "Moved from " + from + " to " + to + " by " + who;
  }
  // The entries on the page, by id: an entry is never shown twice, whether it came with
  // the page, from the event stream or from a refresh.
  var seenAudit = {};
  $all("#audit-list li[data-id]").forEach(function (li) { seenAudit[li.getAttribute("data-id")] = true; });
  function addAudit(e) {
    if (!e || !e.to) { return; }
    if (e.id) {
      if (seenAudit[e.id]) { return; }
      seenAudit[e.id] = true;
    }
    var list = $("#audit-list");
    if (!list) { return; }
    var empty = $("li.muted", list);
    if (empty) { empty.remove(); }
    var li = document.createElement("li");
    if (e.id) { li.setAttribute("data-id", e.id); }
    var strong = document.createElement("strong");
    strong.textContent = sentence(e);
    li.appendChild(strong);
    if (e.reason) { li.appendChild(document.createTextNode(": " + e.reason)); }
    li.appendChild(document.createTextNode(" "));
    var t = document.createElement("time");
    t.setAttribute("datetime", e.at || "");
    t.textContent = when(e.at);
    li.appendChild(t);
    list.appendChild(li);
  }
  function setStatus(status) {
    if (!status || status === state.status) { return; }
    state.status = status;
    live.setAttribute("data-status", status);
    refreshFragments();
    var badge = $("#status-badge");
    if (badge) {
      badge.className = "badge " + status;
      badge.textContent = label(status);
    }
    $all("#campaign-actions [data-when]").forEach(function (a) {
      a.hidden = a.getAttribute("data-when").split(" ").indexOf(status) < 0;
    });
    state.lastSummary = 0;
  }

  function setStuck(stuck) {
    var banner = $("#stuck-banner");
    if (!banner) { return; }
    if (stuck && stuck.reason) {
      setText("#stuck-reason", stuck.reason);
      setText("#stuck-since", when(stuck.no_progress_since));
      setText("#stuck-pending", fmt(stuck.pending));
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }

  function summaryText() {
    var c = state.counters || {};
    var pending = Number(c.pending) || 0;
    var done = Math.max(0, state.total - pending);
    var pct = state.total > 0 ? Math.floor(done * 100 / state.total) : 0;
    var text = state.total > 0
      ? fmt(done) + " of " + fmt(state.total) + " messages done (" + pct + "%)."
      : "No recipients yet.";
    return label(state.status) + ": " + text;
  }

  function setCounters(counters, total) {
    if (!counters) { return; }
    state.counters = counters;
    if (typeof total === "number") { state.total = total; }
    var max = state.total > 0 ? state.total : 1;
    var pending = Number(counters.pending);
    if (isNaN(pending)) {
      pending = sum(counters, ["queued", "in_flight", "retry_wait", "in_doubt"]);
      counters.pending = pending;
    }
    var done = Math.max(0, state.total - pending);
    var overall = $("#overall-progress");
    if (overall) { overall.max = max; overall.value = state.total > 0 ? done : 0; }
    Object.keys(counters).forEach(function (k) {
      var bar = document.getElementById("bar-" + k);
      if (bar) { bar.max = max; bar.value = Number(counters[k]) || 0; }
      var count = document.getElementById("count-" + k);
      if (count) { count.textContent = fmt(counters[k]); }
    });
    setText("#stat-total", fmt(state.total));
    setText("#stat-pending", fmt(pending));
    setText("#stat-ok", fmt(sum(counters, OK)));
    setText("#stat-failed", fmt(sum(counters, FAILED)));
    sample(sum(counters, ATTEMPTED));
    // The live region speaks at most every 5 s (and on every change of status).
    var now = Date.now();
    if (now - state.lastSummary > 5000 || TERMINAL[state.status]) {
      state.lastSummary = now;
      setText("#progress-summary", summaryText());
    }
  }

  function apply(data) {
    if (!data || typeof data !== "object") { return; }
    var c = data.campaign && typeof data.campaign === "object" ? data.campaign : data;
    if (typeof c.in_doubt_total === "number") { setText("#stat-doubt", fmt(c.in_doubt_total)); }
    if (c.started_at) { setText("#started-at", when(c.started_at)); }
    if (c.completed_at) { setText("#completed-at", when(c.completed_at)); }
    var statusChanged = c.status && c.status !== state.status;
    setStatus(c.status);
    setCounters(c.counters, typeof c.total === "number" ? c.total : undefined);
    if (Object.prototype.hasOwnProperty.call(c, "stuck")) { setStuck(c.stuck); }
    if (statusChanged) { setText("#progress-summary", summaryText()); }
    if (TERMINAL[state.status]) { finish(); }
  }

  // Throughput over time, from the progress this page has seen.
  var samples = [];
  var drawPending = false;
  function sample(attempted) {
    var t = Date.now();
    var last = samples[samples.length - 1];
    if (last && t - last.t < 1000) { last.n = attempted; last.t2 = t; return; }
    samples.push({ t: t, n: attempted });
    if (samples.length > 300) { samples.shift(); }
    if (!drawPending) {
      drawPending = true;
      setTimeout(function () { drawPending = false; draw(); }, 250);
    }
  }
  var SVG = "http://www.w3.org/2000/svg";
  function svgEl(name, attrs) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    return el;
  }
  function niceMax(v) {
    if (v <= 0) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    var nice = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
    return nice * p;
  }
  function draw() {
    var svg = $("#throughput-chart");
    if (!svg) { return; }
    $all(".drawn", svg).forEach(function (n) { n.remove(); });
    // Drawn at the size it is shown, so the text is not stretched.
    var W = Math.max(280, Math.round(svg.getBoundingClientRect().width) || 600);
    var H = 180, L = 52, R = 12, T = 12, B = 26;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var points = [];
    for (var i = 1; i < samples.length; i++) {
      var a = samples[i - 1], b = samples[i];
      var dt = ((b.t2 || b.t) - (a.t2 || a.t)) / 1000;
      if (dt > 0) { points.push({ t: b.t2 || b.t, rate: Math.max(0, (b.n - a.n) / dt) }); }
    }
    var note = $("#chart-note");
    if (points.length < 1) {
      var msg = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "drawn" });
      msg.textContent = TERMINAL[state.status] ? "The campaign has ended." : "Waiting for progress…";
      svg.appendChild(msg);
      return;
    }
    var t0 = samples[0].t, t1 = points[points.length - 1].t;
    var span = Math.max(1000, t1 - t0);
    var peak = niceMax(Math.max.apply(null, points.map(function (p) { return p.rate; })));
    var x = function (t) { return L + (W - L - R) * (t - t0) / span; };
    var y = function (r) { return T + (H - T - B) * (1 - r / peak); };
    [0, 0.5, 1].forEach(function (f) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: y(peak * f), y2: y(peak * f), "class": "grid-line drawn" }));
      var lbl = svgEl("text", { x: L - 6, y: y(peak * f) + 4, "text-anchor": "end", "class": "drawn" });
      lbl.textContent = (peak * f).toLocaleString("en-US", { maximumFractionDigits: 1 }) + "/s";
      svg.appendChild(lbl);
    });
    svg.appendChild(svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, "class": "axis drawn" }));
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis drawn" }));
    var start = svgEl("text", { x: L, y: H - 6, "class": "drawn" });
    start.textContent = "page opened";
    svg.appendChild(start);
    var end = svgEl("text", { x: W - R, y: H - 6, "text-anchor": "end", "class": "drawn" });
    end.textContent = "+" + Math.round(span / 1000) + " s";
    svg.appendChild(end);
    var line = [x(t0) + "," + y(0)];
    points.forEach(function (p) { line.push(x(p.t) + "," + y(p.rate)); });
    var area = line.concat([x(t1) + "," + y(0)]);
    svg.appendChild(svgEl("polygon", { points: area.join(" "), "class": "area drawn" }));
    svg.appendChild(svgEl("polyline", { points: line.join(" "), "class": "line drawn" }));
    var latest = points[points.length - 1].rate;
    svg.setAttribute("aria-label", "Messages per second: now " + latest.toFixed(1) + ", peak " + peak + " scale");
    if (note) { note.textContent = "Now " + latest.toLocaleString("en-US", { maximumFractionDigits: 1 }) + " messages per second."; }
  }

  // The campaign as the API has it now (the stuck verdict changes without any progress,
  // so it is asked for now and then, and always when the event stream is down).
  var source = null;
  var pollTimer = null;
  var streamUp = false;
  function poll() {
    fetch("/api/v1/campaigns/" + encodeURIComponent(id), {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (c) {
      if (c) { apply(c); }
    }).catch(function () { /* the next poll tries again */ });
  }
  // The parts of the page the events do not carry (the messages table, the average
  // throughput, the dates, the audit trail as the server words it), from a fresh render
  // of this very page.
  var FRAGMENTS = ["messages-table", "messages-pager", "throughput-text", "audit-list", "started-at", "completed-at"];
  var refreshing = false;
  function refreshFragments() {
    if (refreshing) { return; }
    refreshing = true;
    fetch(location.pathname + location.search, {
      credentials: "same-origin", headers: { "Accept": "text/html" }
    }).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
      if (!html) { return; }
      var doc = new DOMParser().parseFromString(html, "text/html");
      FRAGMENTS.forEach(function (fid) {
        var now = document.getElementById(fid), fresh = doc.getElementById(fid);
        if (now && fresh) { now.innerHTML = fresh.innerHTML; }
      });
      seenAudit = {};
      $all("#audit-list li[data-id]").forEach(function (li) { seenAudit[li.getAttribute("data-id")] = true; });
    }).catch(function () { /* the next refresh tries again */ }).then(function () { refreshing = false; });
  }
  var ticks = 0;
  function schedulePoll() {
    clearTimeout(pollTimer);
    if (TERMINAL[state.status]) { return; }
    pollTimer = setTimeout(function () {
      ticks += 1;
      poll();
      if (streamUp || ticks % 3 === 0) { refreshFragments(); }
      schedulePoll();
    }, streamUp ? 10000 : 3000);
  }
  function finish() {
    if (source) { source.close(); source = null; }
    clearTimeout(pollTimer);
    draw();
  }
  function parse(ev) {
    try { return JSON.parse(ev.data); } catch (e) { return null; }
  }

  if (TERMINAL[state.status]) {
    draw();
    return;
  }
  if (typeof EventSource === "function") {
    source = new EventSource("/api/v1/campaigns/" + encodeURIComponent(id) + "/events");
    source.addEventListener("open", function () { streamUp = true; schedulePoll(); });
    source.addEventListener("error", function () { streamUp = false; schedulePoll(); });
    ["snapshot", "progress", "message", "status"].forEach(function (type) {
      source.addEventListener(type, function (ev) { apply(parse(ev)); });
    });
    source.addEventListener("audit", function (ev) {
      var e = parse(ev);
      if (!e) { return; }
      var entry = e.event || e;
      addAudit(entry);
      if (entry.to) { setStatus(entry.to); }
    });
    source.addEventListener("end", function (ev) {
      apply(parse(ev));
      poll();
      refreshFragments();
      finish();
    });
  }
  schedulePoll();
  draw();
})();
