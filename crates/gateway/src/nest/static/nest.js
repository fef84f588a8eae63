// Refreshes any element with data-refresh every 5 seconds by fetching the
// fragment it names and swapping it in. The page works without this script.
"use strict";
(function () {
  const PERIOD_MS = 5000;
  function refresh(element) {
    fetch(element.dataset.refresh, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected) {
          window.location.assign("/nest/login");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById(element.id);
        if (fresh) element.replaceWith(fresh);
      })
      .catch(function () { /* the gateway is away; try again next time */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    const ids = Array.from(document.querySelectorAll("[data-refresh]")).map(function (e) { return e.id; });
    if (ids.length === 0) return;
    setInterval(function () {
      ids.forEach(function (id) {
        const element = document.getElementById(id);
        if (element) refresh(element);
      });
    }, PERIOD_MS);
  });
})();
