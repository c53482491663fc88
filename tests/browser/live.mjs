// The campaign page agrees with itself and with the API (issue 11, item 4). Called once by
// dashboard.mjs, signed in, after the Welcome campaign completed:
//
// - every number of the page (summary sentence, overall bar, per-status bars and counts,
//   the stats list, the messages filter's counts) equals GET /api/v1/campaigns/{id}/stats
//   once the campaign is paused with nothing in flight, marked complete, cancelled, or
//   completed, each followed live (the actions go through the API; the page never reloads);
// - the status badge names the outcome, and processed is never shown as the total after a
//   cancel;
// - a finished campaign opened later draws its whole throughput chart from stored history.

import assert from "node:assert/strict";

/// A call to the API from the page, with its session cookie and CSRF token.
async function api(page, method, path, body) {
  return page.evaluate(async ([method, path, body]) => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    const headers = { "Accept": "application/json" };
    if (meta) { headers["X-CSRF-Token"] = meta.getAttribute("content"); }
    if (body !== null) { headers["Content-Type"] = "application/json"; }
    const r = await fetch(`/api/v1${path}`, {
      method, credentials: "same-origin", headers,
      body: body === null ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
    return { status: r.status, json, text };
  }, [method, path, body === undefined ? null : body]);
}

async function ok(page, method, path, body) {
  const r = await api(page, method, path, body);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${path} answered ${r.status}: ${r.text}`);
  return r.json;
}

const STATUSES = ["queued", "in_flight", "retry_wait", "in_doubt", "sent", "delivered", "read",
  "undelivered", "failed", "skipped", "cancelled"];
const num = (t) => Number(String(t || "").replace(/[^0-9-]/g, ""));

/// Every number the page shows, read from the page itself.
async function shown(page) {
  return page.evaluate((statuses) => {
    const n = (t) => Number(String(t || "").replace(/[^0-9-]/g, ""));
    const text = (sel) => (document.querySelector(sel) || {}).textContent;
    const summary = {};
    document.querySelectorAll("#progress-summary [data-n]").forEach((s) => {
      summary[s.getAttribute("data-n")] = n(s.textContent);
    });
    const out = {
      badge: text("#status-badge").trim(),
      summary,
      overall: [n(document.querySelector("#overall-progress").value), n(document.querySelector("#overall-progress").max)],
      stats: {},
      counts: {},
      bars: {},
      filter: {},
      settled: document.querySelector("#campaign-live").getAttribute("data-settled") === "true",
      rows: Array.from(document.querySelectorAll("#messages-table tbody tr td:nth-child(2)"))
        .map((td) => td.firstChild ? td.firstChild.textContent.trim() : ""),
    };
    for (const k of ["total", "processed", "pending", "ok", "failed", "cancelled", "skipped"]) {
      out.stats[k] = n(text(`#stat-${k}`));
    }
    for (const s of statuses) {
      out.counts[s] = n(text(`#count-${s}`));
      out.bars[s] = n(document.getElementById(`bar-${s}`).value);
      const opt = document.getElementById(`opt-${s}`);
      out.filter[s] = n(/\(([\d,]+)\)\s*$/.exec(opt.textContent)[1]);
    }
    return out;
  }, STATUSES);
}

/// What the page must show for the campaign the stats API describes.
function expected(stats) {
  const k = stats.counters;
  const label = (s) => { s = String(s).replace(/_/g, " "); return s.charAt(0).toUpperCase() + s.slice(1); };
  const ok = k.sent + k.delivered + k.read;
  const failed = k.failed + k.undelivered;
  const summary = {
    processed: k.processed, total: stats.total,
    pct: stats.total > 0 ? Math.min(100, Math.floor(k.processed * 100 / stats.total)) : 0,
  };
  for (const [key, v] of [["ok", ok], ["failed", failed], ["cancelled", k.cancelled], ["skipped", k.skipped], ["pending", k.pending]]) {
    if (v > 0) { summary[key] = v; }
  }
  const counts = {};
  for (const s of STATUSES) { counts[s] = k[s]; }
  return {
    badge: label(stats.status) + (stats.outcome && stats.outcome !== "cancelled" ? ` · ${label(stats.outcome).toLowerCase()}` : ""),
    summary,
    overall: [k.processed, stats.total],
    stats: { total: stats.total, processed: k.processed, pending: k.pending, ok, failed, cancelled: k.cancelled, skipped: k.skipped },
    counts, bars: counts, filter: counts,
  };
}

