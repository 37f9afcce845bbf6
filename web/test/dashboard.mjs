// The dashboard page in headless Chromium (Debian's chromium, driven by playwright-core): logs
// in, reads every figure the page shows (their `data-value`s), follows the first improvement
// opportunity to its misconfigured devices and downloads their CSV, and saves a screenshot of
// each view. Prints what it read as one JSON object on stdout; the Rust test
// (crates/posture/tests/dashboard.rs) compares it with the CLI's JSON.
//
//   node web/test/dashboard.mjs URL TOKEN WRITE_TOKEN TENANT AT SCREENSHOT_DIR
//
// TOKEN reads only: the task it tries to create is refused; WRITE_TOKEN then creates a task and
// adds an exception through the page's forms.
//
// POSTURE_CHROMIUM: the browser (default /usr/bin/chromium). Exit status 1 with the reason on
// stderr when a step fails.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [url, token, writeToken, tenant, at, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node web/test/dashboard.mjs URL TOKEN WRITE_TOKEN TENANT AT SCREENSHOT_DIR");
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
  // Drops the console's "failed to load resource" lines of an expected refusal (and only those).
  const expected = (status) => {
    const kept = errors.filter((e) => !e.includes(`status of ${status}`));
    errors.splice(0, errors.length, ...kept);
  };
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  // A 429 (the tenant's request quota) is waited out and retried by the page: counted, not an error.
  out.throttled = 0;
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (/status of 429/.test(m.text())) out.throttled++;
    else errors.push(`console: ${m.text()}`);
  });

  // The login: the form, then a wrong token refused, then the right one.
  await page.goto(`${url}/#/?tenant=${encodeURIComponent(tenant)}&at=${encodeURIComponent(at)}`);
  await page.waitForSelector("#token");
  await page.screenshot({ path: join(shots, "dashboard-login.png") });
  await page.fill("#token", "not-a-token-of-the-file");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#status.error");
  out.refused = await page.textContent("#status");
  // The refusal's 401 is the console error this step expects; any other error counts.
  expected(401);
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
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="recommendation"]')].every((r) => r.querySelector('[data-testid="whatif"]')));
  out.recommendations = await page.$$eval('[data-testid="recommendation"]', (rows) =>
    rows.map((r) => ({
      control: r.dataset.control,
      points_gained: Number(r.querySelector('[data-testid="points-gained"]').dataset.value),
      misconfigured: r.querySelector('[data-testid="misconfigured"]').dataset.value,
      text: r.querySelector('[data-testid="points-gained"]').textContent,
      whatif: Number(r.querySelector('[data-testid="whatif"]').dataset.value),
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

  // The filters: category os and remediation software_update, by keyboard-reachable selects.
  // Drawn: the grid shows the URL's view, and no tile is loading.
  const drawn = () =>
    page.waitForFunction(() => {
      const grid = document.querySelector(".grid");
      return grid && grid.dataset.view === location.hash && !document.querySelector('[aria-busy="true"]');
    });
  await page.selectOption("#f-category", "os");
  await page.waitForFunction(() => location.hash.includes("category=os"));
  await drawn();
  await page.selectOption("#f-remediation", "software_update");
  await page.waitForFunction(() => location.hash.includes("remediation=software_update"));
  await drawn();
  out.filtered = await page.$$eval('[data-testid="recommendation"]', (rows) => rows.map((r) => r.dataset.control));
  await page.selectOption("#f-category", "");
  await page.selectOption("#f-remediation", "");
  await page.waitForFunction(() => !location.hash.includes("category=") && !location.hash.includes("remediation="));
  await drawn();

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
  await page.screenshot({ path: join(shots, "dashboard-devices.png") }); // the window: the lists are long
  out.detail = {
    points_gained: Number(await value("detail-points-gained")),
    misconfigured: await value("detail-misconfigured"),
    vulnerabilities: await page.textContent('[data-testid="vulnerabilities"]'),
    check: await page.textContent('[data-testid="check"]'),
    remediation: await page.textContent('[data-testid="remediation"]'),
    remediation_text: await page.textContent('[data-testid="remediation-text"]'),
    rationale: await page.textContent('[data-testid="rationale"]'),
  };

  // A read token: the task is refused, with the server's reason.
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
  await page.fill("#task-due", tomorrow);
  await page.fill("#task-notes", "refused: read-only token");
  await page.click('[data-testid="task-form"] button[type="submit"]');
  await page.waitForSelector("#status.error");
  out.read_refused = await page.textContent("#status");
  out.read_tasks = await page.$$eval('[data-testid="task"]', (rows) => rows.length);
  expected(403); // the refusal's 403 in the console

  // A write token: log out, log in again, create a task and add an exception on the same control.
  await page.click("#logout");
  await page.waitForSelector("#token");
  await page.fill("#token", writeToken);
  await page.keyboard.press("Enter");
  await page.waitForSelector('[data-testid="score-percent"]');
  await page.goto(`${url}/#/control/${encodeURIComponent(out.opportunity.control)}?tenant=${encodeURIComponent(tenant)}&at=${encodeURIComponent(at)}`);
  await page.waitForSelector('[data-testid="task-form"]');
  await page.fill("#task-due", tomorrow);
  await page.selectOption("#task-priority", "high");
  await page.fill("#task-notes", "patch the finance laptops first");
  await page.click('[data-testid="task-form"] button[type="submit"]');
  await page.waitForFunction(() => /created|not created/.test(document.querySelector("#status").textContent));
  await page.waitForSelector('[data-testid="task"]');
  out.task_status = await page.textContent("#status");
  out.tasks = await page.$$eval('[data-testid="task"]', (rows) => rows.map((r) => r.dataset.id));
  const [tasksCsv] = await Promise.all([page.waitForEvent("download"), page.click('[data-testid="export-tasks"]')]);
  const tasksPath = join(shots, "dashboard-tasks.csv");
  await tasksCsv.saveAs(tasksPath);
  out.tasks_csv = { name: tasksCsv.suggestedFilename(), text: readFileSync(tasksPath, "utf8") };
  await page.selectOption("#exc-scope", "tenant");
  await page.selectOption("#exc-justification", "risk_accepted");
  await page.fill("#exc-note", "legacy kiosks, replaced in Q1");
  await page.click('[data-testid="exception-form"] button[type="submit"]');
  await page.waitForFunction(() => /added|not added/.test(document.querySelector("#status").textContent));
  await page.waitForSelector('[data-testid="exception"]');
  out.exception_status = await page.textContent("#status");
  out.exceptions = await page.$$eval('[data-testid="exception"]', (rows) => rows.map((r) => r.dataset.id));
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, "dashboard-recommendation.png") }); // the window: the lists are long

  // One device of the list: its controls with the evidence.
  await page.click('[data-testid="device-link"]');
  await page.waitForSelector('[data-testid="device-control"]');
  out.device = {
    id: await page.$eval("#h-device code", (e) => e.textContent),
    percent: Number(await value("device-percent")),
    controls: await page.$$eval('[data-testid="device-control"]', (rows) => rows.map((r) => [r.dataset.control, r.dataset.state])),
  };
  await page.screenshot({ path: join(shots, "dashboard-device.png") }); // the window: the lists are long
  out.errors = errors;
} catch (e) {
  // What the page said, and how it looked, when the step failed.
  const page = browser.contexts()[0]?.pages()[0];
  const said = page ? await page.textContent("#status").catch(() => "") : "";
  if (page) await page.screenshot({ path: join(shots, "dashboard-failure.png"), fullPage: true }).catch(() => {});
  console.error(`dashboard test: ${e.stack || e}\nthe page's status line: ${said}\nits URL: ${page?.url()}\nscreenshot: ${join(shots, "dashboard-failure.png")}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(out));
