// Which browser a test run drives, and how it is launched.
//
// SOCKIT_BROWSER=chromium (the default) drives Debian's Chromium over the
// DevTools protocol; SOCKIT_BROWSER=firefox drives Debian's Firefox ESR over
// WebDriver BiDi (playwright-core's "moz-firefox" channel: the stock
// browser, no patched build, nothing downloaded). SOCKIT_CHROMIUM and SOCKIT_FIREFOX
// name other executables.
//
// Firefox runs in dark mode throughout (see `launch`).
//
// Over HTTPS, Chromium trusts the server's certificate by its key only
// (trust.mjs). Firefox has no such switch, so the Firefox runs are over
// plain HTTP; `launch` refuses an https:// run in Firefox rather than
// accepting any certificate.

import { chromium, firefox } from "playwright-core";
import { trustArgs } from "./trust.mjs";

/** "chromium" or "firefox". */
export const engine = (process.env.SOCKIT_BROWSER || "chromium").toLowerCase();

const executables = {
  chromium: process.env.SOCKIT_CHROMIUM || process.env.CHROMIUM || "/usr/bin/chromium",
  firefox: process.env.SOCKIT_FIREFOX || "/usr/bin/firefox-esr",
};

/** The browser's name as a failure message should give it. */
export const browserName = engine === "firefox" ? "Firefox" : "Chromium";

/** Launches the browser, headless; exits 2 on a setting it cannot honour. */
export async function launch(base) {
  if (!(engine in executables)) {
    console.error(`FAIL: SOCKIT_BROWSER=${engine}: use chromium or firefox`);
    process.exit(2);
  }
  if (engine === "firefox") {
    if (base.startsWith("https://")) {
      console.error("FAIL: the Firefox runs are over plain HTTP (Firefox cannot trust one certificate by its key)");
      process.exit(2);
    }
    return firefox.launch({
      channel: "moz-firefox",
      executablePath: executables.firefox,
      headless: true,
      firefoxUserPrefs: {
        // No updates, telemetry or first-run pages in a test.
        "app.update.disabledForTesting": true,
        "browser.shell.checkDefaultBrowser": false,
        "datareporting.policy.dataSubmissionEnabled": false,
        "toolkit.telemetry.enabled": false,
        "network.http.http3.enable": false,
        // Dark mode for the whole run: this driver cannot switch the colour
        // scheme per page (page.emulateMedia does nothing here), so Firefox
        // runs dark and Chromium light, switching to dark where a test asks.
        "layout.css.prefers-color-scheme.content-override": 0,
      },
    });
  }
  return chromium.launch({
    executablePath: executables.chromium,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...trustArgs(),
    ],
  });
}