/// Waits (bounded) until the page shows exactly what the stats API says, twice in a row
/// with the same stats (the campaign has stopped moving); returns the stats.
async function agrees(page, id, what, { settled = false, within = 60000 } = {}) {
  const deadline = Date.now() + within;
  let last = null;
  for (;;) {
    const before = await ok(page, "GET", `/campaigns/${id}/stats`);
    const got = await shown(page);
    const after = await ok(page, "GET", `/campaigns/${id}/stats`);
    const want = expected(after);
    const { rows, settled: isSettled, ...numbers } = got;
    last = { want, numbers, isSettled };
    const stable = JSON.stringify(before.counters) === JSON.stringify(after.counters) && before.status === after.status;
    if (stable && after.counters.in_flight === 0 && (!settled || isSettled)) {
      try {
        assert.deepEqual(numbers, want);
        // The messages table shows no row in a status the counters say is empty.
        if (isSettled) {
          for (const row of rows) {
            const s = STATUSES.find((st) => row.toLowerCase() === st.replace(/_/g, " "));
            if (s) { assert.ok(after.counters[s] > 0, `${what}: a message row is ${row} but the counters have none`); }
          }
        }
        return after;
      } catch (e) {
        if (Date.now() > deadline) { throw e; }
      }
    }
    if (Date.now() > deadline) {
      assert.fail(`${what}: the page did not agree with GET /campaigns/${id}/stats within ${within} ms\n` +
        `page: ${JSON.stringify(last.numbers)}\nstats: ${JSON.stringify(last.want)}\nsettled: ${last.isSettled}`);
    }
    await page.waitForTimeout(250);
  }
}

async function campaignOn(page, name, channel, list) {
  const c = await ok(page, "POST", "/campaigns", { name, channel_id: channel, list_id: list, body: "Hello {{ name }}" });
  return c.id;
}

