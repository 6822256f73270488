// mandate console: counts down every expiry on the page. The server renders
// each value; this script only keeps them current between reloads.
(function () {
  "use strict";
  function fmt(ms) {
    if (ms <= 0) return "expired";
    var s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + (s % 60) + "s";
    return s + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-expires]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-expires"));
      if (!isNaN(t)) el.textContent = fmt(t - now);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.documentElement.setAttribute("data-console-js", "on");
    tick();
    setInterval(tick, 1000);
  });
})();
