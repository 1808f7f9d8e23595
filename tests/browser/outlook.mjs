// Checks the dashboard's demand outlook in headless Chromium (Debian's,
// through playwright-core) against the view's API.
//
//   node outlook.mjs <base-url> <token> <cluster> <family> <screenshot.png>
//
// Opens the dashboard on the cluster and family; the outlook chart must show
// the forecast line and its 80 % band, its 7-day summary must carry the API's
// tonnes, and every open alert of the API must be listed. Prints a JSON
// summary as the last line.
import { apiOf, fail, openPage } from "./common.mjs";

const [base, token, cluster, family, shot] = process.argv.slice(2);
const api = apiOf(base, token);
const t = (kg) => (kg / 1000).toLocaleString("en-US", { maximumFractionDigits: 0 });

const { browser, page } = await openPage();
try {
  await page.goto(`${base}/?token=${encodeURIComponent(token)}&cluster=${cluster}&family=${family}`);
  await page.waitForSelector("body[data-loaded=true]", { timeout: 20000 });
  await page.waitForSelector("[data-testid=outlook-band]", { timeout: 20000 }).catch(() => fail("no outlook band drawn"));
  const o = await api(`/api/v1/outlook?cluster=${cluster}&family=${family}`);
  const cell = o.outlooks[0];
  if (!cell || !cell.demand) fail("the API has no forecast: " + JSON.stringify(o));
  const points = await page.$eval("[data-testid=outlook-forecast]", (e) => e.getAttribute("points").trim().split(/\s+/).length);
  if (points !== cell.demand.point.length) fail(`the forecast line has ${points} points, the API ${cell.demand.point.length}`);
  const summary = (await page.textContent("[data-testid=outlook-summary]")).trim();
  for (const want of [t(cell.outlook.demand_kg) + " t", t(cell.outlook.remaining_kg + cell.outlook.expected_kg) + " t"]) {
    if (!summary.includes(want)) fail(`the summary ${JSON.stringify(summary)} lacks the API's ${want}`);
  }
  const shown = await page.$$eval("[data-alert]", (es) => es.map((e) => e.dataset.alert));
  const open = o.alerts.map((a) => a.alert_id);
  if (JSON.stringify(shown) !== JSON.stringify(open)) fail(`the page lists alerts ${shown}, the API ${open}`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ points, summary, alerts: shown }));
} finally {
  await browser.close();
}
