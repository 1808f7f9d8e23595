// Drives the operators' dashboard in headless Chromium (Debian's, through
// playwright-core) and checks it against the view's API.
//
//   node dashboard.mjs <base-url> <token> <expected-allocation-id> <screenshot.png>
//
// 1. Loads the dashboard with the token; waits until it has rendered data.
// 2. Checks the figures it shows against the API's answers for the same cluster.
// 3. Prints "READY <hub allocations>" and waits for the allocation the caller
//    is about to cause: the page must show it (live, through SSE) without a reload.
// 4. Saves a screenshot and prints a JSON summary as the last line.
import { chromium } from "playwright-core";

const [base, token, expected, shot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const fail = (msg) => { console.error("FAIL " + msg); process.exit(1); };

const api = async (path) => {
  const r = await fetch(base + path, { headers: { Authorization: "Bearer " + token } });
  if (!r.ok) fail(`${path}: ${r.status}`);
  return r.json();
};
const tonnes = (kg) => (kg / 1000).toLocaleString("en-US", { maximumFractionDigits: 0 }) + " t";
const pct = (x) => (x == null ? "—" : (x * 100).toFixed(1) + "%");
const days = (d) => (d == null ? "—" : d.toFixed(1) + " d");

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") console.error("page: " + m.text()); });
  await page.goto(`${base}/?token=${encodeURIComponent(token)}&cluster=nanning`);
  await page.waitForSelector("body[data-loaded=true]", { timeout: 20000 });

  // The page shows what the API returns (nothing changes meanwhile: the caller waits for READY).
  const detail = await api("/api/v1/clusters/nanning");
  const clusters = await api("/api/v1/clusters");
  const hubAllocations = clusters.clusters.reduce((s, c) => s + c.totals.allocations, 0);
  const text = async (id) => (await page.textContent(`[data-testid=${id}]`)).trim();
  const checks = {
    "allocations-count": String(hubAllocations),
    "open-demand": tonnes(detail.totals.open_demand_kg),
    "fill-rate": pct(detail.totals.fill_rate),
    "shared": `${detail.totals.shared_out} / ${detail.totals.shared_in}`,
    "stock": `${tonnes(detail.totals.stock_on_hand_kg).replace(" t", "")} / ${tonnes(detail.totals.stock_reserved_kg)}`,
    "days-of-cover": days(detail.totals.days_of_cover),
  };
  if (!(detail.totals.stock_on_hand_kg > 0)) fail("the API shows no stock in Nanning: " + JSON.stringify(detail.totals));
  for (const [id, want] of Object.entries(checks)) {
    const got = await text(id);
    if (got !== want) fail(`${id}: the page shows ${JSON.stringify(got)}, the API says ${JSON.stringify(want)}`);
  }
  const tabs = await page.$$eval("nav button", (bs) => bs.map((b) => b.textContent));
  if (!tabs.some((t) => t.includes("南宁") && t.includes("Nanning"))) fail("cluster tabs lack Chinese and English names: " + tabs);

  console.log(`READY ${hubAllocations}`);
  // Live update: the new allocation's row and the larger count, without reloading.
  await page.waitForSelector(`tr[data-allocation="${expected}"]`, { timeout: 30000 });
  await page.waitForFunction((n) => Number(document.querySelector("[data-testid=allocations-count]").textContent) > n, hubAllocations, { timeout: 30000 });
  const after = await text("allocations-count");
  const why = (await page.textContent(`tr[data-allocation="${expected}"] td.why`)).trim();
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ before: hubAllocations, after: Number(after), expected, explanation: why, checked: Object.keys(checks) }));
} finally {
  await browser.close();
}
