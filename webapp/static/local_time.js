// The browser's time zone goes with every request the page makes, so the
// server shows and exports dates and times on the user's own clock
// (webapp/local_time.py): a header on htmx requests (live.js adds it to its
// own), and the hidden time_zone field of forms for a plain submission. The
// date fields' upper limit is the user's today, not the server's.
"use strict";

(function () {
  function zone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (error) { return ""; }
  }

  function localToday() {
    const now = new Date();
    const pad = function (n) { return String(n).padStart(2, "0"); };
    return now.getFullYear() + "-" + pad(now.getMonth() + 1) + "-" + pad(now.getDate());
  }

  function fill(root) {
    const name = zone();
    (root || document).querySelectorAll("input[data-time-zone]").forEach(function (input) { input.value = name; });
    (root || document).querySelectorAll("input[type=date][max]").forEach(function (input) {
      if (input.max < localToday()) { input.max = localToday(); }
    });
  }

  window.privascanTimeZone = zone;
  document.addEventListener("htmx:configRequest", function (event) {
    const name = zone();
    if (name) { event.detail.headers["X-Time-Zone"] = name; }
  });
  document.addEventListener("htmx:afterSettle", function () { fill(document); });
  document.addEventListener("DOMContentLoaded", function () { fill(document); });
})();
