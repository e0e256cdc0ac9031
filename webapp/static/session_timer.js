// Warn before the session ends, and let the user keep it (WCAG 2.2.1, timing adjustable).
// A session is deleted after SESSION_IDLE_MINUTES without a request (and at its
// absolute lifetime, which cannot be extended). Two minutes before the idle
// limit a notice offers "Keep my session"; pressing it (or any other action)
// restarts the idle clock. Before the absolute end it says when that comes.
"use strict";

(function () {
  // The page's words in its language (static/words.js; English when that script is missing).
  function t(text, values) { return window.privascanWords ? window.privascanWords(text, values) : text; }
  const WARN_SECONDS = 120;
  let lastActivity = Date.now();
  let timer = null;

  function body() { return document.body; }
  function idleSeconds() { return Number(body().dataset.idleSeconds || 0); }
  function endsAt() { return Number(body().dataset.endsAt || 0) * 1000; }

  function notice() {
    let box = document.getElementById("session-warning");
    if (box) { return box; }
    box = document.createElement("div");
    box.id = "session-warning";
    box.className = "session-warning";
    box.setAttribute("role", "alertdialog");
    box.setAttribute("aria-labelledby", "session-warning-text");
    box.hidden = true;
    const text = document.createElement("p");
    text.id = "session-warning-text";
    const keep = document.createElement("button");
    keep.type = "button";
    keep.id = "session-keep";
    keep.textContent = t("Keep my session");
    box.append(text, keep);
    document.body.appendChild(box);
    return box;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString(document.documentElement.lang || [], { hour: "2-digit", minute: "2-digit" });
  }

  function show(text, offerKeep) {
    const box = notice();
    const wasHidden = box.hidden;
    box.querySelector("p").textContent = text;
    box.querySelector("button").hidden = !offerKeep;
    box.hidden = false;
    if (wasHidden && offerKeep) {
      box.dataset.returnFocus = document.activeElement && document.activeElement.id ? document.activeElement.id : "";
      box.querySelector("button").focus();
    }
  }

  function hide() {
    const box = document.getElementById("session-warning");
    if (!box || box.hidden) { return; }
    const back = box.dataset.returnFocus && document.getElementById(box.dataset.returnFocus);
    box.hidden = true;
    if (back) { back.focus(); }
  }

  function check() {
    window.clearTimeout(timer);
    if (!idleSeconds()) { return; }
    const now = Date.now();
    const idleEnd = lastActivity + idleSeconds() * 1000;
    const hardEnd = endsAt();
    const end = hardEnd && hardEnd < idleEnd ? hardEnd : idleEnd;
    const left = Math.round((end - now) / 1000);
    if (left <= 0) {
      show(t("Your session has ended and its photos were deleted from the server. Reload the page to start a new one."), false);
      return;
    }
    if (left <= WARN_SECONDS) {
      const minutes = left > 60 ? t("about %(minutes)s minutes", { minutes: Math.ceil(left / 60) }) : t("%(seconds)s seconds", { seconds: left });
      if (end === hardEnd) {
        show(t("This session reaches its time limit at %(time)s (in %(left)s) and cannot be extended: everything in it will then be deleted. Download or print what you need now.",
          { time: clock(hardEnd), left: minutes }), false);
      } else {
        show(t("Your session will end in %(left)s without activity, and everything in it will be deleted from the server.",
          { left: minutes }), true);
      }
    }
    timer = window.setTimeout(check, Math.min(15000, Math.max(1000, (left - WARN_SECONDS) * 1000)));
  }

  function activity() {
    lastActivity = Date.now();
    hide();
    check();
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful || (event.detail.xhr && event.detail.xhr.status < 500)) { activity(); }
  });
  document.addEventListener("privascan:activity", activity); // live.js: each frame answered
  document.addEventListener("click", function (event) {
    if (!event.target || event.target.id !== "session-keep") { return; }
    fetch(body().dataset.extendUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": JSON.parse(body().getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "" },
    }).then(function (response) {
      if (response.status === 204) {
        activity();
        if (window.privascanFocus) { window.privascanFocus.announce(t("Your session was extended.")); }
      } else {
        show(t("Your session had already ended. Reload the page to start a new one."), false);
      }
    });
  });
  document.addEventListener("DOMContentLoaded", check);
  // Tests (and nothing else) may shorten the clock: window.privascanSessionTimer.check().
  window.privascanSessionTimer = { check: check, lastActivity: function (ms) { if (ms !== undefined) { lastActivity = ms; } return lastActivity; } };
})();
