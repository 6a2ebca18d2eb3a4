// The approval inbox's only script (served from 'self'; the CSP allows no inline script).
// - keeps expiry countdowns live;
// - pauses the list's auto-refresh while requests are selected for bulk approval;
// - lets bulk approval select requests of one tool only, and shows the count.
(function () {
  "use strict";

  function left(deadline) {
    var seconds = Math.floor((deadline - Date.now()) / 1000);
    if (seconds <= 0) return "expired";
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (d) return "expires in " + d + "d " + h + "h";
    if (h) return "expires in " + h + "h " + m + "m";
    return "expires in " + m + "m " + s + "s";
  }

  function tick() {
    document.querySelectorAll("time.countdown").forEach(function (el) {
      var deadline = Date.parse(el.getAttribute("datetime"));
      if (isNaN(deadline)) return;
      var text = left(deadline);
      if (el.textContent !== text) el.textContent = text;
      el.classList.toggle("is-expired", text === "expired");
    });
  }

  function selection() {
    return Array.prototype.slice.call(document.querySelectorAll("input.bulk:checked"));
  }

  function updateBulk() {
    var picked = selection();
    var button = document.getElementById("bulk-approve");
    var count = document.getElementById("bulk-count");
    var tool = picked.length ? picked[0].getAttribute("data-tool") : null;
    document.querySelectorAll("input.bulk").forEach(function (box) {
      box.disabled = tool !== null && box.getAttribute("data-tool") !== tool;
    });
    if (button) button.disabled = picked.length === 0;
    if (count) {
      count.textContent = picked.length
        ? picked.length + " selected (" + tool + ")"
        : "Select requests of one tool to approve them together.";
    }
  }

  document.addEventListener("change", function (event) {
    if (event.target && event.target.classList && event.target.classList.contains("bulk")) {
      updateBulk();
    }
  });

  // Do not replace the list under someone who is selecting requests in it.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var source = event.detail && event.detail.elt;
    if (source && source.getAttribute("data-guard") === "bulk" && selection().length) {
      event.preventDefault();
    }
  });

  document.addEventListener("htmx:afterSwap", function () {
    tick();
    updateBulk();
  });

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    updateBulk();
    window.setInterval(tick, 1000);
  });
})();
