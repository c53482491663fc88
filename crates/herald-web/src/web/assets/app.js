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

    // The email parts: the subject and sender go in the preview; the HTML part is shown by
    // the sandboxed frame ("Preview HTML"), never inserted into this page.
    var emailField = function (id) { var el = $("#" + id); return el ? el.value : ""; };
    var emailRequest = function () {
      var subject = emailField("email_subject").trim();
      var html = emailField("email_html");
      var fromName = emailField("email_from_name").trim();
      var replyTo = emailField("email_reply_to").trim();
      if (!subject && !html.trim() && !fromName && !replyTo) { return null; }
      return { subject: subject, html: html.trim() ? html : null,
        from_name: fromName || null, reply_to: replyTo || null };
    };
    var showPreview = function (data) {
      out.textContent = "";
      if (data.email) {
        var head = document.createElement("p");
        head.className = "small";
        head.id = "preview-email-head";
        [["Subject", data.email.subject], ["From", data.email.from_name], ["Reply-to", data.email.reply_to]].forEach(function (kv, i) {
          if (!kv[1]) { return; }
          if (i > 0) { head.appendChild(document.createElement("br")); }
          var label = document.createElement("strong");
          label.textContent = kv[0] + ": ";
          head.appendChild(label);
          head.appendChild(document.createTextNode(kv[1]));
        });
        out.appendChild(head);
      }
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
      var email = emailRequest();
      if (email) { request.email = email; }
      if (!body.value.trim() && !(email && email.html)) { showError("Write the message to see a preview."); return; }
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
    // The channel's own options open with it: the email parts for an smtp channel, the
    // template for a WhatsApp one (closed sections keep their values).
    var openForKind = function () {
      if (!channel) { return; }
      var option = channel.options[channel.selectedIndex];
      var kind = option ? option.getAttribute("data-kind") : "";
      var emailParts = $("#email-parts");
      var waTemplate = $("#wa-template");
      if (emailParts && kind === "smtp") { emailParts.open = true; }
      if (waTemplate && kind === "whatsapp") { waTemplate.open = true; }
    };
    if (channel) { channel.addEventListener("change", openForKind); }
    openForKind();
    body.addEventListener("input", soon);
    ["email_subject", "email_html", "email_from_name", "email_reply_to"].forEach(function (id) {
      var el = $("#" + id);
      if (el) { el.addEventListener("input", soon); }
    });
    if (contact) { contact.addEventListener("change", refresh); }
    if (channel) { channel.addEventListener("change", refresh); }
    if (list && contact) {
      var listSeq = 0;
      list.addEventListener("change", function () {
        var mineList = ++listSeq;
        fetch("/api/v1/lists/" + encodeURIComponent(list.value) + "/members?limit=50", {
          credentials: "same-origin", headers: { "Accept": "application/json" }
        }).then(function (r) { return r.ok ? r.json() : { items: [] }; }).then(function (data) {
          // An answer for a list chosen before the current one is stale.
          if (mineList !== listSeq) { return; }
          // The contact chosen while the members loaded stays chosen if the list has it.
          var chosen = contact.value;
          var keep = contact.options[0];
          contact.textContent = "";
          contact.appendChild(keep);
          (data.items || []).forEach(function (c) {
            var o = document.createElement("option");
            o.value = c.id;
            o.textContent = c.name ? c.name + " (" + c.address + ")" : c.address;
            o.selected = c.id === chosen;
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
  //
  // Every number of the campaign page (summary sentence, progress bars, per-status counts,
  // filter counts) is rendered by `render` from ONE snapshot of the campaign: a `progress`
  // event of the stream, or the campaign as the API returns it. Nothing is computed from
  // two different reads, so the page always agrees with itself, and once the campaign has
  // ended (and nothing of it is pending) with GET /api/v1/campaigns/{id}/stats.

  var live = $("#campaign-live");
  if (!live) { return; }

  var id = live.getAttribute("data-campaign");
  var state = {
    status: live.getAttribute("data-status"),
    outcome: live.getAttribute("data-outcome") || null,
    total: Number(live.getAttribute("data-total")) || 0,
    pending: Number(live.getAttribute("data-pending")) || 0,
    lastAnnounce: 0,
    renders: 0
  };
  var TERMINAL = { completed: true, cancelled: true };
  var OK = ["sent", "delivered", "read"];
  var FAILED = ["failed", "undelivered"];
  var PENDING = ["queued", "in_flight", "retry_wait", "in_doubt"];
  var PROCESSED = ["sent", "delivered", "read", "undelivered", "failed"];
  var STATUSES = ["queued", "in_flight", "retry_wait", "in_doubt", "sent", "delivered", "read",
    "undelivered", "failed", "skipped", "cancelled"];

  function sum(counters, keys) {
    return keys.reduce(function (a, k) { return a + (Number(counters[k]) || 0); }, 0);
  }
  function setText(sel, text) {
    var el = $(sel);
    if (el) { el.textContent = text; }
  }
  function settled() { return !!TERMINAL[state.status] && state.pending === 0; }

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

  function setBadge() {
    var badge = $("#status-badge");
    if (!badge) { return; }
    badge.className = "badge big " + state.status + (state.outcome ? " o-" + state.outcome : "");
    badge.textContent = label(state.status) +
      (state.outcome && state.outcome !== "cancelled" ? " · " + label(state.outcome).toLowerCase() : "");
  }

  // The engine pauses a campaign whose channel's provider cannot be reached, and resumes
  // it when the provider answers again: the banner says which, from the audit trail.
  function setPaused(reason) {
    var banner = $("#paused-banner");
    if (!banner) { return; }
    if (reason && state.status === "paused") {
      setText("#paused-reason", reason);
      var outage = $("#paused-outage");
      if (outage) { outage.hidden = reason.indexOf("paused by the engine: channel") !== 0; }
      var auto = $("#paused-auto");
      if (auto) { auto.hidden = reason.indexOf("auto-paused: ") !== 0; }
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
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

  // The summary sentence, with each number in a `data-n` span (as campaign.html words it).
  function renderSummary(k) {
    var p = $("#progress-summary");
    if (!p) { return ""; }
    p.textContent = "";
    function num(key, n) {
      var span = document.createElement("span");
      span.setAttribute("data-n", key);
      span.textContent = fmt(n);
      p.appendChild(span);
    }
    function text(t) { p.appendChild(document.createTextNode(t)); }
    if (state.total <= 0) {
      text(state.status === "draft" || state.status === "scheduled" ? "Not started yet." : "No recipients.");
      return p.textContent;
    }
    var processed = sum(k, PROCESSED);
    num("processed", processed);
    text(" of ");
    num("total", state.total);
    text(" messages processed (");
    num("pct", Math.min(100, Math.floor(processed * 100 / state.total)));
    text("%)");
    var parts = [
      ["ok", sum(k, OK), "sent or delivered"],
      ["failed", sum(k, FAILED), "failed"],
      ["cancelled", Number(k.cancelled) || 0, "cancelled"],
      ["skipped", Number(k.skipped) || 0, "skipped"],
      ["pending", sum(k, PENDING), "pending"]
    ].filter(function (x) { return x[1] > 0; });
    parts.forEach(function (x, i) {
      text(i === 0 ? ": " : ", ");
      num(x[0], x[1]);
      text(" " + x[2]);
    });
    text(".");
    return p.textContent;
  }

  // Renders one snapshot of the campaign (a `progress` event or the API's campaign).
  function render(c) {
    if (!c || typeof c !== "object" || !c.counters) { return; }
    var k = c.counters;
    var statusChanged = c.status && c.status !== state.status;
    if (c.status) { state.status = c.status; }
    state.outcome = c.outcome || null;
    if (typeof c.total === "number") { state.total = c.total; }
    state.pending = sum(k, PENDING);
    state.renders += 1;
    live.setAttribute("data-status", state.status);
    live.setAttribute("data-outcome", state.outcome || "");
    live.setAttribute("data-total", String(state.total));
    live.setAttribute("data-pending", String(state.pending));
    setBadge();
    $all("#campaign-actions [data-when]").forEach(function (a) {
      a.hidden = a.getAttribute("data-when").split(" ").indexOf(state.status) < 0;
    });
    var max = state.total > 0 ? state.total : 1;
    var processed = sum(k, PROCESSED);
    var overall = $("#overall-progress");
    if (overall) { overall.max = max; overall.value = state.total > 0 ? processed : 0; }
    STATUSES.forEach(function (s) {
      var n = Number(k[s]) || 0;
      var bar = document.getElementById("bar-" + s);
      if (bar) { bar.max = max; bar.value = n; }
      var count = document.getElementById("count-" + s);
      if (count) { count.textContent = fmt(n); }
      var opt = document.getElementById("opt-" + s);
      if (opt) { opt.textContent = label(s) + " (" + fmt(n) + ")"; opt.setAttribute("data-count", String(n)); }
    });
    setText("#stat-total", fmt(state.total));
    setText("#stat-processed", fmt(processed));
    setText("#stat-pending", fmt(state.pending));
    setText("#stat-ok", fmt(sum(k, OK)));
    setText("#stat-failed", fmt(sum(k, FAILED)));
    setText("#stat-cancelled", fmt(k.cancelled));
    setText("#stat-skipped", fmt(k.skipped));
    if (typeof c.in_doubt_total === "number") { setText("#stat-doubt", fmt(c.in_doubt_total)); }
    if (c.started_at) { setText("#started-at", when(c.started_at)); }
    if (c.completed_at) { setText("#completed-at", when(c.completed_at)); }
    if (Object.prototype.hasOwnProperty.call(c, "stuck")) { setStuck(c.stuck); }
    if (Object.prototype.hasOwnProperty.call(c, "paused_reason")) { setPaused(c.paused_reason); }
    // Why it is paused comes with the campaign, not with a progress event: ask for it.
    else if (statusChanged) { if (state.status === "paused") { poll(); } else { setPaused(null); } }
    var summary = renderSummary(k);
    // Screen readers hear the summary at most every 5 s, and on every change of status.
    var now = Date.now();
    if (statusChanged || now - state.lastAnnounce > 5000 || settled()) {
      state.lastAnnounce = now;
      setText("#progress-announce", label(state.status) + (state.outcome ? " (" + label(state.outcome).toLowerCase() + ")" : "") + ": " + summary);
    }
    if (statusChanged) { refreshFragments(); loadChart(); }
    else { refreshSoon(); }
  }

  // ---- Throughput, from the history the engine keeps (per-minute counts) -----------
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
  var MINUTE = 60000;
  function drawChart(minutes) {
    var svg = $("#throughput-chart");
    if (!svg) { return; }
    $all(".drawn", svg).forEach(function (n) { n.remove(); });
    var W = Math.max(280, Math.round(svg.getBoundingClientRect().width) || 600);
    var H = 180, L = 52, R = 12, T = 12, B = 26;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var points = (minutes || []).map(function (m) {
      return { t: new Date(m.minute).getTime(), sent: Number(m.sent) || 0, failed: Number(m.failed) || 0 };
    }).filter(function (m) { return !isNaN(m.t); });
    svg.setAttribute("data-points", String(points.length));
    var note = $("#chart-note");
    if (points.length < 1) {
      var msg = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "drawn" });
      msg.textContent = TERMINAL[state.status] ? "Nothing was sent." :
        (state.status === "draft" || state.status === "scheduled" ? "Not started yet." : "Waiting for the first minute of sending…");
      svg.appendChild(msg);
      if (note) { note.textContent = "The chart shows every minute of the campaign's sending, also after it ended."; }
      return;
    }
    var t0 = points[0].t, t1 = points[points.length - 1].t + MINUTE;
    var slots = Math.max(1, Math.round((t1 - t0) / MINUTE));
    var peakRaw = Math.max.apply(null, points.map(function (p) { return p.sent + p.failed; }));
    var peak = niceMax(peakRaw);
    var x = function (t) { return L + (W - L - R) * (t - t0) / (t1 - t0); };
    var y = function (n) { return T + (H - T - B) * (1 - n / peak); };
    [0, 0.5, 1].forEach(function (f) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: y(peak * f), y2: y(peak * f), "class": "grid-line drawn" }));
      var lbl = svgEl("text", { x: L - 6, y: y(peak * f) + 4, "text-anchor": "end", "class": "drawn" });
      lbl.textContent = (peak * f).toLocaleString("en-US", { maximumFractionDigits: 1 }) + "/min";
      svg.appendChild(lbl);
    });
    svg.appendChild(svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, "class": "axis drawn" }));
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis drawn" }));
    var colW = Math.max(1, (W - L - R) / slots - 1);
    points.forEach(function (p) {
      var x0 = x(p.t);
      if (p.sent > 0) {
        svg.appendChild(svgEl("rect", { x: x0, y: y(p.sent), width: colW, height: y(0) - y(p.sent), "class": "col-sent point drawn" }));
      }
      if (p.failed > 0) {
        svg.appendChild(svgEl("rect", { x: x0, y: y(p.sent + p.failed), width: colW, height: y(p.sent) - y(p.sent + p.failed), "class": "col-failed point drawn" }));
      }
    });
    var line = points.map(function (p) { return (x(p.t) + colW / 2) + "," + y(p.sent + p.failed); });
    svg.appendChild(svgEl("polyline", { points: line.join(" "), "class": "line drawn" }));
    var start = svgEl("text", { x: L, y: H - 6, "class": "drawn" });
    start.textContent = when(new Date(t0).toISOString()).slice(11, 16) + " UTC";
    svg.appendChild(start);
    var end = svgEl("text", { x: W - R, y: H - 6, "text-anchor": "end", "class": "drawn" });
    end.textContent = "+" + slots + " min";
    svg.appendChild(end);
    svg.setAttribute("aria-label", "Messages per minute over " + slots + " minutes, peak " + peakRaw);
    if (note) {
      var sent = points.reduce(function (a, p) { return a + p.sent; }, 0);
      var failed = points.reduce(function (a, p) { return a + p.failed; }, 0);
      note.textContent = fmt(sent) + " sent and " + fmt(failed) + " failed over " + slots +
        " minute" + (slots === 1 ? "" : "s") + "; peak " + fmt(peakRaw) + " per minute.";
    }
  }
  var chartSeq = 0;
  function loadChart() {
    var mine = ++chartSeq;
    return fetch("/api/v1/campaigns/" + encodeURIComponent(id) + "/throughput", {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (data) {
      if (data && mine === chartSeq) { drawChart(data.minutes); }
    }).catch(function () { /* the next load tries again */ });
  }

  // The campaign as the API has it now (the stuck verdict changes without any progress,
  // so it is asked for now and then, and always when the event stream is down).
  var source = null;
  var pollTimer = null;
  var streamUp = false;
  function poll() {
    return fetch("/api/v1/campaigns/" + encodeURIComponent(id), {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (c) {
      if (c) { render(c); }
    }).catch(function () { /* the next poll tries again */ });
  }
  // The parts of the page the events do not carry (the messages table, the average
  // throughput, the dates, the audit trail as the server words it), from a fresh render
  // of this very page.
  var FRAGMENTS = ["messages-table", "messages-pager", "throughput-text", "audit-list", "started-at", "completed-at", "failures-body"];
  var refreshing = null;
  var again = false;
  function refreshFragments() {
    if (refreshing) { again = true; return refreshing; }
    refreshing = fetch(location.pathname + location.search, {
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
    }).catch(function () { /* the next refresh tries again */ }).then(function () {
      refreshing = null;
      if (again) { again = false; return refreshFragments(); }
    });
    return refreshing;
  }
  // While sending, the table follows the counters at most every 2 s.
  var soonTimer = null;
  function refreshSoon() {
    if (soonTimer) { return; }
    soonTimer = setTimeout(function () { soonTimer = null; refreshFragments(); }, 2000);
  }
  var ticks = 0;
  function schedulePoll() {
    clearTimeout(pollTimer);
    if (settled()) { return; }
    pollTimer = setTimeout(function () {
      ticks += 1;
      poll();
      if (ticks % 3 === 0) { loadChart(); }
      schedulePoll();
    }, streamUp ? 10000 : 3000);
  }
  // The campaign has ended and nothing of it is pending: one last snapshot, then the
  // table, the chart and the audit trail of that final state. `data-settled` tells a test
  // (or anyone) that everything on the page is final.
  function finish() {
    if (source) { source.close(); source = null; }
    streamUp = false;
    clearTimeout(pollTimer);
    clearTimeout(soonTimer);
    soonTimer = null;
    Promise.all([poll(), refreshFragments(), loadChart()]).then(function () {
      if (settled()) { live.setAttribute("data-settled", "true"); }
      else { schedulePoll(); }
    });
  }
  function parse(ev) {
    try { return JSON.parse(ev.data); } catch (e) { return null; }
  }

  if (settled()) {
    loadChart().then(function () { live.setAttribute("data-settled", "true"); });
    return;
  }
  if (typeof EventSource === "function") {
    source = new EventSource("/api/v1/campaigns/" + encodeURIComponent(id) + "/events");
    source.addEventListener("open", function () { streamUp = true; schedulePoll(); });
    source.addEventListener("error", function () { streamUp = false; schedulePoll(); });
    source.addEventListener("snapshot", function (ev) { render(parse(ev)); });
    source.addEventListener("progress", function (ev) { render(parse(ev)); });
    source.addEventListener("audit", function (ev) {
      var e = parse(ev);
      if (e) { addAudit(e.event || e); }
    });
    source.addEventListener("end", function () { finish(); });
  }
  schedulePoll();
  loadChart();
})();
