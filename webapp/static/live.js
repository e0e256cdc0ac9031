// PrivaScan live scan: the camera, the frame loop, the figures and spoken alerts.
// Frames are downscaled JPEGs sent one at a time: the next frame is grabbed
// from the video only when the previous answer has arrived, so the newest
// frame always wins, stale ones are never sent and a slow server never builds
// a backlog. Speech uses the browser's own speechSynthesis: nothing leaves
// this machine except frames to our own server.
"use strict";

(function () {
  // The page's words in its language (static/words.js; English when that script is missing).
  function t(text, values) { return window.privascanWords ? window.privascanWords(text, values) : text; }
  const MAX_SIDE = 640; // longest side of a frame, in pixels
  const QUALITY = 0.8; // JPEG quality
  const MIN_INTERVAL_MS = 66; // at most ~15 frames per second, even on a fast server
  const BACKOFF_MS = 2000; // after "busy" answers or a lost connection
  const FPS_WINDOW_MS = 3000; // achieved frames per second over the last three seconds

  let stream = null;
  let running = false;
  let inFlight = false;
  let timer = null;
  let generation = 0; // bumped on every start/stop: an answer to an older run is dropped
  let completed = []; // times (ms) at which answers arrived, for the fps figure
  let latencies = []; // the last few round trips, for an average
  const seen = new Set(); // alert ids already shown (spoken or not)

  function $(id) { return document.getElementById(id); }
  function panel() { return $("live-panel"); }

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
    } catch (error) {
      return "";
    }
  }

  function status(text) {
    const element = $("live-status");
    if (element) { element.textContent = text; }
  }

  // htmx also performs the out-of-band swaps (the alert log, the messages) and
  // processes hx- attributes; focus is kept as for any other swap (focus.js).
  function swap(selector, html) {
    if (!document.querySelector(selector)) { return; }
    const focus = window.privascanFocus ? window.privascanFocus.describe() : null;
    window.htmx.swap(selector, html, { swapStyle: "outerHTML", swapDelay: 0, settleDelay: 0 });
    if (focus) { window.privascanFocus.restore(focus); }
  }

  // An error answer carries only the message, out of band: nothing else is replaced.
  function showMessage(html) {
    window.htmx.swap("#messages", html, { swapStyle: "none", swapDelay: 0, settleDelay: 0 });
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-CSRF-Token": csrfToken(), "HX-Request": "true", "X-Time-Zone": window.privascanTimeZone ? window.privascanTimeZone() : "" },
    });
  }

  function setButtons(on) {
    const start = $("live-start");
    const stop = $("live-stop");
    if (start) { start.disabled = on; }
    if (stop) { stop.disabled = !on; }
  }

  // -- figures -----------------------------------------------------------------
  function showFigures(latencyMs) {
    const now = performance.now();
    completed.push(now);
    completed = completed.filter(function (t) { return now - t <= FPS_WINDOW_MS; });
    latencies.push(latencyMs);
    if (latencies.length > 10) { latencies.shift(); }
    const fps = $("live-fps");
    if (fps && completed.length >= 2) {
      const span = (completed[completed.length - 1] - completed[0]) / 1000;
      fps.textContent = span > 0 ? ((completed.length - 1) / span).toFixed(1) : "–";
    }
    const latency = $("live-latency");
    if (latency) {
      const mean = latencies.reduce(function (a, b) { return a + b; }, 0) / latencies.length;
      latency.textContent = Math.round(latencyMs) + " ms (average " + Math.round(mean) + " ms)";
    }
    const result = $("live-result");
    const count = $("live-count");
    if (count && result && result.dataset.frameNumber) { count.textContent = result.dataset.frameNumber; }
  }

  // "Explain this frame": only with a crop to explain, and for the active alert when there is one.
  function updateExplainButton() {
    const button = $("live-explain-button");
    const result = $("live-result");
    if (!button || !result) { return; }
    if (button.classList.contains("htmx-request")) { return; } // htmx re-enables it when its answer arrives
    button.disabled = result.dataset.explainable !== "1";
    const condition = result.dataset.explainCondition || "";
    button.setAttribute("hx-vals", JSON.stringify(condition ? { condition_id: condition } : {}));
    button.textContent = condition ? t("Explain this frame (%(condition)s alert)", { condition: result.dataset.explainLabel }) : t("Explain this frame");
  }

  // -- speech --------------------------------------------------------------------
  function announceNewAlerts() {
    const speech = $("live-speech");
    const speak = speech && speech.checked && "speechSynthesis" in window;
    document.querySelectorAll("#live-result [data-alert-id]").forEach(function (element) {
      const id = element.dataset.alertId;
      if (seen.has(id)) { return; }
      seen.add(id);
      if (speak && element.dataset.speak) {
        const utterance = new SpeechSynthesisUtterance(element.dataset.speak);
        utterance.lang = document.documentElement.lang || "en"; // the page's language, not the browser's
        window.speechSynthesis.speak(utterance);
      }
    });
  }

  // -- frames ----------------------------------------------------------------------
  function grabFrame() {
    const video = $("live-video");
    if (!video || !video.videoWidth || !video.videoHeight) { return Promise.resolve(null); }
    const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", QUALITY); });
  }

  function schedule(delay) {
    clearTimeout(timer);
    if (running) { timer = setTimeout(sendFrame, delay); }
  }

  async function sendFrame() {
    if (!running || inFlight) { return; }
    inFlight = true;
    const run = generation;
    const started = performance.now();
    let next = MIN_INTERVAL_MS;
    try {
      const blob = await grabFrame();
      if (!blob) { next = 200; return; } // the video has no picture yet
      const form = new FormData();
      form.append("frame", blob, "frame.jpg");
      const response = await post(panel().dataset.frameUrl, form);
      const html = await response.text();
      if (run !== generation) { return; } // stopped or restarted meanwhile: a stale answer
      if (response.ok) {
        swap("#live-result", html);
        showFigures(performance.now() - started);
        document.dispatchEvent(new CustomEvent("privascan:activity"));
        announceNewAlerts();
        updateExplainButton();
        next = Math.max(0, MIN_INTERVAL_MS - (performance.now() - started));
      } else {
        showMessage(html);
        if (response.status === 429 || response.status === 503) {
          next = BACKOFF_MS;
        } else {
          stop(t("Live scan stopped: see the message above."));
        }
      }
    } catch (error) {
      status(t("The server could not be reached; retrying…"));
      next = BACKOFF_MS;
    } finally {
      inFlight = false;
      if (run === generation) { schedule(next); }
    }
  }

  // -- camera ----------------------------------------------------------------------
  function constraints() {
    const choice = ($("live-camera") && $("live-camera").value) || "facing:environment";
    const video = choice.indexOf("device:") === 0
      ? { deviceId: { exact: choice.slice(7) } }
      : { facingMode: choice.slice(7) || "environment" };
    video.width = { ideal: 1280 };
    return { video: video, audio: false };
  }

  async function listCameras() {
    const select = $("live-camera");
    if (!select || !navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) { return; }
    const devices = (await navigator.mediaDevices.enumerateDevices()).filter(function (d) { return d.kind === "videoinput"; });
    devices.forEach(function (device, index) {
      const value = "device:" + device.deviceId;
      if (!device.deviceId || select.querySelector('option[value="' + CSS.escape(value) + '"]')) { return; }
      const option = document.createElement("option");
      option.value = value;
      option.textContent = device.label || t("Camera %(number)s", { number: index + 1 });
      select.appendChild(option);
    });
  }

  function stopTracks() {
    if (stream) { stream.getTracks().forEach(function (track) { track.stop(); }); }
    stream = null;
    const video = $("live-video");
    if (video) { video.srcObject = null; }
  }

  async function openCamera() {
    stopTracks();
    stream = await navigator.mediaDevices.getUserMedia(constraints());
    $("live-video").srcObject = stream;
  }

  async function start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status(t("This browser cannot use a live camera here (a secure https:// page is needed)."));
      return;
    }
    setButtons(true);
    status(t("Starting the camera…"));
    try {
      await openCamera();
    } catch (error) {
      setButtons(false);
      status(t("The camera could not be started (%(error)s). Check the browser's camera permission.", { error: error.name }));
      return;
    }
    listCameras().catch(function () { /* labels are a nicety */ });
    const response = await post(panel().dataset.startUrl, new FormData()).catch(function () { return null; });
    if (!response) { stop(t("The server could not be reached.")); return; }
    const html = await response.text();
    if (!response.ok) { showMessage(html); stop(t("Live scan could not start: see the message above.")); return; }
    swap("#live-result", html);
    updateExplainButton();
    generation += 1;
    running = true;
    completed = [];
    latencies = [];
    status(t("Live scan is running. Hold the camera steady over the spot."));
    // On a phone the header would push the alerts below the fold: bring the camera to the top.
    const video = $("live-video");
    if (video && window.matchMedia("(max-width: 640px)").matches) { video.scrollIntoView({ block: "start" }); }
    schedule(0);
  }

  function stop(message) {
    generation += 1;
    running = false;
    clearTimeout(timer);
    stopTracks();
    setButtons(false);
    status(message || t("The camera is off. The last frame's result and the alert log stay on the page."));
  }

  document.addEventListener("click", function (event) {
    const id = event.target && event.target.id;
    if (id === "live-start") { start(); }
    if (id === "live-stop") { stop(); }
  });
  document.addEventListener("change", function (event) {
    if (event.target && event.target.id === "live-camera" && running) {
      openCamera().catch(function (error) { stop(t("That camera could not be opened (%(error)s).", { error: error.name })); });
    }
  });
  window.addEventListener("pagehide", function () { stop(); });
})();
