// What the browser checks share: failing with a message, the view's API
// with the operator token, and a page of Debian's Chromium (or $CHROMIUM)
// logging the page's console errors.
import { chromium } from "playwright-core";

export const fail = (msg) => { console.error("FAIL " + msg); process.exit(1); };

// `api(path)`: the JSON the view at `base` answers `token` for `path`; a failure fails the check.
export const apiOf = (base, token) => async (path) => {
  const r = await fetch(base + path, { headers: { Authorization: "Bearer " + token } });
  if (!r.ok) fail(`${path}: ${r.status}`);
  return r.json();
};

// Headless Chromium and one page of it; close the browser when done.
export async function openPage() {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") console.error("page: " + m.text()); });
  return { browser, page };
}
