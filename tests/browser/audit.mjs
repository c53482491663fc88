// Every dashboard page at a desktop's width (1280 px) and a phone's (390 px): no sideways
// scroll at 390 px, and axe-core (WCAG 2.1 A and AA rules) finds no violation at either
// width. Pages that only exist after an action (a form returned with errors, an import
// report, a key shown once, an open confirmation dialog, the signed-out sign-in page) are
// reached by doing the action. Called once by dashboard.mjs, signed in as an owner, after
// its campaigns have run. Also checks the focus rules the audit cannot see: a dialog opens
// on its safe choice, a form returned with errors focuses its error summary, and sign-in
// errors are tied to their fields.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";

const WIDTHS = [
  { width: 1280, height: 900 },
  { width: 390, height: 844 },
];
const TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/// Loads axe-core into the page. `page.evaluate` is not subject to the page's
/// Content-Security-Policy (a script tag would be), so the policy stays as it is served.
async function injectAxe(page, source) {
  const present = await page.evaluate(() => typeof window.axe === "object");
  if (!present) {
    await page.evaluate(source);
  }
}

/// Violations of the WCAG 2.1 AA rules on the page as it is now, one line each.
async function violations(page, source) {
  await injectAxe(page, source);
  const found = await page.evaluate(async (tags) => {
    const result = await window.axe.run(document, {
      runOnly: { type: "tag", values: tags },
      resultTypes: ["violations"],
    });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => `${n.target.join(" ")}: ${n.failureSummary.replace(/\s+/g, " ")}`),
    }));
  }, TAGS);
  return found.map((v) => `${v.id} (${v.impact}): ${v.help}\n      ${v.nodes.join("\n      ")}`);
}

/// How many pixels the page is wider than the window (0 when it fits): as it is, and with
/// every table that sits in a scroll box (`.table-wrap`) made twice as wide as the window,
/// as long data makes it. Whatever is inside a scroll box must scroll with it, never widen
/// the page: a visually-hidden column heading positioned outside its box did, but only once
/// the table was wide enough to put that column past the screen.
async function overflow(page) {
  return page.evaluate(() => {
    const wider = () => document.scrollingElement.scrollWidth - window.innerWidth;
    const asIs = wider();
    const scrolls = (e) => ["auto", "scroll"].includes(getComputedStyle(e).overflowX);
    const boxed = [...document.querySelectorAll("table")].filter((t) => {
      for (let e = t.parentElement; e; e = e.parentElement) { if (scrolls(e)) { return true; } }
      return false;
    });
    const saved = boxed.map((t) => t.style.minWidth);
    boxed.forEach((t) => { t.style.minWidth = `${2 * window.innerWidth}px`; });
    const stretched = wider();
    boxed.forEach((t, i) => { t.style.minWidth = saved[i]; });
    return { asIs, stretched, tables: boxed.length };
  });
}

/// Clicks `submit` with its form's browser validation off, so that the server's errors come
/// back (a person whose browser does not check gets the same page).
async function submitUnchecked(page, submit) {
  await page.evaluate((sel) => { document.querySelector(sel).closest("form").noValidate = true; }, submit);
  const navigated = page.waitForEvent("framenavigated", {
    predicate: (frame) => frame === page.mainFrame(),
    timeout: 20000,
  });
  await page.click(submit);
  await navigated;
  await page.waitForLoadState("load");
}

async function openDetails(page, inner) {
  const details = page.locator("details", { has: page.locator(inner) });
  if (await details.getAttribute("open") === null) { await details.locator("summary").click(); }
}

/// Chooses the first option of a select that has a value.
async function chooseFirst(page, select) {
  const value = await page.locator(`${select} option`).evaluateAll(
    (options) => (options.find((o) => o.value) || {}).value,
  );
  assert.ok(value, `${select} has no option to choose`);
  await page.selectOption(select, value);
}

async function activeMatches(page, selector) {
  return page.evaluate((sel) => Boolean(document.activeElement && document.activeElement.matches(sel)), selector);
}

