// console.js: Usher's host console, served at /. Plain browser JavaScript: no build step, no dependency but
// usher.js, nothing loaded from the internet.
//
// The token comes from the sign-in form or from the link's fragment (#token=..., what `usher serve --demo` prints);
// the fragment is removed from the address bar at once and the token is kept in this tab's sessionStorage. It is
// sent only in headers: "Authorization: Bearer" for REST, the WebSocket subprotocol for /v1/ws (usher.js).
//
// Rendering: presence frames update each channel's state at once (plain Maps, cheap), and mark it dirty; the DOM is
// updated at most once per animation frame, and member lists are virtualised (only the rows in view exist), so a
// channel with tens of thousands of members stays responsive.
(function () {
  "use strict";

  var TOKEN_KEY = "usher.token", OPEN_KEY = "usher.open", LAYOUT_KEY = "usher.layout", THEME_KEY = "usher.theme";
  var FEED_MAX = 200;             // feed entries kept per channel
  var FEED_EVERY = 150;           // during a burst of events, the feed is redrawn at most this often (ms)
  var NEW_MS = 15000;             // a member's row stays highlighted this long after the join arrived
  var ARRIVAL_WINDOW = 60000;     // "arrived in the last minute"
  var RESUMED_MS = 10000;         // how long the connection pill says "Resumed" before "Live"
  var LIST_POLL_MS = 3000;        // GET /v1/channels, for tokens that grant "*"
  var LIST_SHOWN = 200;           // channels shown in the picker before "type to narrow"; also what a poll asks for
  var LIST_TYPED_MS = 250;        // after a key in the picker's box, the wait for more keys before asking the server
  var MAX_OPEN = 24;              // channels open at once in this console
  var SAMPLE_MAX = 3600;          // chart points per channel before older ones are thinned
  var OVERSCAN = 4;               // rows rendered above and below the visible part of a list

  var PLATFORMS = {
    0: ["Other", "other"], 1: ["Android", "android"], 2: ["iOS", "ios"], 5: ["Windows", "windows"],
    6: ["Linux", "linux"], 7: ["Web", "web"], 8: ["macOS", "macos"]
  };
  var CLIENT_TYPES = { 3: "Local recording", 8: "Applet", 10: "Cloud recording" };
  var REASONS = {
    0: "other", 1: "left", 2: "timed out", 3: "removed", 4: "server rebalance", 5: "switched device",
    9: "multiple IPs", 10: "network reconnect", 12: "token error", 99: "network problem", 999: "abnormal user"
  };
  var ICONS = {
    android: '<path d="M5.5 17a6.5 6.5 0 0 1 13 0v2h-13z"/><path d="M8.5 8.5 7 6M15.5 8.5 17 6"/><circle class="fill" cx="9.5" cy="14.5" r="1"/><circle class="fill" cx="14.5" cy="14.5" r="1"/>',
    ios: '<rect x="7" y="2.5" width="10" height="19" rx="2.5"/><path d="M10.5 18.5h3"/>',
    windows: '<path class="fill" d="M3.5 5.8 10.5 4.8v6.6h-7zM11.8 4.6l8.7-1.2v8h-8.7zM3.5 12.6h7v6.6l-7-1zM11.8 12.6h8.7v8l-8.7-1.2z"/>',
    linux: '<rect x="3" y="4.5" width="18" height="15" rx="2"/><path d="m7 9.5 3 2.5-3 2.5M12.5 15h4.5"/>',
    web: '<circle cx="12" cy="12" r="8.5"/><path d="M3.5 12h17M12 3.5c2.6 2.4 3.6 5.3 3.6 8.5s-1 6.1-3.6 8.5M12 3.5C9.4 5.9 8.4 8.8 8.4 12s1 6.1 3.6 8.5"/>',
    macos: '<rect x="5" y="5" width="14" height="10" rx="1.5"/><path d="M2.5 18.5h19"/>',
    other: '<circle cx="12" cy="12" r="8.5"/><circle class="fill" cx="8" cy="12" r="1.1"/><circle class="fill" cx="12" cy="12" r="1.1"/><circle class="fill" cx="16" cy="12" r="1.1"/>',
    join: '<path d="M12 6v12M6 12h12"/>',
    leave: '<path d="M6 12h12"/>',
    role: '<path d="M7 9h10l-3-3M17 15H7l3 3"/>',
    channel: '<circle cx="12" cy="12" r="3.5"/>',
    note: '<path d="M12 11v5M12 8v.01"/>',
    x: '<path d="M6 6l12 12M18 6 6 18"/>'
  };

  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var nf = new Intl.NumberFormat();
  var clock = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  var reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  var phone = window.matchMedia("(max-width: 760px)"); // as in console.css
  var ROW = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--row")) || 44;

  var app = {
    token: null, claims: null, all: false, client: null,
    open: new Map(),     // channel name -> Channel, in tab order
    active: null,
    list: [],            // the picker: [{channel, counts}]
    picker: new Map(),   // channel -> its entry in the picker, while listed (pickerItem)
    listStatus: "",
    listTimer: null, listFailed: false,
    listRound: 0,        // changed by stopPolling: answers to an earlier round of polling are ignored
    expired: false,      // the token expired (close 4001) or the server refused it: waiting for a new one
    signing: 0,          // counts sign-ins and sign-outs: the answer to an earlier sign-in is ignored
    conn: { state: "connecting", resumes: 0, attempt: 0, retryAt: 0, resumedAt: 0, code: 0 },
    sideDirty: true,     // redraw the picker in the next frame
    sideCounts: false,   // counts changed: redraw the picker, at most every 300 ms
    sideAt: 0
  };

  // ---- small helpers

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  var iconCache = {};
  // icon returns a new SVG element of the named icon; each icon is parsed once.
  function icon(name) {
    var n = iconCache[name];
    if (!n) {
      var t = document.createElement("template");
      t.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true">' + ICONS[name] + "</svg>";
      n = iconCache[name] = t.content.firstChild;
    }
    return n.cloneNode(true);
  }
  function fmtNum(n) { return nf.format(n); }
  function fmtClock(ms) { return clock.format(new Date(ms)); }
  function fmtDur(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad2(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad2(Math.floor(s / 60) % 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor(s / 3600) % 24 + "h";
  }
  function pad2(n) { return n < 10 ? "0" + n : "" + n; }
  function platformOf(p) {
    if (p === undefined || p === null) return { name: "Unknown", icon: "other" };
    var v = PLATFORMS[p] || PLATFORMS[0];
    return { name: v[0], icon: v[1] };
  }
  function roleKey(role) { return role === "host" ? "host" : role === "audience" ? "audience" : "user"; }
  function store(kind) { try { return window[kind]; } catch (e) { return null; } }
  function load(kind, key) { var s = store(kind); try { return s ? s.getItem(key) : null; } catch (e) { return null; } }
  function save(kind, key, v) {
    var s = store(kind);
    try { if (s) { if (v === null) s.removeItem(key); else s.setItem(key, v); } } catch (e) { /* private mode */ }
  }

  // ---- tokens: decoded here only to show the grants; the server verifies them

  function decodeToken(tok) {
    var parts = tok.split(".");
    if (parts.length !== 3) throw new Error("That is not a token: a token has three parts separated by dots.");
    var b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var claims;
    try {
      var bin = atob(b64), bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      claims = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new Error("That token cannot be read: its middle part is not base64url JSON.");
    }
    if (!claims || !Array.isArray(claims.channels) || claims.channels.length === 0) {
      throw new Error("That token grants no channels.");
    }
    // Whether it has expired is for the server to say (401 token_expired): this device's clock may be off by hours.
    return claims;
  }

  function allows(ch) {
    return app.claims.channels.some(function (g) {
      if (g === "*" || g === ch) return true;
      return g.length > 1 && g.charAt(g.length - 1) === "*" && ch.indexOf(g.slice(0, -1)) === 0;
    });
  }

  var NAME_RE = /^[A-Za-z0-9 !#$%&()+\-:;<=.>?@[\]^_{}|~,]+$/;
  function nameProblem(ch) {
    if (!ch) return "Type a channel name.";
    if (new TextEncoder().encode(ch).length > 64) return "Agora channel names are at most 64 bytes.";
    if (!NAME_RE.test(ch)) return "Agora channel names use letters, digits, space and !#$%&()+-:;<=.>?@[]^_{}|~, only.";
    if (!allows(ch)) return "This token does not grant \u201c" + ch + "\u201d.";
    return "";
  }

  // api GETs path with the console's token, or with tok.
  // listPath is the picker's request for a "*" token: the busiest LIST_SHOWN channels whose name contains what is
  // typed in the box (the server filters and sorts: a list of 100,000 channels would be megabytes every poll). Text
  // no channel name can contain (not printable ASCII, longer than a name) is left out: filtered here, it matches
  // nothing.
  function listQuery() {
    var q = $("#open-input").value.trim().toLowerCase();
    return q.length <= 64 && /^[\x20-\x7e]*$/.test(q) ? q : "";
  }
  function listPath(q) {
    return "/v1/channels?sort=size&limit=" + LIST_SHOWN + (q ? "&q=" + encodeURIComponent(q) : "");
  }

  function api(path, tok) {
    return fetch(path, { headers: { Authorization: "Bearer " + (tok || app.token) }, cache: "no-store", credentials: "omit" })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { status: r.status, body: body }; });
      });
  }

  function wsURL() { return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws"; }

  // ---- sign-in

  function readFragmentToken() {
    if (location.hash.length < 2) return null;
    var tok = new URLSearchParams(location.hash.slice(1)).get("token");
    if (tok) history.replaceState(null, "", location.pathname + location.search); // out of the address bar and history
    return tok;
  }

  function showSignin(msg) {
    $("#app").hidden = true;
    $("#signin").hidden = false;
    var e = $("#signin-error");
    e.textContent = msg || "";
    e.hidden = !msg;
    $("#signin-button").disabled = false;
    $("#token-input").focus();
  }

  // cleanToken takes the token out of what was pasted: a token has no white space, so a line break (a token copied
  // from a terminal or an e-mail) goes; a browser refuses it in a header or a WebSocket subprotocol.
  function cleanToken(raw) { return (raw || "").trim().replace(/^Bearer\s+/i, "").replace(/\s+/g, ""); }

  function refusal(res) {
    if (res.body && res.body.error === "token_expired") return "That token has expired.";
    return (res.body && res.body.message) ? "The server refused this token: " + res.body.message + "." : "The server refused this token.";
  }

  function signIn(raw) {
    var tok = cleanToken(raw);
    var claims;
    try { claims = decodeToken(tok); } catch (e) { save("sessionStorage", TOKEN_KEY, null); showSignin(e.message); return; }
    $("#signin-button").disabled = true;
    app.token = tok;
    app.claims = claims;
    var round = ++app.signing; // a later link, or a sign-out, makes this answer moot
    // GET /v1/channels checks the token: 200 for a "*" token, 403 for a valid token without "*", 401 otherwise.
    api(listPath(listQuery())).then(function (res) {
      if (round !== app.signing) return;
      if (res.status === 401) {
        app.token = null;
        save("sessionStorage", TOKEN_KEY, null);
        showSignin(refusal(res));
        return;
      }
      start(res.status === 200 && res.body ? res.body : null);
    }, function () {
      if (round === app.signing) start(null); // the server is unreachable: start anyway, the connection keeps retrying
    });
  }

  function start(list) {
    save("sessionStorage", TOKEN_KEY, app.token);
    $("#token-input").value = "";
    $("#signin").hidden = true;
    $("#app").hidden = false;
    app.expired = false;
    var g = grants(list);
    app.conn = { state: "connecting", resumes: 0, attempt: 0, retryAt: 0, resumedAt: 0, code: 0 };
    app.client = new UsherClient({ url: wsURL(), token: app.token, maxDelay: 10000 });
    app.client.onstate = onState;
    renderConn();

    var saved = null;
    try { saved = JSON.parse(load("sessionStorage", OPEN_KEY) || "null"); } catch (e) { saved = null; }
    if (!saved || !Array.isArray(saved.open)) saved = { open: [], active: null };
    saved.open.forEach(function (name) { if (!nameProblem(name)) openChannel(name, false); });
    if (saved.active && app.open.has(saved.active)) activate(saved.active);
    else if (app.open.size === 0 && g.exact.length === 1 && g.patterns.length === 0 && !app.all) openChannel(g.exact[0], true);
    updateEmpty();
    app.sideDirty = true;
    schedule();
  }

  // grants shows what app.claims grants: who, the picker's list (list, from GET /v1/channels, for a "*" token, which
  // is then polled) and the note under it. It returns the exact names and the prefix patterns.
  function grants(list) {
    var c = app.claims;
    app.all = c.channels.indexOf("*") >= 0;
    $("#who").textContent = c.sub || "Signed in";
    renderTokenInfo();
    var exact = c.channels.filter(function (g) { return g.indexOf("*") < 0; });
    var patterns = c.channels.filter(function (g) { return g !== "*" && g.indexOf("*") >= 0; });
    stopPolling();
    if (app.all) {
      takeList(list);
      app.listStatus = list ? "live" : "";
      $("#grant-note").textContent = "All channels with someone in them, refreshed every few seconds. Type any name to open a quiet one.";
      app.listTimer = setTimeout(pollList, LIST_POLL_MS);
    } else {
      app.list = exact.map(function (name) { return { channel: name }; });
      app.listStatus = "";
      $("#grant-note").textContent = patterns.length ?
        "This token also grants every channel starting with " + patterns.map(function (p) { return "\u201c" + p.slice(0, -1) + "\u201d"; }).join(", ") + ": type its name above." : "";
    }
    app.sideDirty = true;
    schedule();
    return { exact: exact, patterns: patterns };
  }

  function signOut() {
    app.signing++;
    stopPolling();
    if (app.client) { app.client.onstate = null; app.client.close(); }
    app.client = null;
    app.open.forEach(function (ch) { ch.destroy(); });
    app.open.clear();
    app.active = null;
    app.token = app.claims = null;
    app.expired = false;
    save("sessionStorage", TOKEN_KEY, null);
    save("sessionStorage", OPEN_KEY, null);
    hideRenew();
    showSignin("");
  }

  function renderTokenInfo() {
    var box = $("#token-info"), c = app.claims;
    box.textContent = "";
    box.appendChild(el("div", null, "Signed in" + (c.sub ? " as " + c.sub : "") + "; the token grants: " + c.channels.join(", ") + "."));
    if (typeof c.exp === "number") box.appendChild(el("div", "muted", "It expires on " + new Date(c.exp * 1000).toLocaleString() + "."));
    box.hidden = false;
  }

  // takeList keeps an answer of GET /v1/channels (listPath(q)) for the picker. An older Usher, without total,
  // ignores q, sort and limit: its answer is every active channel, which renderSide filters and counts itself.
  function takeList(body, q) {
    app.list = body && Array.isArray(body.channels) ? body.channels : [];
    var counted = !!body && typeof body.total === "number";
    app.listTotal = counted ? body.total : app.list.length;
    app.listQuery = counted ? (q === undefined ? listQuery() : q) : "";
  }

  // repoll asks for the list at once (after LIST_TYPED_MS without another key): what is typed in the box changed.
  function repoll() {
    if (!app.token || !app.all || app.expired) return;
    stopPolling();
    app.listTimer = setTimeout(pollList, LIST_TYPED_MS);
  }

  // pollList refreshes the picker's list of a "*" token every LIST_POLL_MS, until stopPolling (sign-out, an expired
  // token, a new token); an answer to a request of an earlier round of polling is ignored.
  function pollList() {
    app.listTimer = null;
    if (!app.token || !app.all || app.expired) return;
    var round = app.listRound;
    var again = function () { if (round === app.listRound) app.listTimer = setTimeout(pollList, LIST_POLL_MS); };
    if (document.hidden) { again(); return; }
    var q = listQuery();
    api(listPath(q)).then(function (res) {
      if (round !== app.listRound) return;
      if (res.status === 200 && res.body && Array.isArray(res.body.channels)) {
        takeList(res.body, q); // what was asked, though more may have been typed since
        app.listStatus = "live";
      } else if (res.status === 401) {
        app.listStatus = "refused";
        expire("The server no longer accepts this token.");
      } else {
        app.listStatus = "error " + res.status;
      }
      app.sideDirty = true;
      schedule();
      again();
    }, function () {
      if (round !== app.listRound) return;
      app.listStatus = "offline";
      app.sideDirty = true;
      schedule();
      again();
    });
  }

  function stopPolling() {
    app.listRound++;
    if (app.listTimer) clearTimeout(app.listTimer);
    app.listTimer = null;
  }

  // ---- an expired token, and a new one

  // expire stops what uses the token (the connection has stopped already, or stops at its next attempt) and asks
  // for a new one. The open channels stay as they are.
  function expire(why) {
    app.expired = true;
    stopPolling();
    if (app.all) { app.listStatus = "paused"; app.sideDirty = true; schedule(); }
    showRenew(why + " Paste a new token to go on: the open channels stay, and resume from their last event.", "");
  }

  // showRenew shows the request for a new token with msg, and err under it. While the token still works (a link
  // that could not be used), it can be dismissed.
  function showRenew(msg, err) {
    $("#renew").hidden = false;
    $("#renew-msg").textContent = msg;
    var e = $("#renew-error");
    e.textContent = err;
    e.hidden = !err;
    $("#renew-dismiss").hidden = app.expired;
    $("#renew-button").disabled = false;
  }

  function hideRenew() {
    $("#renew").hidden = true;
    $("#renew-input").value = "";
    $("#renew-error").hidden = true;
  }

  // renew takes a new token, pasted or from a link. After an expiry, or for the same user and grants, it keeps the
  // session: the open channels, their feeds, and the connection's place in each channel's events. After an expiry
  // the connection starts again at once and resumes every channel from its last event; otherwise the new token is
  // used from the next connection attempt (at the latest when the old token's connection ends with 4001, see
  // onState). For another user or other grants while the current token still works, it signs out and signs in,
  // once the server has taken the token: one it refuses (401) is reported, and the session goes on.
  function renew(raw) {
    var tok = cleanToken(raw), claims, client = app.client;
    var refuse = function (err) {
      showRenew(app.expired ? $("#renew-msg").textContent : "This token cannot be used; the console goes on with its current one.", err);
    };
    try { claims = decodeToken(tok); } catch (e) { refuse(e.message); return; }
    $("#renew-button").disabled = true;
    // Checked with the server first, also for another user: a token it refuses leaves the session as it is.
    var use = function (list) {
      if (!app.expired && !sameGrants(claims, app.claims)) { signOut(); signIn(tok); return; } // as a link for another user
      useToken(tok, claims, list);
    };
    api(listPath(listQuery()), tok).then(function (res) {
      if (app.client !== client) return; // signed out meanwhile
      if (res.status === 401) { refuse(refusal(res)); return; }
      use(res.status === 200 && res.body ? res.body : null);
    }, function () {
      if (app.client === client) use(null); // the server is unreachable: the connection retries
    });
  }

  function useToken(tok, claims, list) {
    app.token = tok;
    app.claims = claims;
    app.expired = false;
    save("sessionStorage", TOKEN_KEY, tok);
    hideRenew();
    grants(list);
    app.client.setToken(tok);
  }

  // sameGrants says whether two tokens' claims are for the same user and grant the same channels.
  function sameGrants(a, b) {
    return (a.sub || "") === (b.sub || "") && a.channels.slice().sort().join("\n") === b.channels.slice().sort().join("\n");
  }

  // linkToken acts on a #token= link opened while this tab is signed in, as a pasted token: renew decides.
  function linkToken(tok) { renew(tok); }

  // ---- connection state

  function onState(state, info) {
    var c = app.conn;
    if (state === "live") {
      c.attempt = 0;
      c.retryAt = 0;
      if (info.resumed) {
        c.resumes++;
        c.state = "resumed";
        c.resumedAt = Date.now();
        app.open.forEach(function (ch) {
          var seq = app.client.lastSeq(ch.name);
          ch.note(seq === null ? "Connection back: loading the roster" : "Connection back: resuming after event " + seq);
        });
      } else {
        c.state = "live";
      }
    } else if (state === "reconnecting") {
      if (c.state === "live" || c.state === "resumed") {
        app.open.forEach(function (ch) { ch.note("Connection lost after event " + (ch.seq === null ? "-" : ch.seq)); });
      }
      c.state = "reconnecting";
      c.attempt = info.attempt || c.attempt;
      c.retryAt = info.delay ? Date.now() + info.delay : 0;
    } else if (state === "closed") {
      c.state = "closed";
      c.code = info.code || 0;
      c.refused = info.code === 4001 && info.reason === "invalid_token";
      // usher.js stops with 4001 only for the token it has now (a token renewed while connected goes on by itself).
      if (info.code === 4001) {
        var refused = c.refused;
        app.open.forEach(function (ch) {
          ch.note((refused ? "The server refused the token after event " : "The token expired after event ") + (ch.seq === null ? "-" : ch.seq));
        });
        expire(refused ? "The server no longer accepts your token." : "Your token expired.");
      }
    } else {
      c.state = state;
    }
    renderConn();
  }

  function renderConn() {
    var c = app.conn, box = $("#conn"), now = Date.now();
    if (c.state === "resumed" && now - c.resumedAt > RESUMED_MS) c.state = "live";
    var label = { connecting: "Connecting", live: "Live", resumed: "Resumed", reconnecting: "Reconnecting", closed: "Disconnected" }[c.state] || c.state;
    var detail = "";
    if (c.state === "reconnecting") {
      detail = c.retryAt > now ? "retry in " + Math.ceil((c.retryAt - now) / 1000) + "s" : "trying" + (c.attempt > 1 ? " (attempt " + c.attempt + ")" : "");
    } else if (c.state === "resumed") {
      detail = "no event missed";
    } else if (c.state === "closed") {
      detail = c.code === 4001 ? (c.refused ? "token refused" : "token expired") : "";
    }
    box.dataset.state = c.state;
    box.dataset.resumes = String(c.resumes);
    $("#app").dataset.conn = c.state; // the counts look stale while the connection is down
    $(".conn-label", box).textContent = label;
    $(".conn-detail", box).textContent = detail;
    $("#retry").hidden = !(c.state === "reconnecting" && c.retryAt > now);
  }

  // ---- one watched channel

  function Channel(name) {
    this.name = name;
    this.seq = null;
    this.snapSeq = null;
    this.snapshots = 0;
    this.roles = { host: new Roster(), audience: new Roster(), user: new Roster() };
    this.feed = [];          // oldest first; trimmed to FEED_MAX
    this.feedNew = 0;        // entries added since the feed was last drawn
    this.feedRebuild = true;
    this.feedAt = 0;
    this.arrivals = [];      // local times of the last minute's joins, oldest first, for "arrived in the last minute"
    this.shownArrivals = 0;
    this.peak = 0;
    this.samples = [];       // [time ms, audience, hosts]
    this.chartAt = 0;
    this.dirty = true;
    this.filter = "";
    this.error = "";
    this.build();
  }

  Channel.prototype.build = function () {
    var self = this, root = document.importNode($("#panel-tpl").content, true).firstElementChild;
    root.dataset.channel = this.name;
    root.id = "panel-" + Math.random().toString(36).slice(2);
    $(".ch-name", root).textContent = this.name;
    $(".ch-name", root).title = this.name;
    this.root = root;
    this.stats = {};
    ["hosts", "audience", "arrivals", "peak"].forEach(function (k) {
      var box = $('[data-stat="' + k + '"]', root);
      self.stats[k] = { box: box, k: $(".k", box), v: $(".v", box) };
    });
    this.lists = {};
    ["host", "audience", "user"].forEach(function (r) {
      var g = $('.group[data-role="' + r + '"]', root);
      self.lists[r] = { group: g, n: $(".n", g), v: new VList($(".vlist", g)) };
    });
    this.feedEl = $(".feed", root);
    this.canvas = $("canvas", root);
    this.live = $(".ch-live", root);
    this.errEl = $(".panel-error", root);
    $(".close", root).addEventListener("click", function () { closeChannel(self.name); });
    $(".filter", root).addEventListener("input", function (ev) {
      self.filter = ev.target.value.trim().toLowerCase();
      self.dirty = true;
      schedule();
    });

    var tab = el("button", "tab");
    tab.type = "button";
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-controls", root.id);
    tab.dataset.channel = this.name;
    this.tabName = tab.appendChild(el("span", "tab-name", this.name));
    this.tabCount = tab.appendChild(el("span", "tab-count"));
    this.tabNew = tab.appendChild(el("span", "tab-new"));
    var x = tab.appendChild(el("span", "tab-x"));
    x.appendChild(icon("x"));
    x.setAttribute("role", "button");
    x.setAttribute("aria-label", "Close " + this.name);
    x.addEventListener("click", function (ev) { ev.stopPropagation(); closeChannel(self.name); });
    tab.addEventListener("click", function () { activate(self.name); });
    this.tab = tab;
    this.feedEl.appendChild(el("li", "empty-note", "Waiting for the roster\u2026"));
  };

  Channel.prototype.destroy = function () {
    if (this.feedTimer) clearTimeout(this.feedTimer);
    resizer.unobserve(this.root);
    resizer.unobserve(this.canvas);
    for (var r in this.lists) resizer.unobserve(this.lists[r].v.el);
    this.root.remove();
    this.tab.remove();
  };

  Channel.prototype.remove = function (uid) {
    for (var r in this.roles) {
      var m = this.roles[r].remove(uid);
      if (m) return m;
    }
    return null;
  };

  Channel.prototype.put = function (m) { this.roles[roleKey(m.role)].add(m); };

  Channel.prototype.audienceSize = function () { return this.roles.audience.size + this.roles.user.size; };

  Channel.prototype.snapshot = function (s) {
    var self = this;
    this.roles.host.clear(); this.roles.audience.clear(); this.roles.user.clear();
    [["host", s.hosts], ["audience", s.audience], ["user", s.users]].forEach(function (p) {
      (p[1] || []).forEach(function (m) {
        self.put({ uid: m.uid, account: m.account || "", platform: m.platform, clientType: m.clientType, since: m.since, role: p[0], arrivedAt: 0 });
      });
    });
    this.seq = this.snapSeq = s.seq;
    this.snapshots++;
    var total = this.roles.host.size + this.audienceSize();
    this.note(this.snapshots === 1 ?
      "Watching from event " + s.seq + ": " + fmtNum(total) + (total === 1 ? " person" : " people") + " here" :
      "Resynchronised: a fresh roster at event " + s.seq);
    this.peak = Math.max(this.peak, this.audienceSize());
    this.error = "";
    this.changed();
  };

  Channel.prototype.event = function (e) {
    this.seq = e.seq;
    var now = Date.now(), prev = null;
    switch (e.event) {
      case "join":
        prev = this.remove(e.uid);
        this.put({ uid: e.uid, account: e.account || "", platform: e.platform, clientType: e.clientType,
          since: e.ts || Math.floor(now / 1000), role: roleKey(e.role), arrivedAt: now });
        this.arrivals.push(now);
        this.arrivedLastMinute(now); // trimmed here too: a hidden tab draws nothing, so renderArrivals may not run
        break;
      case "leave":
        prev = this.remove(e.uid);
        break;
      case "role.change":
        prev = this.remove(e.uid);
        this.put(prev ?
          { uid: prev.uid, account: e.account || prev.account, platform: prev.platform, clientType: prev.clientType,
            since: prev.since, role: roleKey(e.role), arrivedAt: prev.arrivedAt } :
          { uid: e.uid, account: e.account || "", platform: e.platform, clientType: e.clientType,
            since: e.ts || Math.floor(now / 1000), role: roleKey(e.role), arrivedAt: 0 });
        break;
    }
    this.addFeed({ kind: e.event, e: e, prev: prev, at: now });
    this.peak = Math.max(this.peak, this.audienceSize());
    this.changed();
  };

  Channel.prototype.note = function (text) {
    this.addFeed({ kind: "note", text: text, at: Date.now() });
    this.changed();
  };

  Channel.prototype.fail = function (err) {
    this.error = err.code === "forbidden" ? "This token does not grant this channel." :
      err.code === "too_many_subscriptions" ? "The server allows no more channels on one connection: close one, then open this again." :
      err.code === "unavailable" ? "The server is loading its rosters; trying again." :
        (err.message || err.code || "Error");
    this.changed();
  };

  Channel.prototype.addFeed = function (entry) {
    this.feed.push(entry);
    this.feedNew++;
    if (this.feed.length > 2 * FEED_MAX) this.feed.splice(0, this.feed.length - FEED_MAX);
  };

  Channel.prototype.changed = function () { this.dirty = true; schedule(); };

  // visible says whether the panel is on screen, from the layout rules rather than from layout (which would force
  // the browser to lay the page out): side by side shows every panel, except on a phone; tabs show the active one.
  Channel.prototype.visible = function () {
    return this.name === app.active || ($("#panels").dataset.layout === "grid" && !phone.matches);
  };

  // arrivedLastMinute drops the arrival times older than ARRIVAL_WINDOW and counts the rest.
  Channel.prototype.arrivedLastMinute = function (now) {
    var a = this.arrivals, cut = now - ARRIVAL_WINDOW, i = 0;
    while (i < a.length && a[i] < cut) i++;
    if (i) a.splice(0, i);
    return a.length;
  };

  Channel.prototype.sample = function (now) {
    var a = this.audienceSize(), h = this.roles.host.size, s = this.samples, last = s[s.length - 1];
    if (last && now - last[0] < 1000 && s.length > 1) { last[1] = a; last[2] = h; return; }
    s.push([now, a, h]);
    if (s.length > SAMPLE_MAX) { // thin the older half: the chart keeps the whole session at a coarser grain
      var half = s.length >> 1, kept = [];
      for (var i = 0; i < half; i += 2) kept.push(s[i]);
      this.samples = kept.concat(s.slice(half));
    }
  };

  // render draws what changed since the last frame; cheap when nothing did.
  Channel.prototype.render = function (now) {
    var self = this, dirty = this.dirty;
    this.dirty = false;
    if (dirty) {
      var q = this.filter;
      var match = q ? function (m) { return String(m.uid).indexOf(q) === 0 || m.account.toLowerCase().indexOf(q) >= 0; } : null;
      ["host", "audience", "user"].forEach(function (r) {
        var roster = self.roles[r], order = roster.sweep(), L = self.lists[r], n = order.length, at;
        if (match) {
          var found = [];
          for (var i = n - 1; i >= 0; i--) if (match(order[i])) found.push(order[i]);
          n = found.length;
          at = function (i) { return found[i]; };
        } else {
          at = function (i) { return order[order.length - 1 - i]; }; // newest first
        }
        L.n.textContent = match ? fmtNum(n) + " of " + fmtNum(roster.size) : fmtNum(roster.size);
        L.v.set(n, at, match ? "No match" : r === "host" ? "No hosts" : "Nobody yet");
      });
      var comm = this.roles.user.size > 0 && this.roles.audience.size === 0;
      this.lists.user.group.hidden = this.roles.user.size === 0;
      this.lists.audience.group.hidden = comm;
      this.lists.user.group.classList.toggle("grow", comm);
      this.stats.audience.k.textContent = comm ? "Users" : "Audience";
      this.stats.hosts.v.textContent = fmtNum(this.roles.host.size);
      this.stats.audience.v.textContent = fmtNum(comm ? this.roles.user.size : this.audienceSize());
      this.stats.peak.v.textContent = fmtNum(this.peak);
      this.live.textContent = this.seq === null ? "" : "event " + this.seq;
      this.root.dataset.seq = this.seq === null ? "" : String(this.seq);
      this.root.dataset.snapshotSeq = this.snapSeq === null ? "" : String(this.snapSeq);
      this.root.dataset.snapshots = String(this.snapshots);
      this.errEl.textContent = this.error;
      this.errEl.hidden = !this.error;
      this.tabCount.textContent = fmtNum(this.audienceSize());
      this.sample(now);
      app.sideCounts = true;
    } else {
      ["host", "audience", "user"].forEach(function (r) { self.lists[r].v.draw(); });
    }
    if (this.feedNew && (this.feedNew < 5 || this.feedRebuild || now - this.feedAt >= FEED_EVERY)) {
      this.feedAt = now;
      this.renderFeed();
    } else if (this.feedNew && !this.feedTimer) { // a burst: draw the rest a little later
      this.feedTimer = setTimeout(function () { self.feedTimer = null; schedule(); }, FEED_EVERY);
    }
    this.renderArrivals(now);
    if (dirty || now - this.chartAt >= 1000) { // at most once a frame with changes, else once a second
      this.chartAt = now;
      drawChart(this.canvas, this.samples, now);
    }
  };

  Channel.prototype.renderArrivals = function (now) {
    var n = this.arrivedLastMinute(now), box = this.stats.arrivals.box;
    this.stats.arrivals.v.textContent = n ? "+" + fmtNum(n) : "0";
    if (n > this.shownArrivals && now - (this.bumpedAt || 0) > 1000 && box.animate && !reducedMotion.matches) {
      this.bumpedAt = now; // a flash at most once a second, without forcing a layout
      box.animate([{ backgroundColor: colors.greenSoft }, { backgroundColor: colors.surface2 }], { duration: 700, easing: "ease-out" });
    }
    this.shownArrivals = n;
    this.tabNew.textContent = n ? "+" + fmtNum(n) : "";
  };

  Channel.prototype.renderFeed = function () {
    var ul = this.feedEl, n = Math.min(this.feedNew, FEED_MAX), start = this.feed.length - 1, frag = document.createDocumentFragment();
    var rebuild = this.feedRebuild || this.feedNew >= FEED_MAX, flash = !rebuild && n <= 5; // a burst does not flash
    if (rebuild) n = Math.min(this.feed.length, FEED_MAX);
    for (var i = start; i > start - n; i--) {
      var li = feedItem(this.feed[i]);
      if (flash) li.classList.add("fresh");
      frag.appendChild(li);
    }
    if (rebuild) { ul.textContent = ""; ul.appendChild(frag); }
    else {
      var first = ul.firstElementChild;
      if (first && first.classList.contains("empty-note")) { ul.removeChild(first); first = ul.firstElementChild; }
      ul.insertBefore(frag, first);
      while (ul.children.length > FEED_MAX) ul.removeChild(ul.lastElementChild);
    }
    this.feedNew = 0;
    this.feedRebuild = false;
  };

  function who(parent, uid, account) {
    var named = account && account !== String(uid);
    parent.appendChild(el("b", null, named ? account : "uid " + uid));
    if (named) parent.appendChild(el("span", "muted", " " + uid));
  }

  function feedItem(f) {
    var li = el("li"), ic = li.appendChild(el("span", "ic")), txt = li.appendChild(el("span", "txt"));
    var when = li.appendChild(el("time", "when"));
    li.dataset.kind = f.kind;
    if (f.kind === "note") {
      li.className = "note";
      ic.appendChild(icon("note"));
      txt.textContent = f.text;
      when.textContent = fmtClock(f.at);
      return li;
    }
    var e = f.e;
    li.dataset.seq = String(e.seq);
    if (e.uid !== undefined) li.dataset.uid = String(e.uid);
    when.textContent = fmtClock(e.ts ? e.ts * 1000 : f.at);
    when.title = "event " + e.seq;
    var sub;
    switch (e.event) {
      case "join":
        ic.appendChild(icon("join"));
        who(txt, e.uid, e.account);
        txt.appendChild(document.createTextNode(" joined as " + (e.role === "host" ? "a host " : e.role === "user" ? "a user " : "audience ")));
        var p = platformOf(e.platform);
        sub = p.name + (CLIENT_TYPES[e.clientType] ? " \u00b7 " + CLIENT_TYPES[e.clientType] : "");
        txt.appendChild(el("span", "sub", sub));
        break;
      case "leave":
        ic.appendChild(icon("leave"));
        who(txt, e.uid, e.account || (f.prev && f.prev.account));
        txt.appendChild(document.createTextNode(" left" + (e.role === "host" ? " (host) " : " ")));
        var s = txt.appendChild(el("span", "sub"));
        s.appendChild(el("span", "why", e.reason === undefined || e.reason === null ? "channel closed" : (REASONS[e.reason] || "reason " + e.reason)));
        if (e.duration !== undefined && e.duration !== null) s.appendChild(document.createTextNode(" after " + fmtDur(e.duration)));
        li.dataset.reason = e.reason === undefined || e.reason === null ? "" : String(e.reason);
        break;
      case "role.change":
        ic.appendChild(icon("role"));
        who(txt, e.uid, e.account || (f.prev && f.prev.account));
        txt.appendChild(document.createTextNode(e.role === "host" ? " became a host" : e.role === "audience" ? " moved to the audience" : " became a user"));
        if (!f.prev) txt.appendChild(el("span", "sub", " not seen joining: added by the role change"));
        li.dataset.role = e.role || "";
        break;
      case "channel.create":
        ic.appendChild(icon("channel"));
        txt.textContent = "Channel started";
        break;
      case "channel.destroy":
        ic.appendChild(icon("channel"));
        txt.textContent = "Channel ended";
        break;
      default:
        ic.appendChild(icon("note"));
        txt.textContent = e.event;
    }
    return li;
  }

  // ---- a role's members

  // Roster holds the members of one role: a Map by uid, and an array in arrival order (oldest first) that the list
  // reads. A removal marks the member gone and leaves a hole, swept out before the list is drawn (or when holes
  // outnumber members), so that a join costs O(1) and a frame with thousands of joins copies nothing.
  function Roster() { this.clear(); }
  Roster.prototype.clear = function () { this.byUID = new Map(); this.order = []; this.holes = 0; this.size = 0; };
  Roster.prototype.add = function (m) { this.byUID.set(m.uid, m); this.order.push(m); this.size = this.byUID.size; };
  Roster.prototype.remove = function (uid) {
    var m = this.byUID.get(uid);
    if (!m) return null;
    this.byUID.delete(uid);
    this.size = this.byUID.size;
    m.gone = true;
    if (++this.holes > 64 && this.holes > this.size) this.sweep();
    return m;
  };
  Roster.prototype.sweep = function () {
    if (this.holes) {
      this.order = this.order.filter(function (m) { return !m.gone; });
      this.holes = 0;
    }
    return this.order;
  };

  // ---- virtualised list: a tall empty box for the scrollbar, and only the rows in view inside it

  function VList(host) {
    var self = this;
    this.el = host;
    this.n = 0;
    this.at = null;
    this.pool = [];
    this.inner = host.appendChild(el("div", "vlist-inner"));
    this.rows = this.inner.appendChild(el("div", "vlist-rows"));
    this.empty = host.appendChild(el("div", "vlist-empty"));
    this.queued = false;
    // The list's height and scroll position are remembered when they change, so that drawing never reads layout
    // (a read after a write would force the browser to lay the page out in the middle of a frame).
    this.h = 0;
    this.top = 0;
    host._vlist = this;
    resizer.observe(host);
    host.addEventListener("scroll", function () {
      self.top = host.scrollTop;
      if (self.queued) return;
      self.queued = true;
      requestAnimationFrame(function () { self.queued = false; self.draw(); });
    }, { passive: true });
  }

  // set gives the list n items; at(i) returns item i, from 0 at the top.
  VList.prototype.set = function (n, at, emptyText) {
    if (n !== this.n) this.inner.style.height = n * ROW + "px";
    this.n = n;
    this.at = at;
    this.empty.textContent = emptyText;
    this.empty.hidden = n > 0;
    this.draw();
  };

  VList.prototype.draw = function () {
    var h = this.h, n = this.n, top = Math.min(this.top, Math.max(0, n * ROW - h));
    var first = Math.min(n, Math.max(0, Math.floor(top / ROW) - OVERSCAN));
    var last = Math.min(n, Math.ceil((top + h) / ROW) + OVERSCAN);
    var count = h ? Math.max(0, last - first) : 0;
    while (this.pool.length < count) this.pool.push(this.rows.appendChild(makeRow()));
    while (this.pool.length > count) this.rows.removeChild(this.pool.pop());
    this.rows.style.transform = "translateY(" + first * ROW + "px)";
    var now = Date.now();
    for (var i = 0; i < count; i++) fillRow(this.pool[i], this.at(first + i), now);
  };

  function makeRow() {
    var r = el("div", "row");
    r._pf = r.appendChild(el("span", "pf"));
    var w = r.appendChild(el("span", "who"));
    r._acc = w.appendChild(el("span", "acc"));
    r._uid = w.appendChild(el("span", "uid"));
    var meta = r.appendChild(el("span", "meta"));
    r._tag = meta.appendChild(el("span", "tag"));
    r._pname = meta.appendChild(el("span", "pname"));
    r._t = r.appendChild(el("span", "t"));
    r._m = null;
    return r;
  }

  function fillRow(r, m, now) {
    if (r._m !== m) {
      r._m = m;
      var p = platformOf(m.platform), ct = CLIENT_TYPES[m.clientType];
      r.dataset.uid = String(m.uid);
      r.dataset.role = m.role;
      if (r._icon !== p.icon) { r._pf.replaceChildren(icon(p.icon)); r._icon = p.icon; }
      r._pf.title = p.name;
      var named = m.account && m.account !== String(m.uid);
      r._acc.textContent = named ? m.account : "uid " + m.uid;
      r._uid.textContent = named ? String(m.uid) : "";
      r._pname.textContent = p.name;
      r._tag.textContent = ct || "";
      r._tag.hidden = !ct;
      r._t.title = "in the channel since " + fmtClock(m.since * 1000);
    }
    r._t.textContent = fmtDur(now / 1000 - m.since);
    var age = now - m.arrivedAt, fresh = m.arrivedAt > 0 && age < NEW_MS;
    if (r.classList.contains("new") !== fresh) r.classList.toggle("new", fresh);
    if (fresh) r.style.setProperty("--fresh", (1 - 0.7 * age / NEW_MS).toFixed(2));
  }

  // ---- chart of audience size over the session (canvas; step lines, since counts change in steps)

  // colors are the theme's, read once per theme change: reading styles in every frame would force style work.
  var colors = {};
  function readColors() {
    var st = getComputedStyle(document.documentElement), v = function (n) { return st.getPropertyValue(n).trim(); };
    colors = { a: v("--chart-a"), h: v("--chart-h"), grid: v("--grid"), muted: v("--muted"), font: v("--font"),
      greenSoft: v("--green-soft"), surface2: v("--surface-2") };
  }

  function niceTop(v) {
    if (v <= 4) return 4;
    var p = Math.pow(10, Math.floor(Math.log10(v))), f = v / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  }

  // drawChart draws s on canvas cv, whose CSS size the ResizeObserver keeps in cv._w and cv._h.
  function drawChart(cv, s, now) {
    var w = cv._w, h = cv._h;
    if (!w || !h || s.length === 0) return;
    var dpr = window.devicePixelRatio || 1;
    var ctx = cv.getContext("2d");
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr) || cv._font !== colors.font) {
      cv.width = Math.round(w * dpr); // resets the context, font included
      cv.height = Math.round(h * dpr);
      ctx.font = "11px " + colors.font; // setting a font reads styles: only when it changes
      cv._font = colors.font;
      cv._top = 0;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var colA = colors.a, colH = colors.h, grid = colors.grid, muted = colors.muted;
    var max = 0;
    for (var i = 0; i < s.length; i++) max = Math.max(max, s[i][1], s[i][2]);
    var top = niceTop(max * 1.1), padR = 8, padT = 8, padB = 18;
    if (cv._top !== top) { cv._top = top; cv._padL = Math.ceil(ctx.measureText(fmtNum(top)).width) + 14; }
    var padL = cv._padL;
    var t0 = s[0][0], t1 = Math.max(now, t0 + 60000);
    var X = function (t) { return padL + (t - t0) / (t1 - t0) * (w - padL - padR); };
    var Y = function (v) { return padT + (1 - v / top) * (h - padT - padB); };
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    [0, top / 2, top].forEach(function (v) {
      ctx.strokeStyle = grid;
      ctx.beginPath(); ctx.moveTo(padL, Math.round(Y(v)) + .5); ctx.lineTo(w - padR, Math.round(Y(v)) + .5); ctx.stroke();
      ctx.fillStyle = muted;
      ctx.fillText(fmtNum(v), padL - 8, Y(v));
    });
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "left";
    ctx.fillText(fmtClock(t0), padL, h - 3);
    ctx.textAlign = "right";
    if (X(now) - padL > 130) ctx.fillText("now", X(now), h - 3); // else it would overlap the start time

    var step = function (k) {
      ctx.beginPath();
      ctx.moveTo(X(s[0][0]), Y(s[0][k]));
      for (var j = 1; j < s.length; j++) { ctx.lineTo(X(s[j][0]), Y(s[j - 1][k])); ctx.lineTo(X(s[j][0]), Y(s[j][k])); }
      ctx.lineTo(X(now), Y(s[s.length - 1][k]));
    };
    step(1);
    ctx.lineTo(X(now), Y(0));
    ctx.lineTo(X(s[0][0]), Y(0));
    ctx.closePath();
    var g = ctx.createLinearGradient(0, padT, 0, h - padB);
    g.addColorStop(0, colA + "55");
    g.addColorStop(1, colA + "05");
    ctx.fillStyle = g;
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = colA;
    step(1);
    ctx.stroke();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = colH;
    step(2);
    ctx.stroke();
  }

  // ---- opening, closing and showing channels

  function handlers(ch) {
    return {
      snapshot: function (s) { ch.snapshot(s); },
      event: function (e) { ch.event(e); },
      reset: function () { ch.note("Too far behind to replay: loading a fresh roster"); },
      error: function (err) { ch.fail(err); },
      // A subscribe served after a refusal ("unavailable") may resume without a snapshot: the refusal is over.
      subscribed: function () { if (ch.error) { ch.error = ""; ch.changed(); } }
    };
  }

  function openChannel(name, focus) {
    var problem = nameProblem(name);
    if (problem) { openError(problem); return false; }
    var ch = app.open.get(name);
    if (!ch) {
      if (app.open.size >= MAX_OPEN) { openError("At most " + MAX_OPEN + " channels at once: close one first."); return false; }
      ch = new Channel(name);
      app.open.set(name, ch);
      $("#panels").appendChild(ch.root);
      $("#tabs").appendChild(ch.tab);
      resizer.observe(ch.root);
      resizer.observe(ch.canvas);
      app.client.subscribe(name, handlers(ch));
    }
    openError("");
    if (focus || !app.active) activate(name);
    saveOpen();
    updateEmpty();
    return true;
  }

  function closeChannel(name) {
    var ch = app.open.get(name);
    if (!ch) return;
    if (app.client) app.client.unsubscribe(name);
    ch.destroy();
    app.open.delete(name);
    if (app.active === name) {
      var rest = Array.from(app.open.keys());
      app.active = null;
      if (rest.length) activate(rest[rest.length - 1]);
    }
    saveOpen();
    updateEmpty();
    app.sideDirty = true;
    schedule();
  }

  function activate(name) {
    app.active = name;
    app.open.forEach(function (ch, n) {
      var on = n === name;
      ch.root.classList.toggle("active", on);
      ch.tab.setAttribute("aria-selected", on ? "true" : "false");
      ch.tab.tabIndex = on ? 0 : -1;
      if (on) { ch.dirty = true; ch.feedRebuild = true; ch.feedNew = ch.feedNew || 1; }
    });
    var ch = app.open.get(name);
    if (ch && $("#panels").dataset.layout === "grid") ch.root.scrollIntoView({ block: "nearest" });
    if (ch) ch.tab.scrollIntoView({ block: "nearest", inline: "nearest" });
    setDrawer(false);
    saveOpen();
    app.sideDirty = true;
    schedule();
  }

  function saveOpen() {
    save("sessionStorage", OPEN_KEY, JSON.stringify({ open: Array.from(app.open.keys()), active: app.active }));
  }

  function updateEmpty() { $("#empty").hidden = app.open.size > 0; }

  function openError(msg) {
    var e = $("#open-error");
    e.textContent = msg;
    e.hidden = !msg;
  }

  function setLayout(layout) {
    var panels = $("#panels");
    panels.dataset.layout = layout;
    document.querySelectorAll("#layout button").forEach(function (b) {
      b.setAttribute("aria-pressed", b.dataset.layout === layout ? "true" : "false");
    });
    save("localStorage", LAYOUT_KEY, layout);
    app.open.forEach(function (ch) { ch.dirty = true; ch.feedRebuild = true; ch.feedNew = ch.feedNew || 1; });
    schedule();
  }

  function setDrawer(open) {
    $("#side").classList.toggle("open", open);
    $("#scrim").hidden = !open;
    $("#menu").setAttribute("aria-expanded", open ? "true" : "false");
  }

  // ---- the channel picker

  // renderSide updates the picker in place: each channel keeps its <li> and <button> for as long as it is listed,
  // and only what changed is touched (texts, the "open" mark, the order), so that a button under the pointer or with
  // the keyboard focus survives the updates, which come every 300 ms while an open channel has events.
  function renderSide() {
    app.sideDirty = false;
    var ul = $("#channel-list"), q = $("#open-input").value.trim().toLowerCase();
    var byName = new Map();
    app.list.forEach(function (c) { byName.set(c.channel, c); });
    var extra = new Set(); // open channels the list lacks: quiet, or active but past what the server sent
    app.open.forEach(function (ch, name) { if (!byName.has(name)) { byName.set(name, { channel: name }); extra.add(name); } });
    var items = Array.from(byName.values());
    if (app.all) {
      items.sort(function (a, b) { return size(b) - size(a) || (a.channel < b.channel ? -1 : a.channel > b.channel ? 1 : 0); });
    }
    if (q) items = items.filter(function (c) { return c.channel.toLowerCase().indexOf(q) >= 0; });
    var shown = new Map(), want = [];
    items.slice(0, LIST_SHOWN).forEach(function (c) {
      var it = pickerItem(c.channel), open = app.open.get(c.channel), h, a;
      if (open && open.snapshots) { h = open.roles.host.size; a = open.audienceSize(); }
      else if (c.counts) { h = c.counts.hosts; a = c.counts.audience + c.counts.users; }
      if (open && !it.open.parentNode) it.b.insertBefore(it.open, it.name.nextSibling);
      else if (!open && it.open.parentNode) it.open.remove();
      if (h === undefined) it.counts.remove();
      else {
        setText(it.hosts, fmtNum(h) + (h === 1 ? " host" : " hosts"));
        setText(it.audience, fmtNum(a) + " audience");
        if (!it.counts.parentNode) it.b.appendChild(it.counts);
      }
      if (c.channel === app.active) it.b.setAttribute("aria-current", "true");
      else it.b.removeAttribute("aria-current");
      shown.set(c.channel, it);
      want.push(it.li);
    });
    app.picker.forEach(function (it, name) { if (!shown.has(name)) { it.li.remove(); app.picker.delete(name); } });
    var more = pickerMore.more, none = pickerMore.none;
    var hidden = Math.max(0, items.length - LIST_SHOWN);
    // Only when the list was asked for the text in the box: text no name can contain is not sent (listQuery).
    if (app.all && app.listQuery === q) {
      // Not sent by the server, but for the active open channels listed here anyway: counted once, not twice.
      var listedActive = items.filter(function (c) { return extra.has(c.channel) && size(c) > 0; }).length;
      hidden += Math.max(0, app.listTotal - app.list.length - listedActive);
    }
    if (hidden > 0) {
      setText(more, fmtNum(hidden) + " more: type to narrow the list");
      want.push(more);
    } else more.remove();
    if (items.length === 0) {
      setText(none, q ? "No channel matches; press Open to watch it anyway." : app.all ? "No channel has anyone in it right now." : "Type a channel name to open it.");
      want.push(none);
    } else none.remove();
    arrange(ul, want);
    var st = $("#list-status");
    setText(st, app.all ? (app.listStatus === "live" ? fmtNum(app.listTotal) + (!app.listQuery ? " active" : app.listTotal === 1 ? " match" : " matches") : app.listStatus === "offline" ? "offline" : app.listStatus) : "");
  }

  var pickerMore = { more: el("li", "cl-more"), none: el("li", "cl-more") };

  // pickerItem returns the picker's entry of a channel, made the first time the channel is listed.
  function pickerItem(name) {
    var it = app.picker.get(name);
    if (it) return it;
    var li = el("li"), b = li.appendChild(el("button"));
    li.dataset.channel = name;
    b.type = "button";
    it = { li: li, b: b, name: b.appendChild(el("span", "cl-name", name)), open: el("span", "cl-open", "open"),
      counts: el("span", "cl-counts"), hosts: el("span", "cl-hosts"), audience: el("span", "cl-audience") };
    it.counts.appendChild(it.hosts);
    it.counts.appendChild(it.audience);
    b.addEventListener("click", function () { openChannel(name, true); });
    app.picker.set(name, it);
    return it;
  }

  function setText(e, text) { if (e.textContent !== text) e.textContent = text; }

  // arrange makes want (elements of ul or new ones) ul's children, in order, moving as few as it can: the elements
  // whose order does not change (a longest run of them in increasing old position) stay where they are, and the
  // others are inserted around them. Moving an element takes the focus off it, so the focus is given back.
  function arrange(ul, want) {
    var wanted = new Set(want), pos = new Map(), i = 0;
    Array.prototype.slice.call(ul.children).forEach(function (e) {
      if (wanted.has(e)) pos.set(e, i++);
      else e.remove();
    });
    var p = want.map(function (e) { return pos.has(e) ? pos.get(e) : -1; });
    // Longest increasing subsequence of p (new elements excluded): tails[k] ends the best run of length k + 1.
    var tails = [], prev = [], keep = [];
    for (i = 0; i < p.length; i++) {
      if (p[i] < 0) continue;
      var lo = 0, hi = tails.length;
      while (lo < hi) { var mid = (lo + hi) >> 1; if (p[tails[mid]] < p[i]) lo = mid + 1; else hi = mid; }
      prev[i] = lo ? tails[lo - 1] : -1;
      tails[lo] = i;
    }
    for (i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = prev[i]) keep[i] = true;
    var focused = document.activeElement, after = null;
    for (i = want.length - 1; i >= 0; i--) {
      if (!keep[i]) ul.insertBefore(want[i], after);
      after = want[i];
    }
    if (focused && focused !== document.activeElement && ul.contains(focused)) focused.focus({ preventScroll: true });
  }

  function size(c) {
    var open = app.open.get(c.channel);
    if (open && open.snapshots) return open.audienceSize() + open.roles.host.size;
    return c.counts ? c.counts.hosts + c.counts.audience + c.counts.users : -1;
  }

  // ---- frames and the one-second tick

  var frameQueued = false;
  function schedule() {
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(frame);
  }

  function frame() {
    frameQueued = false;
    var now = Date.now();
    app.open.forEach(function (ch) {
      if (ch.visible()) ch.render(now);
      else if (ch.dirty) {
        ch.dirty = false;
        ch.tabCount.textContent = fmtNum(ch.audienceSize());
        ch.renderArrivals(now);
        app.sideCounts = true;
      }
    });
    if (app.sideCounts && now - app.sideAt > 300) { app.sideCounts = false; app.sideDirty = true; }
    if (app.sideDirty) { app.sideAt = now; renderSide(); }
  }

  function tick() {
    if (!app.token) return;
    var now = Date.now();
    app.open.forEach(function (ch) {
      ch.sample(now);
      if (!ch.visible()) ch.renderArrivals(now);
    });
    renderConn();
    schedule(); // visible panels: time in channel counts up, highlights fade, the chart moves on
  }

  var resizer = new ResizeObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.target.tagName === "CANVAS") { e.target._w = e.contentRect.width; e.target._h = e.contentRect.height; }
      if (e.target._vlist) { e.target._vlist.h = e.target.clientHeight; e.target._vlist.top = e.target.scrollTop; }
    });
    app.open.forEach(function (ch) { ch.dirty = true; });
    schedule();
  });

  // ---- theme

  function applyTheme() {
    var t = load("localStorage", THEME_KEY) || "auto", b = $("#theme");
    if (t === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = t;
    var label = "Theme: " + (t === "auto" ? "automatic" : t);
    b.title = label;
    b.setAttribute("aria-label", label);
  }

  // ---- wiring

  $("#signin-form").addEventListener("submit", function (ev) { ev.preventDefault(); signIn($("#token-input").value); });
  $("#signout").addEventListener("click", signOut);
  $("#renew").addEventListener("submit", function (ev) { ev.preventDefault(); renew($("#renew-input").value); });
  $("#renew-dismiss").addEventListener("click", hideRenew);
  $("#open-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (openChannel($("#open-input").value.trim(), true)) { $("#open-input").value = ""; app.sideDirty = true; schedule(); repoll(); }
  });
  $("#open-input").addEventListener("input", function () { openError(""); app.sideDirty = true; schedule(); repoll(); });
  $("#layout").addEventListener("click", function (ev) {
    var b = ev.target.closest("button");
    if (b) setLayout(b.dataset.layout);
  });
  $("#theme").addEventListener("click", function () {
    var order = ["auto", "dark", "light"], t = load("localStorage", THEME_KEY) || "auto";
    save("localStorage", THEME_KEY, order[(order.indexOf(t) + 1) % order.length]);
    applyTheme();
    readColors();
    app.open.forEach(function (ch) { ch.dirty = true; });
    schedule();
  });
  document.querySelectorAll("[data-open-help]").forEach(function (b) {
    b.addEventListener("click", function () { $("#help-dialog").showModal(); });
  });
  $("#retry").addEventListener("click", function () { if (app.client) app.client.retryNow(); });
  $("#menu").addEventListener("click", function () { setDrawer(!$("#side").classList.contains("open")); });
  $("#scrim").addEventListener("click", function () { setDrawer(false); });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") setDrawer(false); });
  window.addEventListener("online", function () { if (app.client) app.client.retryNow(); });
  window.addEventListener("hashchange", function () {
    var tok = readFragmentToken();
    if (tok) { if (app.token && app.client) linkToken(tok); else signIn(tok); }
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { app.open.forEach(function (ch) { ch.dirty = true; }); schedule(); }
  });
  phone.addEventListener("change", function () { app.open.forEach(function (ch) { ch.dirty = true; }); schedule(); });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () {
    readColors();
    app.open.forEach(function (ch) { ch.dirty = true; });
    schedule();
  });

  applyTheme();
  readColors();
  setLayout(load("localStorage", LAYOUT_KEY) === "grid" ? "grid" : "tabs");
  setInterval(tick, 1000);
  var first = readFragmentToken() || load("sessionStorage", TOKEN_KEY);
  if (first) signIn(first);
  else showSignin("");
})();