export async function checkLivePage({ page, BASE, step, completedUrl }) {
  step("live page: a finished campaign opened later agrees with the stats API and draws its whole chart");
  await page.goto(completedUrl);
  const doneId = /cmp_\d+/.exec(completedUrl)[0];
  const done = await agrees(page, doneId, "completed campaign", { settled: true });
  assert.equal(done.status, "completed");
  const points = Number(await page.locator("#throughput-chart").getAttribute("data-points"));
  assert.ok(points > 0, "the chart of a finished campaign has points from the stored history");
  assert.ok(await page.locator("#throughput-chart .point").count() > 0, "the chart draws its points");
  const history = await ok(page, "GET", `/campaigns/${doneId}/throughput`);
  assert.equal(points, history.minutes.length, "one point per stored minute");
  const recorded = history.minutes.reduce((a, m) => a + m.sent + m.failed, 0);
  assert.equal(recorded, done.counters.processed, "the stored history adds up to the processed messages");

  step("live page: pause with sends in flight, then mark complete, followed without a reload");
  const channels = await ok(page, "GET", "/channels?limit=500");
  const lists = await ok(page, "GET", "/lists?limit=500");
  const customers = lists.items.find((l) => l.name === "customers");
  assert.ok(customers, "the customers list");
  const everyone = lists.items.find((l) => l.name === "everyone");
  assert.ok(everyone, "the everyone list");
  // A channel slow enough that a pause or a cancel lands while a few sends are in flight.
  let slow = channels.items.find((c) => c.name === "slow-live");
  if (!slow) {
    slow = await ok(page, "POST", "/channels", { name: "slow-live", kind: "sandbox", config: { latency_ms: 3000 }, rate_per_sec: 5 });
  }
  const members = await ok(page, "GET", `/lists/${customers.id}/members?limit=2`);
  const pair = await ok(page, "POST", "/lists", { name: "live-pair" });
  await ok(page, "POST", `/lists/${pair.id}/members`, { contact_ids: members.items.map((m) => m.id) });
  const pausedId = await campaignOn(page, "Live pause", slow.id, pair.id);
  await page.goto(`${BASE}/campaigns/${pausedId}`);
  let navigations = 0;
  const onNav = (frame) => { if (frame === page.mainFrame()) { navigations += 1; } };
  page.on("framenavigated", onNav);
  await ok(page, "POST", `/campaigns/${pausedId}/start`);
  await page.locator("#status-badge", { hasText: "Sending" }).waitFor({ timeout: 20000 });
  // Wait for the sends to be in flight (3 s each), then pause.
  for (let i = 0; i < 40; i++) {
    const s = await ok(page, "GET", `/campaigns/${pausedId}/stats`);
    if (s.counters.in_flight > 0) { break; }
    await page.waitForTimeout(50);
  }
  await ok(page, "POST", `/campaigns/${pausedId}/pause`);
  const paused = await agrees(page, pausedId, "paused campaign");
  assert.equal(paused.status, "paused");
  assert.equal(paused.outcome, null, "no outcome before the end");
  assert.equal(paused.counters.pending, 0, "the sends in flight at the pause are recorded");
  await ok(page, "POST", `/campaigns/${pausedId}/complete`);
  const completed = await agrees(page, pausedId, "marked complete", { settled: true });
  assert.equal(completed.status, "completed");
  assert.equal(completed.outcome, "succeeded");
  assert.match(await page.locator("#status-badge").textContent(), /Completed · succeeded/);
  page.off("framenavigated", onNav);
  assert.equal(navigations, 0, "the page followed pause and mark-complete without a reload");

  step("live page: cancel with sends in flight; processed stays below the total");
  const cancelId = await campaignOn(page, "Live cancel", slow.id, everyone.id);
  await page.goto(`${BASE}/campaigns/${cancelId}`);
  navigations = 0;
  page.on("framenavigated", onNav);
  await ok(page, "POST", `/campaigns/${cancelId}/start`);
  await page.locator("#status-badge", { hasText: "Sending" }).waitFor({ timeout: 20000 });
  for (let i = 0; i < 40; i++) {
    const s = await ok(page, "GET", `/campaigns/${cancelId}/stats`);
    if (s.counters.in_flight > 0) { break; }
    await page.waitForTimeout(50);
  }
  await ok(page, "POST", `/campaigns/${cancelId}/cancel`);
  const cancelled = await agrees(page, cancelId, "cancelled campaign", { settled: true });
  page.off("framenavigated", onNav);
  assert.equal(navigations, 0, "the page followed the cancel without a reload");
  assert.equal(cancelled.status, "cancelled");
  assert.equal(cancelled.outcome, "cancelled");
  assert.equal(cancelled.counters.pending, 0);
  assert.ok(cancelled.counters.cancelled > 0, "unsent messages were cancelled");
  assert.ok(cancelled.counters.processed < cancelled.total, "a cancelled campaign is not all processed");
  const bar = await shown(page);
  assert.ok(bar.overall[0] < bar.overall[1], "the overall bar is not full after a cancel");
  assert.doesNotMatch(await page.locator("#progress-summary").textContent(),
    new RegExp(`^${cancelled.total} of ${cancelled.total}`), "never 'all of the total' after a cancel");
  assert.equal(num(await page.locator("#stat-pending").textContent()), 0, "nothing shown pending after a cancel");
}
