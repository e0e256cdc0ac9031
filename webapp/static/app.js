// PrivaScan's only hand-written script: what HTML alone cannot do.
// Drag and drop, clipboard paste and the camera all end the same way: the
// files are put into the ordinary file input and the form is submitted by
// htmx, so there is one upload path for every way of adding a photo.
"use strict";

(function () {
  // The page's words in its language (static/words.js; English when that script is missing).
  function t(text, values) { return window.privascanWords ? window.privascanWords(text, values) : text; }
  function uploadForm() { return document.getElementById("upload-form"); }
  function photoInput() { return document.getElementById("photo-input"); }

  function submitFiles(fileList) {
    const files = Array.from(fileList || []).filter(function (f) { return f && f.size >= 0; });
    const form = uploadForm();
    const input = photoInput();
    if (!files.length || !form || !input) { return; }
    const transfer = new DataTransfer();
    files.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    // The browser's file date is the capture-date fallback when a photo has no EXIF date.
    document.getElementById("last-modified").value = files.map(function (f) { return f.lastModified || ""; }).join(",");
    form.requestSubmit();
  }

  function stamp() {
    return new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  }

  // File picker: submit as soon as photos are chosen.
  document.addEventListener("change", function (event) {
    if (event.target.id === "photo-input" || event.target.id === "camera-input") {
      const files = Array.from(event.target.files);
      if (event.target.id === "camera-input") { event.target.value = ""; }
      submitFiles(files);
    }
  });

  // Clear the chosen files once the upload finished, so a re-chosen file uploads again.
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.elt && event.detail.elt.id === "upload-form") {
      photoInput().value = "";
      document.getElementById("last-modified").value = "";
    }
  });

  // Drag and drop, anywhere on the page.
  ["dragenter", "dragover"].forEach(function (name) {
    document.addEventListener(name, function (event) {
      if (event.dataTransfer && Array.from(event.dataTransfer.types).indexOf("Files") >= 0) {
        event.preventDefault();
        const zone = document.getElementById("drop-zone");
        if (zone) { zone.classList.add("dragging"); }
      }
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    document.addEventListener(name, function () {
      const zone = document.getElementById("drop-zone");
      if (zone) { zone.classList.remove("dragging"); }
    });
  });
  document.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files.length) {
      event.preventDefault();
      submitFiles(event.dataTransfer.files);
    }
  });

  // Clipboard paste (Ctrl/Cmd+V) of an image, unless the user is typing in a field.
  document.addEventListener("paste", function (event) {
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA") && target.type !== "file") { return; }
    const items = Array.from((event.clipboardData && event.clipboardData.items) || []);
    const files = items
      .filter(function (item) { return item.kind === "file" && item.type.indexOf("image/") === 0; })
      .map(function (item, index) {
        const blob = item.getAsFile();
        const extension = (blob.type.split("/")[1] || "png").replace("jpeg", "jpg");
        return new File([blob], "pasted-" + stamp() + (index ? "-" + index : "") + "." + extension, { type: blob.type, lastModified: Date.now() });
      });
    if (files.length) {
      event.preventDefault();
      submitFiles(files);
    }
  });

  // Camera: a live preview with a capture button; the phone's camera app is the fallback.
  let stream = null;

  function cameraStatus(text) {
    const status = document.getElementById("camera-status");
    if (status) { status.textContent = text; }
  }

  function setCameraButtons(running) {
    const start = document.getElementById("camera-start");
    const capture = document.getElementById("camera-capture");
    const stop = document.getElementById("camera-stop");
    if (start) { start.disabled = running; }
    if (capture) { capture.disabled = !running; }
    if (stop) { stop.disabled = !running; }
  }

  function stopCamera() {
    if (stream) { stream.getTracks().forEach(function (track) { track.stop(); }); }
    stream = null;
    const video = document.getElementById("camera-preview");
    if (video) { video.srcObject = null; }
    setCameraButtons(false);
    cameraStatus(t("The camera is off."));
  }

  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      cameraStatus(t("This browser cannot show a live camera here. Use the camera app, or choose a photo file, instead."));
      return;
    }
    stopCamera();  // a second press must not leave the first stream running
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment", width: { ideal: 1920 } }, audio: false });
    } catch (error) {
      cameraStatus(t("The camera could not be started (%(error)s). Check the browser's permission, or use the camera app.", { error: error.name }));
      return;
    }
    const video = document.getElementById("camera-preview");
    video.srcObject = stream;
    setCameraButtons(true);
    cameraStatus(t("The camera is on. Frame the spot and press “Take photo”."));
  }

  function capturePhoto() {
    const video = document.getElementById("camera-preview");
    if (!stream || !video || !video.videoWidth) {
      cameraStatus(t("The camera is not ready yet."));
      return;
    }
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob(function (blob) {
      if (!blob) { cameraStatus(t("The photo could not be taken.")); return; }
      submitFiles([new File([blob], "camera-" + stamp() + ".jpg", { type: "image/jpeg", lastModified: Date.now() })]);
      cameraStatus(t("Photo taken and added."));
    }, "image/jpeg", 0.92);
  }

  document.addEventListener("click", function (event) {
    const id = event.target && event.target.id;
    if (id === "camera-start") { startCamera(); }
    if (id === "camera-capture") { capturePhoto(); }
    if (id === "camera-stop") { stopCamera(); }
  });
  document.addEventListener("toggle", function (event) {
    if (event.target.id === "camera-panel" && !event.target.open) { stopCamera(); }
  }, true);
  window.addEventListener("pagehide", stopCamera);
  // A swap that replaces the camera panel (e.g. changing the settings) must not
  // leave the camera running with no preview and no Stop button for it.
  document.addEventListener("htmx:afterSettle", function () {
    const video = document.getElementById("camera-preview");
    if (stream && (!video || video.srcObject !== stream)) { stopCamera(); }
  });
})();
