// slaledger web view: live countdowns and a queue that refreshes without a full reload.
// Progressive: every page is complete without this script.
(function () {
  "use strict";

  // Server time minus browser time, so a countdown does not depend on the browser's clock.
  var serverNow = Date.parse(document.body.getAttribute("data-server-now") || "");
  var skew = isNaN(serverNow) ? 0 : serverNow - Date.now();

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  // Same wording as slaledger/web/render.py clock_duration().
  function duration(seconds) {
    var days = Math.floor(seconds / 86400), rest = seconds % 86400;
    var hours = Math.floor(rest / 3600); rest %= 3600;
    var minutes = Math.floor(rest / 60), secs = rest % 60;
    if (days) { return days + " j " + hours + " h " + pad(minutes) + " min " + pad(secs) + " s"; }
    if (hours) { return hours + " h " + pad(minutes) + " min " + pad(secs) + " s"; }
    if (minutes) { return minutes + " min " + pad(secs) + " s"; }
    return secs + " s";
  }

  function tick() {
    var now = Date.now() + skew;
    var items = document.querySelectorAll("time[data-countdown]");
    for (var i = 0; i < items.length; i++) {
      var deadline = Date.parse(items[i].getAttribute("datetime"));
      if (isNaN(deadline)) { continue; }
      var left = (deadline - now) / 1000;
      items[i].textContent = left >= 0 ? "reste " + duration(Math.floor(left))
                                       : "dépassée depuis " + duration(Math.ceil(-left));
    }
  }
  tick();
  window.setInterval(tick, 1000);

  var queue = document.getElementById("queue");
  var form = document.getElementById("filters");
  if (!queue || !form) { return; }

  function params() {
    var data = new FormData(form), out = new URLSearchParams();
    data.forEach(function (value, key) { if (value) { out.append(key, value); } });
    return out.toString();
  }

  var busy = false;
  function refresh() {
    if (busy) { return; }
    busy = true;
    fetch("/fragments/queue?" + params(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) { return; }
        var template = document.createElement("template");
        template.innerHTML = html;
        queue.replaceChildren(template.content);
        tick();
      })
      .catch(function () { /* offline for a moment: the next round retries */ })
      .then(function () { busy = false; });
  }

  form.addEventListener("change", function () {
    var query = params();
    window.history.replaceState(null, "", "/" + (query ? "?" + query : ""));
    refresh();
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    form.dispatchEvent(new Event("change"));
  });
  var seconds = parseInt(queue.getAttribute("data-refresh"), 10) || 5;
  window.setInterval(refresh, seconds * 1000);
})();
