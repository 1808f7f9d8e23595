// Drives the operators' dashboard in headless Chromium (Debian's, through
// playwright-core) and checks it against the view's API.
//
//   node dashboard.mjs <base-url> <token> <expected-allocation-id> <screenshot.png>
//
// 1. Loads the dashboard with the token; waits until it has rendered data.
// 2. Checks the figures it shows against the API's answers for the same cluster,
//    and the lane map: sites placed by their coordinates, the Baise -> Nanning
//    lane drawn with the tonnes booked on it, its row with the API's figures.
// 3. Prints "READY <hub allocations>" and waits for the allocation the caller
//    is about to cause: the page must show it (live, through SSE) without a reload.
// 4. Saves a screenshot and prints a JSON summary as the last line.
import { apiOf, fail, openPage } from "./common.mjs";

const [base, token, expected, shot] = process.argv.slice(2);
const api = apiOf(base, token);
const tonnes = (kg) => (kg / 1000).toLocaleString("en-US", { maximumFractionDigits: 0 }) + " t";
const pct = (x) => (x == null ? "—" : (x * 100).toFixed(1) + "%");
const days = (d) => (d == null ? "—" : d.toFixed(1) + " d");

const { browser, page } = await openPage();
try {
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

  // Periods: the totals say what they cover, and change with it. The page
  // opens on the last 7 days; the caller declared capacity ten days back.
  const cst = (ms) => new Date(ms + 8 * 3600e3).toISOString().slice(0, 16).replace("T", " ") + " (UTC+8)";
  const week = await api("/api/v1/clusters/nanning?period=7d");
  const all = await api("/api/v1/clusters/nanning?period=all");
  if (await text("sim-clock") !== cst(week.period.clock_ms)) fail(`the simulated clock shows ${await text("sim-clock")}, the API's clock is ${cst(week.period.clock_ms)}`);
  const declared = { week: tonnes(week.totals.in_period.declared_kg), all: tonnes(all.totals.in_period.declared_kg) };
  if (declared.week === declared.all) fail(`the last 7 days and everything declare alike (${declared.all}): the test's early capacity is missing`);
  if (await text("declared") !== declared.week) fail(`declared over 7 days: the page shows ${await text("declared")}, the API says ${declared.week}`);
  if (!(await text("period-range")).includes(cst(week.period.to_ms))) fail("the period's range is not shown: " + (await text("period-range")));
  await page.click("nav .periods button[data-period=all]");
  await page.waitForFunction((want) => document.querySelector("[data-testid=declared]").textContent.trim() === want, declared.all, { timeout: 10000 })
    .catch(async () => fail(`declared over everything: the page shows ${await text("declared")}, the API says ${declared.all}`));
  if (!(await text("period-range")).includes("全部")) fail("the range does not name the period: " + (await text("period-range")));
  await page.waitForSelector("#series circle", { timeout: 10000 }).catch(() => fail("no series drawn for the period"));
  checks["declared (7 days, then all)"] = `${declared.week} -> ${declared.all}`;

  // The carriers' lanes: the map and the table show what /api/v1/lanes says.
  const lanes = await api("/api/v1/lanes");
  const bn = lanes.lanes.find((l) => l.lane === "baise>nanning");
  if (!bn || !(bn.booked_kg > 0)) fail("the API has no bookings on baise>nanning: " + JSON.stringify(lanes.lanes));
  const sel = (attr, v) => `[${attr}="${v}"]`;
  await page.waitForSelector(`path${sel("data-lane", "baise>nanning")}`, { timeout: 10000 }).catch(() => fail("the map draws no baise>nanning lane"));
  const label = (await page.textContent(`text${sel("data-lane-label", "baise>nanning")}`)).trim();
  if (label !== tonnes(bn.booked_kg)) fail(`the lane's label shows ${JSON.stringify(label)}, the API has ${tonnes(bn.booked_kg)} booked`);
  const cell = async (f) => (await page.textContent(`tr${sel("data-lane", "baise>nanning")} td[data-f=${f}]`)).trim();
  const cny = (x) => (x == null ? "—" : x.toFixed(0));
  const row = {
    offered: tonnes(bn.offered_kg).replace(" t", ""),
    booked: tonnes(bn.booked_kg).replace(" t", ""),
    remaining: tonnes(bn.remaining_kg).replace(" t", ""),
    unbooked: `${bn.unbooked} · ${tonnes(bn.unbooked_kg)}`,
    "booked-cny": cny(bn.booked_cny_per_t),
    "planning-cny": cny(bn.planning_cny_per_t),
  };
  for (const [f, want] of Object.entries(row)) {
    const got = await cell(f);
    if (got !== want) fail(`lane baise>nanning, ${f}: the page shows ${JSON.stringify(got)}, the API says ${JSON.stringify(want)}`);
  }
  // Sites where their coordinates put them: every site drawn, Baise west of
  // Nanning, Fangchenggang (the coast) south of it, Hechi north.
  const sites = lanes.clusters.reduce((n, c) => n + c.sites.length, 0);
  if ((await page.$$("#lane-map circle[data-site]")).length !== sites) fail(`the map draws ${(await page.$$("#lane-map circle[data-site]")).length} sites, the topology has ${sites}`);
  const pos = async (c) => page.$eval(`#lane-map text${sel("data-cluster-label", c)}`, (e) => [Number(e.getAttribute("x")), Number(e.getAttribute("y"))]);
  const [b, n, f, h] = [await pos("baise"), await pos("nanning"), await pos("fangchenggang"), await pos("hechi")];
  if (!(b[0] < n[0] && f[1] > n[1] && h[1] < n[1])) fail(`clusters misplaced: baise ${b}, nanning ${n}, fangchenggang ${f}, hechi ${h}`);
  checks["lane baise>nanning"] = `${label} booked; ${JSON.stringify(row)}`;

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
