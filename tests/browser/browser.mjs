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

/**
 * One test run: the browser, the page a failure reports on, the numbered
 * steps, the problems the page's event handlers saw, and an overall
 * deadline that closes the browser and exits 1.
 */
export class Run {
  constructor(overallMs) {
    this.browser = null;
    /** The page, kept so a failure can report what it showed. */
    this.page = null;
    this.current = "setup";
    this.stepNo = 0;
    /** Problems seen by event handlers (dialogs, console, page errors, headers). */
    this.problems = [];
    this.overall = setTimeout(async () => {
      console.error(`FAIL: overall timeout of ${overallMs / 1000} s reached during step: ${this.current}`);
      await this.close();
      process.exit(1);
    }, overallMs);
  }

  /** Launches the browser (see `launch`). */
  async launch(base) {
    this.browser = await launch(base);
    return this.browser;
  }

  /** Closes the browser, waiting at most 5 s. */
  async close() {
    if (!this.browser) return;
    const b = this.browser;
    this.browser = null;
    await Promise.race([b.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  }

  /** Fails with every problem the handlers saw, if any. */
  checkProblems() {
    if (this.problems.length) throw new Error(this.problems.join("\n  "));
  }

  /** Runs one numbered step, then checks for problems and reports it. */
  async step(title, fn) {
    this.stepNo += 1;
    this.current = `${this.stepNo}. ${title}`;
    await fn();
    this.checkProblems();
    console.log(`ok ${this.stepNo} - ${title}`);
  }

  /** The run is over: the overall deadline no longer applies. */
  done() {
    clearTimeout(this.overall);
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** A CSS attribute-selector string for any name. */
export const cssString = (s) => '"' + s.replace(/["\\]/g, "\\$&").replace(/\n/g, "\\a ") + '"';
