/* RadPath patient picker: search as you type, choose with the mouse or the arrow keys and Enter. No libraries. */
(function () {
  "use strict";
  function setup(box) {
    var input = box.querySelector("[data-picker-input]");
    var hidden = box.querySelector("[data-picker-value]");
    var list = box.querySelector(".picker-list");
    var url = box.getAttribute("data-search-url");
    var onPick = box.getAttribute("data-on-pick");
    var timer = null, seq = 0, active = -1, rows = [];
    if (!input || input.disabled) return;

    function close() { list.hidden = true; input.setAttribute("aria-expanded", "false"); active = -1; }
    function highlight(i) {
      var items = list.querySelectorAll("li");
      items.forEach(function (li, n) { li.setAttribute("aria-selected", n === i ? "true" : "false"); });
      active = i;
    }
    function pick(row) {
      hidden.value = row.id;
      input.value = row.label;
      close();
      if (onPick === "reload") {
        var u = new URL(window.location.href);
        u.searchParams.set(hidden.name, row.id);
        window.location.assign(u.toString());
      } else if (onPick === "open") {
        window.location.assign(row.url);
      }
      hidden.dispatchEvent(new Event("change", { bubbles: true }));
    }
    function show(data) {
      rows = data.results || [];
      list.innerHTML = "";
      if (!rows.length) {
        var none = document.createElement("li");
        none.className = "muted"; none.textContent = "No patient found";
        list.appendChild(none);
      }
      rows.forEach(function (row, n) {
        var li = document.createElement("li");
        li.setAttribute("role", "option"); li.id = input.id + "_opt" + n;
        li.textContent = row.label + (row.born ? " · born " + row.born : "");
        li.addEventListener("mousedown", function (e) { e.preventDefault(); pick(row); });
        list.appendChild(li);
      });
      list.hidden = false; input.setAttribute("aria-expanded", "true"); active = -1;
    }
    function search() {
      var q = input.value.trim();
      hidden.value = "";
      if (q.length < 2) { close(); return; }
      var mine = ++seq;
      fetch(url + "?q=" + encodeURIComponent(q), { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : { results: [] }; })
        .then(function (data) { if (mine === seq) show(data); });
    }
    input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(search, 150); });
    input.addEventListener("keydown", function (e) {
      if (list.hidden) return;
      if (e.key === "ArrowDown") { e.preventDefault(); highlight(Math.min(active + 1, rows.length - 1)); }
      else if (e.key === "ArrowUp") { e.preventDefault(); highlight(Math.max(active - 1, 0)); }
      else if (e.key === "Enter" && active >= 0 && rows[active]) { e.preventDefault(); pick(rows[active]); }
      else if (e.key === "Escape") { close(); }
    });
    input.addEventListener("blur", function () { setTimeout(close, 100); });
  }
  document.querySelectorAll("[data-picker]").forEach(setup);

  /* Course form: dose per fraction derived from total and fractions; defaults per technique and intent. */
  var form = document.querySelector("[data-course-form]");
  if (form) {
    var defaults = JSON.parse(document.getElementById("prescription-defaults").textContent);
    var total = form.querySelector("[name=total_dose_gy]"), n = form.querySelector("[name=fractions_planned]");
    var technique = form.querySelector("[name=technique]"), intent = form.querySelector("[name=intent]");
    var minutes = form.querySelector("[name=fraction_minutes]"), out = document.getElementById("dose-per-fraction");
    var touched = false;
    function derive() {
      var d = parseFloat(total.value) / parseInt(n.value, 10);
      out.textContent = isFinite(d) && d > 0 ? (Math.round(d * 100) / 100).toFixed(2) + " Gy" : "—";
    }
    [total, n].forEach(function (el) {
      if (!el) return;
      el.addEventListener("input", function () { touched = true; derive(); });
    });
    [technique, intent].forEach(function (el) {
      if (!el || el.disabled) return;
      el.addEventListener("change", function () {
        var d = defaults[technique.value + "|" + intent.value];
        if (d && !touched && !total.disabled) { total.value = d.total; n.value = d.fractions; if (minutes) minutes.value = d.minutes; }
        derive();
      });
    });
    if (total && n && out) derive();
  }
})();
