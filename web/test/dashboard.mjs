// The dashboard page in headless Chromium (Debian's chromium, driven by playwright-core): logs
// in, reads every figure the page shows (their `data-value`s), follows the first improvement
// opportunity to its misconfigured devices and downloads their CSV, and saves a screenshot of
// each view. Prints what it read as one JSON object on stdout; the Rust test
// (crates/posture/tests/dashboard.rs) compares it with the CLI's JSON.
//
//   node web/test/dashboard.mjs URL TOKEN TENANT AT SCREENSHOT_DIR
//
// POSTURE_CHROMIUM: the browser (default /usr/bin/chromium). Exit status 1 with the reason on
// stderr when a step fails.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [url, token, tenant, at, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node web/test/dashboard.mjs URL TOKEN TENANT AT SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const executablePath = process.env.POSTURE_CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
const out = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()}`));

  // The login: the form, then a wrong token refused, then the right one.
  await page.goto(`${url}/#/?tenant=${encodeURIComponent(tenant)}&at=${encodeURIComponent(at)}`);
  await page.waitForSelector("#token");
  await page.screenshot({ path: join(shots, "dashboard-login.png") });
  await page.fill("#token", "not-a-token-of-the-file");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#status.error");
  out.refused = await page.textContent("#status");
  // The refusal's 401 is the browser's console error of that step; from here on, none.
  errors.length = 0;
  await page.fill("#token", token);
  await page.keyboard.press("Enter");
  await page.waitForSelector('[data-testid="score-percent"]');
  await page.waitForSelector('[data-testid="history-chart"] canvas');
  await page.waitForFunction(() => !document.querySelector('[aria-busy="true"]'));
  out.tenants = await page.$$eval("#tenant option", (os) => os.map((o) => o.value));

  const value = (id) => page.getAttribute(`[data-testid="${id}"]`, "data-value");
  out.score = {
    percent: Number(await value("score-percent")),
    points: Number(await value("score-points")),
    max_points: Number(await value("score-max-points")),
    without_exceptions_percent: Number(await value("score-other-percent")),
    categories: {},
  };
  for (const c of ["application", "os", "network", "accounts", "security_controls"]) {
    const p = await page.$(`[data-testid="category-${c}-percent"]`);
    if (!p) continue;
    out.score.categories[c] = {
      percent: Number(await p.getAttribute("data-value")),
      points: Number(await value(`category-${c}-points`)),
    };
  }
  out.score.text = await page.textContent('[data-testid="score-percent"]');
  out.recommendations = await page.$$eval('[data-testid="recommendation"]', (rows) =>
    rows.map((r) => ({
      control: r.dataset.control,
      points_gained: Number(r.querySelector('[data-testid="points-gained"]').dataset.value),
      misconfigured: r.querySelector('[data-testid="misconfigured"]').dataset.value,
      text: r.querySelector('[data-testid="points-gained"]').textContent,
    })),
  );
  out.history_points = Number(await page.getAttribute('[data-testid="history-chart"]', "data-points"));
  // Hover the chart at three quarters of its width (inside the simulated day): the value there.
  const box = await (await page.$('[data-testid="history-chart"] .u-over')).boundingBox();
  await page.mouse.move(box.x + box.width * 0.75, box.y + box.height / 2);
  await page.waitForFunction(() => document.querySelector('[data-testid="history-hover"]').dataset.value !== undefined);
  out.hover = await page.textContent('[data-testid="history-hover"]');
  out.hover_value = await page.getAttribute('[data-testid="history-hover"]', "data-value");
  await page.screenshot({ path: join(shots, "dashboard-1280x800.png"), fullPage: true });

  // A narrow window: the same page, one column.
  await page.setViewportSize({ width: 420, height: 900 });
  await page.screenshot({ path: join(shots, "dashboard-narrow.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  // The first improvement opportunity's misconfigured devices, and their CSV.
  const link = await page.$('[data-testid="misconfigured-link"]');
  out.opportunity = {
    control: await page.$eval('[data-testid="opportunity"]', (r) => r.dataset.control),
    misconfigured: Number(await link.getAttribute("data-value")),
  };
  await link.focus();
  await page.keyboard.press("Enter"); // keyboard, not the mouse: the link is reachable so
  await page.waitForSelector('[data-testid="device-count"]');
  out.devices = await page.$$eval('[data-testid="device"]', (rows) => rows.map((r) => r.dataset.device));
  const [download] = await Promise.all([page.waitForEvent("download"), page.click('[data-testid="export-csv"]')]);
  const csvPath = join(shots, "dashboard-devices.csv");
  await download.saveAs(csvPath);
  out.csv = { name: download.suggestedFilename(), text: readFileSync(csvPath, "utf8") };
  await page.screenshot({ path: join(shots, "dashboard-devices.png"), fullPage: true });
  out.errors = errors;
} catch (e) {
  console.error(`dashboard test: ${e.stack || e}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(out));
