// Airlock web UI: passkeys (WebAuthn) on the MFA page and in the MFA steps
// (templates/mfa.html, mfa_step.html). The server sends the options of
// navigator.credentials.create/get as JSON with binary fields in
// base64url; this script turns them into ArrayBuffers, asks the browser,
// and posts the answer back the same way. Everything shown is set as text.
"use strict";
(function () {
  function b64uToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }
  function bufToB64u(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(o) {
    var pk = o.publicKey;
    pk.challenge = b64uToBuf(pk.challenge);
    pk.user.id = b64uToBuf(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = b64uToBuf(c.id); });
    return { publicKey: pk };
  }
  function requestOptions(o) {
    var pk = o.publicKey;
    pk.challenge = b64uToBuf(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = b64uToBuf(c.id); });
    return { publicKey: pk };
  }
  function credentialJSON(c) {
    var r = c.response, resp = { clientDataJSON: bufToB64u(r.clientDataJSON) };
    if (r.attestationObject) {
      resp.attestationObject = bufToB64u(r.attestationObject);
      if (r.getTransports) { resp.transports = r.getTransports(); }
    } else {
      resp.authenticatorData = bufToB64u(r.authenticatorData);
      resp.signature = bufToB64u(r.signature);
      if (r.userHandle) { resp.userHandle = bufToB64u(r.userHandle); }
    }
    return { id: c.id, rawId: bufToB64u(c.rawId), type: c.type, response: resp,
      clientExtensionResults: c.getClientExtensionResults ? c.getClientExtensionResults() : {} };
  }
  function post(url, csrf, body) {
    var headers = { "Content-Type": "application/json" };
    if (csrf) { headers["X-CSRF-Token"] = csrf; }
    return fetch(url, { method: "POST", headers: headers, body: JSON.stringify(body || {}), credentials: "same-origin" })
      .then(function (res) {
        return res.text().then(function (t) {
          var b = null;
          try { b = JSON.parse(t); } catch (e) { b = null; }
          if (!res.ok) { throw new Error((b && b.error) || ("The request failed with status " + res.status + ": reload and try again.")); }
          return b;
        });
      });
  }
  function showError(el, err) {
    if (!el) { return; }
    var msg = err && err.message ? err.message : String(err);
    if (err && err.name === "NotAllowedError") { msg = "The passkey was not used (cancelled or timed out): try again."; }
    if (err && err.name === "InvalidStateError") { msg = "This passkey is already registered."; }
    el.textContent = msg;
    el.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    // The MFA page: add a passkey.
    var box = document.querySelector("[data-passkeys]");
    var add = document.querySelector("[data-passkey-add]");
    if (box && add) {
      var csrf = box.dataset.csrf, errEl = document.getElementById("passkey-error");
      add.addEventListener("click", function () {
        errEl.hidden = true;
        add.disabled = true;
        var name = (document.getElementById("passkey-name") || {}).value || "";
        var id;
        post("/mfa/passkeys/begin", csrf).then(function (c) {
          id = c.id;
          return navigator.credentials.create(creationOptions(c.options));
        }).then(function (cred) {
          return post("/mfa/passkeys/finish", csrf, { id: id, name: name, credential: credentialJSON(cred) });
        }).then(function (res) {
          if (res.recoveryCodes && res.recoveryCodes.length) {
            var rc = document.getElementById("passkey-recovery"), ul = rc.querySelector("ul");
            res.recoveryCodes.forEach(function (code) {
              var li = document.createElement("li"), c = document.createElement("code");
              c.textContent = code;
              li.appendChild(c);
              ul.appendChild(li);
            });
            rc.hidden = false;
            var row = document.createElement("tr"), td = document.createElement("td");
            td.textContent = res.passkey.name + " (added)";
            row.appendChild(td);
            document.querySelector("#passkey-list tbody").appendChild(row);
          } else {
            window.location.assign("/mfa?done=passkey-added");
          }
        }).catch(function (err) { showError(errEl, err); }).then(function () { add.disabled = false; });
      });
    }

    // The MFA page: remove a passkey, proved with a passkey.
    document.querySelectorAll("[data-passkey-remove]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        if (!window.confirm("Remove this passkey?")) { return; }
        var csrf = box.dataset.csrf, errEl = document.getElementById("passkey-error"), aid;
        errEl.hidden = true;
        btn.disabled = true;
        post("/mfa/passkeys/assert", csrf).then(function (c) {
          aid = c.id;
          return navigator.credentials.get(requestOptions(c.options));
        }).then(function (cred) {
          return post("/mfa/passkeys/" + encodeURIComponent(btn.dataset.passkeyRemove) + "/remove-with-passkey", csrf,
            { id: aid, credential: credentialJSON(cred) });
        }).then(function () {
          window.location.assign("/mfa?done=passkey-removed");
        }).catch(function (err) { showError(errEl, err); btn.disabled = false; });
      });
    });

    // An MFA step: approve a challenge with a passkey.
    var step = document.querySelector("[data-mfa-step]");
    var approve = document.querySelector("[data-passkey-approve]");
    if (step && approve) {
      var scsrf = step.dataset.csrf, chid = step.dataset.challenge, pending = step.dataset.pending;
      var login = step.hasAttribute("data-login"), onlyApprove = step.hasAttribute("data-approve");
      var serr = document.getElementById("passkey-error"), done = document.getElementById("passkey-done");
      var base = "/mfa/challenges/" + encodeURIComponent(chid) + "/passkey";
      approve.addEventListener("click", function () {
        serr.hidden = true;
        approve.disabled = true;
        var cid;
        var begin = login ? post("/login/mfa/passkey", "", { pending: pending }) : post(base, scsrf);
        begin.then(function (c) {
          cid = c.id;
          return navigator.credentials.get(requestOptions(c.options));
        }).then(function (cred) {
          var answer = { id: cid, credential: credentialJSON(cred), pending: pending };
          return login ? post("/login/mfa/passkey/verify", "", answer) : post(base + "/verify", scsrf, answer);
        }).then(function () {
          if (onlyApprove) {
            done.hidden = false;
            approve.hidden = true;
            return;
          }
          document.getElementById("mfa-form").submit();
        }).catch(function (err) { showError(serr, err); approve.disabled = false; });
      });
    }
  });
})();
