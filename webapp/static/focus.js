// Keyboard focus and screen-reader announcements across htmx swaps.
//
// htmx puts focus back on an element with the same id after a swap; this
// covers the rest, so focus never drops to <body>:
// - an element marked data-focus-after="#selector" (Delete) sends focus there
//   (the Undo button) once its own card is gone;
// - an element whose replacement differs (Analyze becomes the queued card,
//   then "Analyze again") is found again by its data-focus-key;
// - otherwise the nearest surviving ancestor with an id (the card, the
//   timeline) takes focus, at its data-focus-fallback element if it has one.
// A card whose state changes while it polls is announced in #announcer, a
// polite live region that stays in the page (a replaced live region is not
// reliably read). Messages get a Dismiss button's behaviour and success or
// information messages fade after a while unless the pointer or focus is on them.
"use strict";

(function () {
  // The page's words in its language (static/words.js; English when that script is missing).
  function t(text, values) { return window.privascanWords ? window.privascanWords(text, values) : text; }
  const MESSAGE_SECONDS = 12;
  const pending = new WeakMap(); // xhr -> what had focus before its swap

  function describeFocus() {
    const active = document.activeElement;
    if (!active || active === document.body) { return null; }
    const ancestors = [];
    for (let node = active.parentElement; node; node = node.parentElement) {
      if (node.id) { ancestors.push(node.id); }
    }
    return { element: active, key: active.dataset.focusKey || "", after: active.dataset.focusAfter || "", ancestors: ancestors };
  }

  function focusable(element) {
    if (!element) { return null; }
    if (element.matches("a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea, summary, [tabindex]")) {
      return element;
    }
    const inside = element.querySelector("[data-focus-fallback]");
    if (inside) { return inside; }
    element.setAttribute("tabindex", "-1"); // a region that can take focus from a script only
    return element;
  }

  // Focus parked on a stand-in (the queued card's state line) goes back to the
  // element it stood in for as soon as that returns ("Analyze again").
  let awaiting = null;

  function returnFromStandIn() {
    if (!awaiting) { return; }
    const active = document.activeElement;
    if (!active || active.id !== awaiting.standIn) { awaiting = null; return; } // the user moved on
    const back = document.querySelector('[data-focus-key="' + CSS.escape(awaiting.key) + '"]:not([disabled])');
    if (back) { awaiting = null; back.focus(); }
  }

  function restore(before) {
    const active = document.activeElement;
    if (!before || document.body.contains(before.element) || (active && active !== document.body)) {
      returnFromStandIn();
      return;
    }
    let target = null;
    if (before.after) { target = document.querySelector(before.after); }
    if (!target && before.key) {
      target = document.querySelector('[data-focus-key="' + CSS.escape(before.key) + '"]:not([disabled])');
    }
    for (let i = 0; !target && i < before.ancestors.length; i += 1) {
      target = document.getElementById(before.ancestors[i]);
    }
    target = focusable(target);
    if (target) {
      target.focus({ preventScroll: false });
      awaiting = before.key && target.id && target.dataset.focusKey !== before.key ? { key: before.key, standIn: target.id } : null;
    }
  }

  // -- announcements --------------------------------------------------------------
  function announce(text) {
    const region = document.getElementById("announcer");
    if (!region || !text) { return; }
    region.textContent = "";
    // A new text node after a tick: screen readers read a changed live region.
    window.setTimeout(function () { region.textContent = text; }, 50);
  }

  function cardState(card) {
    const state = card && card.querySelector(".state");
    if (!state) { return ""; }
    const words = state.cloneNode(true);
    words.querySelectorAll("[aria-hidden]").forEach(function (icon) { icon.remove(); });
    return words.textContent.replace(/\s+/g, " ").trim();
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    const target = event.detail.target;
    const card = target && target.matches && target.matches("article.card") ? target : null;
    pending.set(event.detail.xhr, {
      focus: describeFocus(), cardId: card ? card.id : "", cardState: cardState(card),
      // Any other swapped region that says what changed (the model status line).
      announceId: target && target.dataset && target.dataset.announceKey !== undefined ? target.id : "",
      announceKey: target && target.dataset ? target.dataset.announceKey : "",
    });
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    const before = pending.get(event.detail.xhr);
    if (!before) { return; }
    pending.delete(event.detail.xhr);
    restore(before.focus);
    if (before.cardId) {
      const card = document.getElementById(before.cardId);
      const now = cardState(card);
      if (card && now && now !== before.cardState) {
        const name = card.querySelector(".photo-name");
        announce((name ? name.textContent.trim() + ": " : "") + now);
      }
    }
    if (before.announceId) {
      const region = document.getElementById(before.announceId);
      if (region && region.dataset.announceKey !== before.announceKey) { announce(region.dataset.announce); }
    }
    scheduleMessageFading();
  });

  // -- state lines from crossing polls ---------------------------------------------
  // Every card polls on its own and each answer also refreshes the other
  // waiting cards' state lines; answers can arrive out of order, so a state
  // line older (data-seq, when it was rendered) than the one shown is dropped.
  function seqOf(element) { return element && element.dataset ? Number(element.dataset.seq || 0) : 0; }

  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    const fragment = event.detail.fragment;
    const incoming = fragment && (fragment.firstElementChild || fragment);
    if (incoming && incoming.classList && incoming.classList.contains("state") && seqOf(incoming) < seqOf(event.detail.target)) {
      event.detail.shouldSwap = false;
    }
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    const target = event.detail.target;
    if (!target || !target.matches || !target.matches("article.card")) { return; }
    const config = event.detail.requestConfig;
    if (!config || String(config.verb).toLowerCase() !== "get") { return; } // what the user asked for is always shown
    const shown = target.querySelector(".state");
    const own = /data-seq="(\d+)"/.exec(event.detail.serverResponse || ""); // the card's own state line comes first
    if (shown && own && Number(own[1]) < seqOf(shown)) { event.detail.shouldSwap = false; } // it polls again in a second
  });

  // live.js swaps frames through htmx.swap (no request events): it calls this.
  window.privascanFocus = { describe: describeFocus, restore: restore, announce: announce };

  // -- messages ---------------------------------------------------------------------
  let fadeTimer = null;

  // An action that is only possible for a while (Undo) says so when the time is over.
  function expireActions() {
    document.querySelectorAll("[data-expires-in]:not([data-expiring])").forEach(function (action) {
      action.setAttribute("data-expiring", "");
      window.setTimeout(function () {
        if (!document.body.contains(action)) { return; }
        const hadFocus = action.contains(document.activeElement);
        const note = document.createElement("span");
        note.className = "hint";
        note.tabIndex = -1;
        note.textContent = t("Undo is no longer possible.");
        action.replaceWith(note);
        if (hadFocus) { note.focus(); }
      }, Number(action.dataset.expiresIn) * 1000);
    });
  }

  function scheduleMessageFading() {
    expireActions();
    window.clearTimeout(fadeTimer);
    const area = document.getElementById("messages");
    if (!area || !area.querySelector(".message-success, .message-info")) { return; }
    fadeTimer = window.setTimeout(function fade() {
      if (area.matches(":hover") || area.contains(document.activeElement)) {
        fadeTimer = window.setTimeout(fade, 2000);
        return;
      }
      area.querySelectorAll(".message-success:not([data-keep]), .message-info:not([data-keep])").forEach(function (m) { m.remove(); });
    }, MESSAGE_SECONDS * 1000);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest("button[data-dismiss]");
    if (!button) { return; }
    const message = button.closest(".message");
    const main = document.getElementById("main");
    if (message) { message.remove(); }
    if (main) { focusable(main).focus(); }
  });

  document.addEventListener("DOMContentLoaded", scheduleMessageFading);
})();
