// Drives keel's dashboard in headless Chromium (Debian's /usr/bin/chromium) for
// crates/keel-gateway/tests/dashboard.rs. Protocol on stdout, one line each:
//   READY                  the page shows target TARGET (the test then opens its breaker)
//   OPEN_SEEN              the page shows TARGET's breaker open
//   TRANSCRIPT <json>      with KEEL_SESSION set: that session's transcript, opened from the list
//   RUNBOOK <json>         with KEEL_EXPECT_INCIDENT set: the runbook of the open incident, opened
//                          from the incidents table
//   ERRORS <json array>    console errors, page errors and failed requests, then exit
// Usage: node dashboard_test.cjs URL TARGET SCREENSHOT [API_KEY]
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.env.KEEL_NODE_MODULES, "playwright-core"));

async function main() {
  const [url, target, screenshot, key] = process.argv.slice(2);
  const errors = [];
  const browser = await chromium.launch({
    executablePath: process.env.KEEL_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext(key ? { httpCredentials: { username: "dashboard", password: key } } : {});
    const page = await context.newPage();
    page.on("console", (message) => { if (message.type() === "error") errors.push("console: " + message.text()); });
    page.on("pageerror", (error) => errors.push("page: " + error.message));
    page.on("requestfailed", (request) => {
      // The event stream is cut when the page closes: not a failure of the page.
      if (!request.url().endsWith("/keel/ui/events")) errors.push("request: " + request.url() + " " + request.failure().errorText);
    });
    page.on("response", (response) => { if (response.status() >= 400) errors.push(`response: ${response.status()} ${response.url()}`); });
    await page.goto(url, { waitUntil: "load" });
    const row = `#targets tr[data-target="${target}"]`;
    await page.waitForSelector(row, { timeout: 10000 });
    await page.waitForSelector("#live.live", { timeout: 10000 });
    // The last hours, drawn from the store's per-minute samples.
    await page.waitForSelector('#timeline .rate[data-timeline="requests"] polyline', { timeout: 10000 });
    console.log("READY");
    await page.waitForSelector(`${row}[data-breaker="open"]`, { timeout: 10000 });
    console.log("OPEN_SEEN");
    await page.waitForSelector(`#events li[data-target="${target}"]`, { timeout: 10000 });
    // The session the test made is listed; clicking it shows its transcript.
    if (process.env.KEEL_SESSION) {
      const session = `#sessions tr[data-session="${process.env.KEEL_SESSION}"]`;
      await page.waitForSelector(session, { timeout: 10000 });
      await page.click(session);
      await page.waitForSelector("#transcript .message[data-seq]", { timeout: 10000 });
      const transcript = await page.textContent("#transcript");
      console.log("TRANSCRIPT " + JSON.stringify(transcript));
    }
    if (process.env.KEEL_EXPECT_INCIDENT) {
      const incident = "#incidents tr[data-incident]";
      await page.waitForSelector(incident, { timeout: 10000 });
      await page.click(incident);
      // Rendered: headings and the steps' commands as code blocks, not Markdown text.
      await page.waitForSelector("#runbook h3", { timeout: 15000 });
      const rendered = await page.evaluate(() => ({
        headings: [...document.querySelectorAll("#runbook h3, #runbook h4")].map((h) => h.textContent),
        commands: [...document.querySelectorAll("#runbook ol pre code")].map((c) => c.textContent),
        text: document.querySelector("#runbook").textContent,
      }));
      console.log("RUNBOOK " + JSON.stringify(rendered));
    }
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: screenshot, fullPage: true });
  } catch (error) {
    errors.push("driver: " + error.message);
  } finally {
    await browser.close();
  }
  console.log("ERRORS " + JSON.stringify(errors));
}

main().catch((error) => {
  console.log("ERRORS " + JSON.stringify(["driver: " + error.message]));
  process.exit(1);
});
