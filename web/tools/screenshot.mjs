// The dashboard page in headless Chromium (Debian's chromium, driven by playwright-core): logs in
// with TOKEN, opens the overview of TENANT at AT (score, categories, the hourly score over the
// day before AT, top recommendations) and saves a screenshot to FILE. scripts/demo runs it on the
// demo's data.
//
//   node web/tools/screenshot.mjs URL TOKEN TENANT AT FILE
//
// POSTURE_CHROMIUM: the browser (default /usr/bin/chromium). Exit status 1 with the reason on
// stderr when a step fails.
import { chromium } from "playwright-core";

const [url, token, tenant, at, file] = process.argv.slice(2);
if (!file) {
  console.error("usage: node web/tools/screenshot.mjs URL TOKEN TENANT AT FILE");
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
  await page.screenshot({ path: file, fullPage: true });
} catch (e) {
  console.error(`screenshot of ${url}: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
