// The dashboard page in headless Chromium (Debian's chromium, driven by playwright-core): logs in
// with the token in POSTURE_TOKEN (not an argument: argv is visible to every user), opens the
// overview of TENANT at AT (score, categories, the hourly score over the day before AT, top
// recommendations) and saves a screenshot to FILE. scripts/demo runs it on the demo's data.
//
//   POSTURE_TOKEN=... node web/tools/screenshot.mjs URL TENANT AT FILE
//
// POSTURE_CHROMIUM: the browser (default /usr/bin/chromium). Exit status 1 with the reason on
// stderr when a step fails.
import { chromium } from "playwright-core";

const [url, tenant, at, file] = process.argv.slice(2);
const token = process.env.POSTURE_TOKEN;
if (!file || !token) {
  console.error("usage: POSTURE_TOKEN=... node web/tools/screenshot.mjs URL TENANT AT FILE");
  process.exit(2);
}
const executablePath = process.env.POSTURE_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  await page.goto(`${url}/#/?tenant=${encodeURIComponent(tenant)}&at=${encodeURIComponent(at)}`);
  await page.waitForSelector("#token");
  await page.fill("#token", token);
  await page.keyboard.press("Enter");
  await page.waitForSelector('[data-testid="score-percent"]');
  await page.waitForSelector('[data-testid="history-chart"] canvas');
  await page.waitForFunction(() => !document.querySelector('[aria-busy="true"]'));
  // Each recommendation's "score if fixed" (a what-if request of its own).
  await page.waitForFunction(() =>
    [...document.querySelectorAll('[data-testid="recommendation"]')].every((r) => r.querySelector('[data-testid="whatif"]')),
  );
  await page.screenshot({ path: file, fullPage: true });
} catch (e) {
  console.error(`screenshot of ${url}: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
