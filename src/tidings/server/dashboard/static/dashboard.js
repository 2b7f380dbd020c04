// Tidings dashboard: keyboard shortcuts, list selection, copy buttons, confirmations, local times.
// Plain script, no build step; everything else is server-rendered HTML and htmx.
(function () {
  "use strict";

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr[data-row]")); }

  function select(next) {
    var all = rows();
    if (!all.length) return;
    var current = all.findIndex(function (row) { return row.classList.contains("selected"); });
    var index = current < 0 ? 0 : Math.max(0, Math.min(all.length - 1, current + next));
    if (current >= 0) all[current].classList.remove("selected");
    all[index].classList.add("selected");
    all[index].scrollIntoView({ block: "nearest" });
    var link = all[index].querySelector("a[data-open], a");
    if (link) link.focus({ preventScroll: true });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) { event.preventDefault(); search.focus(); search.select && search.select(); }
    } else if (event.key === "j") { select(1); }
    else if (event.key === "k") { select(-1); }
    else if (event.key === "Enter") {
      var chosen = document.querySelector("tr[data-row].selected a[data-open], tr[data-row].selected a");
      if (chosen && document.activeElement !== chosen) { event.preventDefault(); chosen.click(); }
    } else {
      var shortcut = document.querySelector('a[data-key="' + event.key + '"]');
      if (shortcut) { event.preventDefault(); shortcut.click(); }
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () { var was = button.textContent; button.textContent = "Copied"; setTimeout(function () { button.textContent = was; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done); }
    else {
      var area = document.createElement("textarea"); area.value = text; document.body.appendChild(area);
      area.select(); document.execCommand("copy"); area.remove(); done();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Timeline bars are placed from their data attributes (the page allows no inline styles).
  function place(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(".bar[data-left]"), function (bar) {
      bar.style.left = bar.getAttribute("data-left") + "%";
      bar.style.width = bar.getAttribute("data-width") + "%";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { place(document); });
  document.addEventListener("htmx:afterSwap", function () { place(document); reselect(); });

  // A list redrawn by the live stream keeps the row that was selected.
  var selectedId = null;
  document.addEventListener("keydown", function () {
    var row = document.querySelector("tr[data-row].selected");
    selectedId = row ? row.id : selectedId;
  }, true);
  function reselect() {
    if (!selectedId) return;
    var row = document.getElementById(selectedId);
    if (row && !row.classList.contains("selected")) row.classList.add("selected");
  }

  // The state of the live stream, for people (the dot) and for tests (data-live).
  document.addEventListener("htmx:sseOpen", function (event) { event.target.setAttribute("data-live", "open"); });
  document.addEventListener("htmx:sseError", function (event) { event.target.setAttribute("data-live", "reconnecting"); });

  // Rows that arrive over the live stream flash once.
  document.addEventListener("htmx:sseMessage", function () {
    var first = document.querySelector("#event-rows tr[data-row]");
    if (first && !first.dataset.seen) { first.dataset.seen = "1"; first.classList.add("fresh"); }
  });
})();
