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
});

// Destructive forms ask first (delegated, so that forms a page swaps in
// ask too).
document.addEventListener("submit", function (ev) {
  var f = ev.target;
  if (f instanceof HTMLFormElement && f.dataset.confirm && !window.confirm(f.dataset.confirm)) {
    ev.preventDefault();
  }
});

// A live session's page (templates/session.html) refreshes its facts and
// log every few seconds until the session ends. These requests are marked as
// the page's own, so they do not keep an unattended login alive.
document.addEventListener("DOMContentLoaded", function () {
  var live = document.querySelector("#session-live[data-live]");
  if (!live) { return; }
  var every = 3000;
  function tick() {
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Airlock-Background": "1" } })
      .then(function (r) {
        // Signed out or gone: leave the page as it is.
        if (!r.ok || r.redirected) { return null; }
        return r.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("session-live");
        if (!next) { return; }
        live.innerHTML = next.innerHTML;
        if (next.hasAttribute("data-live")) { setTimeout(tick, every); } else { live.removeAttribute("data-live"); }
      })
      .catch(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
});

function selectText(el) {
  var r = document.createRange();
  r.selectNodeContents(el);
  var s = window.getSelection();
  s.removeAllRanges();
  s.addRange(r);
}

// The SQL console (templates/console.html): runs SQL through the console's
// session, shows results, errors and the transaction state, cancels, and
// browses the schema. Everything shown is set as text, never as HTML.
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("console");
  if (!box) { return; }
  var id = box.dataset.console, csrf = box.dataset.csrf;
  var base = "/console/" + encodeURIComponent(id);
  var sqlBox = document.getElementById("sql");
  var runBtn = document.getElementById("run"), cancelBtn = document.getElementById("cancel");
  var endBtn = document.getElementById("end-console"), status = document.getElementById("status");
  var tx = document.getElementById("tx-state"), results = document.getElementById("results");
  var maxSQL = 1024 * 1024, ended = false, events = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function setTx(s) { tx.textContent = s; tx.dataset.state = s; }
  function answer(res) {
    return res.text().then(function (t) {
      var body = null;
      try { body = JSON.parse(t); } catch (e) { body = null; }
      if (body === null) {
        body = { error: res.status === 403 ? "The server refused the request (signed out, or the page expired): reload." :
          "The server's answer could not be read (status " + res.status + "): you may have been signed out; reload." };
      }
      if (!res.ok && !body.error) { body.error = "Request failed with status " + res.status + "."; }
      if (body.ended) { endConsole(body.error || "The console has ended."); }
      return body;
    });
  }
  function call(method, path, body) {
    var opt = { method: method, credentials: "same-origin", headers: {} };
    if (method === "POST") {
      opt.headers["X-CSRF-Token"] = csrf;
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body || {});
    }
    return fetch(base + path, opt).then(answer, function () {
      return { error: "The server could not be reached." };
    });
  }
  function endConsole(why) {
    if (ended) { return; }
    ended = true;
    runBtn.disabled = true; cancelBtn.disabled = true; endBtn.disabled = true; sqlBox.readOnly = true;
    setTx("ended");
    status.textContent = "";
    var p = el("p", "error", "This console has ended: " + why + ". Open Web Access again for a new session.");
    p.id = "console-ended";
    p.setAttribute("role", "alert");
    results.insertBefore(p, results.firstChild);
    if (events) { events.close(); }
  }
  function showError(e) {
    var d = el("div", "sqlerror result");
    d.id = "sql-error";
    var head = el("p");
    head.appendChild(el("strong", null, (e.severity || "ERROR") + (e.code ? " " + e.code : "") + ": "));
    head.appendChild(el("span", "message", e.message));
    d.appendChild(head);
    if (e.code) { d.appendChild(el("p", "sqlstate", "SQLSTATE " + e.code)); }
    if (e.detail) { d.appendChild(el("p", "detail", "Detail: " + e.detail)); }
    if (e.hint) { d.appendChild(el("p", "hint", "Hint: " + e.hint)); }
    if (e.position) { d.appendChild(el("p", "position", "At character " + e.position + ".")); }
    results.appendChild(d);
  }
  function showResult(r, i) {
    var d = el("div", "result");
    d.dataset.index = i;
    var head = el("p");
    head.appendChild(el("span", "tag command", r.command || "(empty)"));
    var verb = (r.command || "").split(" ")[0];
    if (["INSERT", "UPDATE", "DELETE", "MERGE"].indexOf(verb) >= 0) {
      head.appendChild(el("span", "affected", r.rowsAffected + (r.rowsAffected === 1 ? " row affected" : " rows affected")));
    } else if (r.columns) {
      head.appendChild(el("span", "rowcount", r.truncated ? (r.totalRows ? r.totalRows + " rows" : "more than " + r.rows.length + " rows") : r.rows.length + " rows"));
    }
    d.appendChild(head);
    if (r.columns) {
      if (r.truncated && r.totalRows) {
        d.appendChild(el("p", "truncated", "Showing the first " + r.rows.length + " of " + r.totalRows +
          " rows: the console shows at most " + box.dataset.maxRows + " rows of a result; the rest are not shown."));
      } else if (r.truncated) {
        d.appendChild(el("p", "truncated", "Showing the first " + r.rows.length + " rows: the console fetches at most " +
          box.dataset.maxRows + " rows of a result; the rest were not fetched."));
      }
      var wrap = el("div", "result-table"), t = el("table", "grid"), thead = el("thead"), tr = el("tr");
      r.columns.forEach(function (c) {
        var th = el("th", null, c.name);
        th.appendChild(el("span", "type", c.type));
        tr.appendChild(th);
      });
      thead.appendChild(tr); t.appendChild(thead);
      var tb = el("tbody");
      r.rows.forEach(function (row) {
        var rtr = el("tr");
        row.forEach(function (v) { rtr.appendChild(v === null ? el("td", "null", "NULL") : el("td", null, v)); });
        tb.appendChild(rtr);
      });
      t.appendChild(tb); wrap.appendChild(t); d.appendChild(wrap);
    }
    results.appendChild(d);
  }
  function run() {
    if (ended || runBtn.disabled) { return; }
    var sql = sqlBox.value;
    if (sql.trim() === "") { return; }
    results.textContent = "";
    if (new TextEncoder().encode(sql).length > maxSQL) {
      showError({ message: "The SQL is over 1 MiB: the console sends at most 1 MiB." });
      return;
    }
    runBtn.disabled = true; cancelBtn.disabled = false;
    status.textContent = "Running…";
    call("POST", "/run", { sql: sql }).then(function (b) {
      runBtn.disabled = ended; cancelBtn.disabled = true;
      if (b.error !== undefined && typeof b.error === "string") {
        status.textContent = "";
        if (!ended) { showError({ severity: "Console", message: b.error }); }
        return;
      }
      (b.results || []).forEach(showResult);
      if (b.error) { showError(b.error); }
      setTx(b.txStatus || "idle");
      status.textContent = (b.error ? "Failed" : "Done") + " in " + b.elapsed + ".";
    });
  }
  runBtn.addEventListener("click", run);
  sqlBox.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); }
  });
  cancelBtn.addEventListener("click", function () {
    status.textContent = "Cancelling…";
    call("POST", "/cancel").then(function (b) {
      if (!runBtn.disabled) { return; } // the statement has answered already
      status.textContent = b.error ? b.error : "Cancel sent; waiting for the database…";
    });
  });
  endBtn.addEventListener("click", function () {
    call("POST", "/end").then(function () { endConsole("you ended it"); });
  });

  // The schema browser.
  var tree = document.getElementById("schema-tree"), cols = document.getElementById("schema-columns");
  var schemaLoading = false; // one load at a time: a second would find the console busy
  function loadSchema() {
    if (schemaLoading) { return; }
    schemaLoading = true;
    call("GET", "/schema").finally(function () { schemaLoading = false; }).then(function (b) {
      tree.textContent = "";
      if (b.error) { tree.appendChild(el("p", "error", b.error)); return; }
      if (b.txStatus) { setTx(b.txStatus); }
      b.schemas.forEach(function (s) {
        var det = el("details"), sum = el("summary", null, s.name), ul = el("ul");
        det.dataset.schema = s.name;
        if (s.name === "public") { det.open = true; }
        det.appendChild(sum);
        s.relations.forEach(function (r) {
          var li = el("li"), btn = el("button", "rel", r.name);
          btn.type = "button";
          btn.dataset.schema = s.name; btn.dataset.table = r.name;
          btn.addEventListener("click", function () { loadColumns(s.name, r.name); });
          li.appendChild(btn);
          li.appendChild(document.createTextNode(" "));
          li.appendChild(el("span", "kind", r.kind));
          ul.appendChild(li);
        });
        if (s.relations.length === 0) { ul.appendChild(el("li", "hint", "no tables or views")); }
        det.appendChild(ul);
        tree.appendChild(det);
      });
    });
  }
  function loadColumns(schema, table) {
    call("GET", "/columns?schema=" + encodeURIComponent(schema) + "&table=" + encodeURIComponent(table)).then(function (b) {
      cols.textContent = "";
      cols.appendChild(el("h3", null, schema + "." + table));
      if (b.error) { cols.appendChild(el("p", "error", b.error)); return; }
      var t = el("table", "grid"), tb = el("tbody");
      t.id = "columns";
      b.columns.forEach(function (c) {
        var tr = el("tr");
        tr.appendChild(el("td", null, c.name));
        tr.appendChild(el("td", null, c.type + (c.notNull ? " not null" : "")));
        tb.appendChild(tr);
      });
      t.appendChild(tb); cols.appendChild(t);
    });
  }
  document.getElementById("schema-refresh").addEventListener("click", loadSchema);

  // The event stream: open while this page is; the server ends the console
  // when it drops, and says here when the console ends for another reason.
  events = new EventSource(base + "/events");
  events.addEventListener("open", function () { loadSchema(); }, { once: true });
  events.addEventListener("ended", function (ev) {
    var why = "it ended";
    try { why = JSON.parse(ev.data).why || why; } catch (e) { /* keep the default */ }
    endConsole(why);
  });
  events.addEventListener("error", function () {
    if (events.readyState === EventSource.CLOSED) { endConsole("the connection to the server was lost"); }
  });
});
