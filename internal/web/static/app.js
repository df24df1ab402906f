// Airlock web UI: the only script, served from this server (the
// Content-Security-Policy allows no other and no inline script). Every page
// works without it; it adds the Access command's duration picker and Copy
// button, metadata rows, and confirmation of destructive forms.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Access: the duration picker rewrites the command; Copy copies it.
  document.querySelectorAll("[data-access]").forEach(function (box) {
    var sel = box.querySelector("select.duration");
    var cmd = box.querySelector("code.cmd");
    if (sel && cmd) {
      sel.addEventListener("change", function () {
        cmd.textContent = cmd.dataset.template.replace("{duration}", sel.value);
      });
    }
    var copy = box.querySelector("[data-copy]");
    var said = box.querySelector(".copied");
    if (copy && cmd) {
      copy.addEventListener("click", function () {
        var done = function () { if (said) { said.textContent = "Copied."; } };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(cmd.textContent).then(done, function () { selectText(cmd); });
        } else {
          selectText(cmd);
          if (said) { said.textContent = "Selected: press Ctrl+C."; }
        }
      });
    }
  });
  // Metadata: "Add a row" appends an empty key/value row.
  document.querySelectorAll("[data-add-row]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var rows = btn.parentElement.querySelector(".meta-rows");
      var last = rows && rows.querySelector(".meta-row:last-child");
      if (!last) { return; }
      var row = last.cloneNode(true);
      row.querySelectorAll("input").forEach(function (i) { i.value = ""; });
      rows.appendChild(row);
      var first = row.querySelector("input");
      if (first) { first.focus(); }
    });
  });
  // Destructive forms ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.dataset.confirm)) { ev.preventDefault(); }
    });
  });
});

function selectText(el) {
  var r = document.createRange();
  r.selectNodeContents(el);
  var s = window.getSelection();
  s.removeAllRanges();
  s.addRange(r);
}