/// Every page, each prepared by `open(page)`: a URL to visit, or an action.
function pages({ base, fixtures, completedUrl, stuckUrl, bigUrl, linkUrl, receiver, flakyPath }) {
  const visit = (url) => async (page) => { await page.goto(url); };
  let draftUrl = "";
  return [
    { name: "campaigns", open: visit(`${base}/campaigns`) },
    { name: "campaigns, filtered", open: visit(`${base}/campaigns?status=completed`) },
    { name: "campaign, completed", open: visit(completedUrl) },
    { name: "campaign with link clicks", open: visit(linkUrl) },
    { name: "inbox", open: visit(`${base}/inbox`) },
    { name: "inbox conversation", open: visit(`${base}/inbox/thread?address=%2B15550100000`) },
    { name: "campaign, stuck", open: async (page) => {
      await page.goto(stuckUrl);
      await page.locator("#stuck-banner").waitFor({ state: "visible", timeout: 30000 });
    } },
    { name: "campaign, cancelled", open: visit(bigUrl) },
    { name: "campaign, messages filtered", open: visit(`${completedUrl}?status=skipped`) },
    { name: "cancel confirmation, not allowed", open: visit(`${completedUrl}/cancel`) },
    { name: "campaign with the Resend dialog open", open: async (page) => {
      await page.goto(completedUrl);
      await page.click("#action-resend");
      await page.locator("#dialog-resend").waitFor({ state: "visible", timeout: 5000 });
    } },
    { name: "resend confirmation page", open: visit(`${completedUrl}/resend`) },
    { name: "new campaign", open: visit(`${base}/campaigns/new`) },
    { name: "new campaign returned with errors", open: async (page) => {
      await page.goto(`${base}/campaigns/new`);
      await submitUnchecked(page, "#create-button");
      await page.locator("[data-error-summary]").waitFor();
      assert.ok(await activeMatches(page, "[data-error-summary]"),
        "a form returned with errors focuses its error summary");
    } },
    { name: "draft campaign with the Start dialog open", open: async (page) => {
      await page.goto(`${base}/campaigns/new`);
      await page.fill("#name", "Audit draft");
      await chooseFirst(page, "#list_id");
      await chooseFirst(page, "#channel_id");
      await page.check('input[name="when"][value="draft"]');
      const navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
      await page.click("#create-button");
      await navigated;
      await page.waitForLoadState("load");
      draftUrl = page.url();
      await page.click("#action-start");
      await page.locator("#dialog-start").waitFor({ state: "visible", timeout: 5000 });
      assert.ok(await activeMatches(page, "#dialog-start [data-close]"),
        "the Start dialog opens with focus on Go back, not on Start");
    } },
    { name: "editor of a draft", open: async (page) => {
      assert.ok(draftUrl, "the draft campaign was created");
      await page.goto(`${draftUrl}/edit`);
    } },
    { name: "estimate of a draft", open: async (page) => {
      assert.ok(draftUrl, "the draft campaign was created");
      await page.goto(`${draftUrl}/estimate`);
    } },
    { name: "start confirmation page", open: async (page) => {
      assert.ok(draftUrl, "the draft campaign was created");
      await page.goto(`${draftUrl}/start`);
    } },
    { name: "contacts", open: visit(`${base}/contacts`) },
    { name: "contacts, searched", open: visit(`${base}/contacts?q=Customer`) },
    { name: "contacts import report", open: async (page) => {
      await page.goto(`${base}/contacts`);
      await openDetails(page, "#import-file");
      await page.setInputFiles("#import-file", path.join(fixtures, "customers.csv"));
      await page.fill("#import-list", "customers");
      const navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
      await page.click('form[action="/contacts/import"] button[type=submit]');
      await navigated;
      await page.waitForLoadState("load");
      await page.locator("#report-title").waitFor();
    } },
    { name: "lists", open: visit(`${base}/lists`) },
    { name: "a list", open: async (page) => {
      await page.goto(`${base}/lists`);
      await page.locator("tbody a").first().click();
      await page.waitForLoadState("load");
    } },
    { name: "suppressions", open: visit(`${base}/suppressions`) },
    { name: "channels", open: visit(`${base}/channels`) },
    { name: "channel form returned with errors", open: async (page) => {
      await page.goto(`${base}/channels`);
      await openDetails(page, "#channel-form");
      await page.fill("#ch-name", "audit");
      await page.fill("#ch-sandbox-fail_rate", "7");
      await submitUnchecked(page, "#channel-form button[type=submit]");
      await page.locator("#ch-sandbox-fail_rate-error").waitFor();
      assert.ok(await activeMatches(page, "[data-error-summary]"),
        "the channel form returned with errors focuses its error summary");
    } },
    { name: "webhooks", open: visit(`${base}/webhooks`) },
    { name: "webhook form returned with errors", open: async (page) => {
      await page.goto(`${base}/webhooks`);
      await openDetails(page, "#webhook-form");
      // A link-local destination (the cloud metadata address): the outbound guard refuses
      // it, named next to the URL. (The test's server allows loopback only, for its receiver.)
      await page.fill("#wh-url", "http://169.254.169.254/latest/meta-data");
      await submitUnchecked(page, "#webhook-form button[type=submit]");
      await page.locator("#wh-url-error").waitFor();
      assert.ok(await activeMatches(page, "[data-error-summary]"),
        "the webhook form returned with errors focuses its error summary");
    } },
    { name: "a new webhook endpoint, its secret shown once", open: async (page) => {
      await page.goto(`${base}/webhooks`);
      await openDetails(page, "#webhook-form");
      // The test's receiver on loopback (allowed by the test server's outbound_allow_cidrs),
      // so the test event below is really delivered, and nothing leaves the machine.
      await page.fill("#wh-url", `${receiver}/hook`);
      await page.fill("#wh-description", "audit");
      const navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
      await page.click("#webhook-form button[type=submit]");
      await navigated;
      await page.waitForLoadState("load");
      await page.locator("#secret-value").waitFor();
    } },
    { name: "a webhook endpoint with a test event in its delivery log", open: async (page) => {
      await page.goto(`${base}/webhooks`);
      await page.locator("tbody a").first().click();
      await page.waitForLoadState("load");
      const navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
      await page.locator("button", { hasText: "Send a test event" }).click();
      await navigated;
      await page.waitForLoadState("load");
      await page.locator("td", { hasText: "webhook.test" }).first().waitFor();
    } },
    { name: "a webhook endpoint with several attempts, failed ones with a long error and answer", open: async (page) => {
      // The receiver's flaky path drops the first attempt of each delivery (an error naming
      // the long URL), answers the second with a 500 and a long body without spaces (the
      // excerpt), and the third with a 200: three test events make nine attempts, six failed.
      await page.goto(`${base}/webhooks`);
      await openDetails(page, "#webhook-form");
      await page.fill("#wh-url", `${receiver}${flakyPath}`);
      await page.fill("#wh-description", "flaky receiver");
      let navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
      await page.click("#webhook-form button[type=submit]");
      await navigated;
      await page.waitForLoadState("load");
      await page.locator("#secret-value").waitFor();
      await page.goto(`${base}/webhooks`);
      await page.locator("tbody tr", { hasText: "flaky receiver" }).locator("a").first().click();
      await page.waitForLoadState("load");
      const endpointUrl = page.url();
      for (let i = 0; i < 3; i++) {
        navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
        await page.locator("button", { hasText: "Send a test event" }).click();
        await navigated;
        await page.waitForLoadState("load");
      }
      // The page does not update itself: reload until every delivery has settled.
      const deadline = Date.now() + 30000;
      for (;;) {
        await page.goto(endpointUrl);
        const delivered = await page.locator("tbody .badge.completed").count();
        const failedAttempts = await page.locator("tbody td div", { hasText: /HTTP 500|error sending request/ }).count();
        if (delivered === 3 && failedAttempts === 6) { break; }
        assert.ok(Date.now() < deadline,
          `the flaky endpoint's 3 deliveries settle with 6 failed attempts within 30 s (${delivered} delivered, ${failedAttempts} failed attempts)`);
        await page.waitForTimeout(300);
      }
    } },
    { name: "delete webhook confirmation dialog", open: async (page) => {
      await page.goto(`${base}/webhooks`);
      await page.locator("tbody a").first().click();
      await page.waitForLoadState("load");
      await page.locator("button", { hasText: "Delete" }).first().click();
      await page.locator("#confirm-dialog-yes").waitFor({ state: "visible" });
      assert.ok(await activeMatches(page, "dialog[open] [data-close]"),
        "the delete dialog opens with focus on Go back");
    } },
    { name: "API keys", open: visit(`${base}/api-keys`) },
    { name: "a new API key, shown once", open: async (page) => {
      await page.goto(`${base}/api-keys`);
      await page.fill("#key-name", "audit");
      await page.click("form[action='/api-keys'] button");
      await page.locator("#secret-value").waitFor();
    } },
    { name: "revoke confirmation dialog", open: async (page) => {
      await page.goto(`${base}/api-keys`);
      await page.locator("button", { hasText: "Revoke" }).first().click();
      await page.locator("#confirm-dialog-yes").waitFor({ state: "visible" });
      assert.ok(await activeMatches(page, "dialog[open] [data-close]"),
        "the revoke dialog opens with focus on Go back");
    } },
    { name: "users", open: visit(`${base}/users`) },
    { name: "system", open: visit(`${base}/system`) },
    { name: "a page that does not exist", open: visit(`${base}/no-such-page`) },
    // Alerts on the System page (dashboard.mjs set two recipients and the quick channel,
    // and sent a test alert).
    { name: "system, alert settings form open", open: async (page) => {
      await page.goto(`${base}/system/alerts`);
      await page.locator("#alert-settings-form").waitFor({ state: "visible" });
    } },
    { name: "alert settings form returned with errors", open: async (page) => {
      await page.goto(`${base}/system/alerts`);
      await page.fill("#al-recipients", "ops@example.org\nnot an address");
      await page.fill("#al-threshold", "");
      await submitUnchecked(page, "#alert-settings-form button[type=submit]");
      await page.locator("#al-recipients-error").waitFor();
      assert.match(await page.locator("#al-recipients-error").textContent(), /not an address/);
      assert.ok(await activeMatches(page, "[data-error-summary]"),
        "the alert settings form returned with errors focuses its error summary");
    } },
    { name: "system with an undeliverable alert (no alert channel)", open: async (page) => {
      await page.goto(`${base}/system/alerts`);
      await page.selectOption("#al-channel_id", "");
      await page.selectOption("#al-fallback_channel_id", "");
      const saved = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
      await page.click("#alert-settings-form button[type=submit]");
      await saved;
      await page.waitForLoadState("load");
      await page.locator("#alerts-no-channel").waitFor();
      const sent = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
      await page.click("#send-test-alert");
      await sent;
      await page.waitForLoadState("load");
      const undeliverable = page.locator("#latest-alerts .badge", { hasText: "Undeliverable" });
      const deadline = Date.now() + 30000;
      while (await undeliverable.count() < 2) {
        assert.ok(Date.now() < deadline, "the test alerts without a channel are undeliverable within 30 s");
        await new Promise((resolve) => setTimeout(resolve, 300));
        await page.reload();
      }
      assert.match(await page.locator("#latest-alerts .error-text").first().textContent(), /no alert channel is set/);
    } },
  ];
}

/// The sign-in page as a visitor sees it, then after a wrong password; the session's
/// cookies are put back afterwards.
async function signedOutPages(page, base, email, check) {
  const context = page.context();
  const cookies = await context.cookies();
  await context.clearCookies();
  try {
    await page.goto(`${base}/login`);
    await check("sign-in");
    await page.fill("#email", email);
    await page.fill("#password", "not the password at all");
    const navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
    await page.click("form button[type=submit]");
    await navigated;
    await page.waitForLoadState("load");
    await page.locator("#login-error").waitFor();
    for (const field of ["#email", "#password"]) {
      assert.equal(await page.locator(field).getAttribute("aria-invalid"), "true", `${field} is marked invalid`);
      assert.match(await page.locator(field).getAttribute("aria-describedby") || "", /login-error/,
        `${field} is described by the sign-in error`);
    }
    assert.ok(await activeMatches(page, "#login-error"), "the sign-in error has the focus");
    await check("sign-in, wrong password");
  } finally {
    await context.clearCookies();
    await context.addCookies(cookies);
  }
}

/// Audits every page at both widths; fails with every problem found, not only the first.
export async function auditEveryPage(page, options) {
  const source = fs.readFileSync(path.join(options.axeCore, "axe.min.js"), "utf8");
  const problems = [];
  const check = async (name) => {
    for (const size of WIDTHS) {
      await page.setViewportSize(size);
      if (size.width === 390) {
        const wider = await overflow(page);
        if (wider.asIs > 0) { problems.push(`${name} at 390 px: ${wider.asIs} px wider than the screen (${page.url()})`); }
        if (wider.stretched > 0) {
          problems.push(`${name} at 390 px: ${wider.stretched} px wider than the screen once its ${wider.tables} scrolled table(s) are wider than it (${page.url()})`);
        }
      }
      for (const v of await violations(page, source)) {
        problems.push(`${name} at ${size.width} px (${page.url()}): ${v}`);
      }
    }
    await page.setViewportSize(WIDTHS[0]);
  };
  for (const p of pages(options)) {
    options.step(`audit: ${p.name}`);
    await p.open(page);
    await check(p.name);
  }
  options.step("audit: the sign-in page, signed out");
  await signedOutPages(page, options.base, options.email, check);
  await page.setViewportSize(WIDTHS[0]);
  assert.deepEqual(problems, [], `accessibility or width problems:\n${problems.join("\n")}`);
}
