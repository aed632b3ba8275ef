// usher.js: a small, dependency-free client for Usher's WebSocket presence stream (GET /v1/ws).
// Works in browsers and React Native (anything with a standard WebSocket).
//
//   const usher = new UsherClient({ url: "wss://usher.example.com/v1/ws", token });
//   usher.onstate = (state, info) => console.log(state, info);   // connecting, live, reconnecting, closed
//                                   // info.resumed on "live" after a reconnection; info.delay while waiting,
//                                   // info.timeout when the last attempt was abandoned after connectTimeout
//   usher.subscribe("show-1", {
//     snapshot(s) { ... },   // the roster: {channel, seq, epoch, hosts, audience, users, counts}
//     event(e) { ... },      // a presence event: {seq, channel, event, role, uid, ...}
//     reset() { ... },       // the server could not resume: a snapshot follows
//     error(err) { ... },    // {code, message}, e.g. forbidden; after "unavailable" (the server is loading its
//                            // rosters) the client subscribes again by itself, with backoff; at the 3rd refusal
//                            // on one connection (unavailableTries) it reconnects (perhaps to another instance)
//   });
//
// It keeps the last seq of each channel and, when the connection drops, reconnects with backoff and resumes every
// subscription from its last seq: no event is lost or repeated. The backoff starts over only once a connection has
// stayed up for stableAfter (10 s), so a server that accepts and then closes is not hammered. At most 16 subscribes
// wait for their answer at a time, the others are sent as answers come (a server closes a connection on which too
// many wait), so an app may subscribe to any number of channels at once; those past the server's limit per
// connection get the error too_many_subscriptions and are dropped. When the token has
// expired (the server closed with 4001, or a reconnection was refused after the token's lifetime had passed: the
// server answers 401, which a browser reports only as a failed connection) the client stops with state "closed" and
// info {code: 4001}; setToken(newToken) then reconnects and resumes. So it does, with reason "invalid_token", when
// the server refuses the token itself (signed with another key, as after the JWT secret was changed): no retry could
// succeed with it. So it does too, at once and without trying to connect, for a token that a WebSocket subprotocol
// cannot carry (a space, a line break, "=", "/": no JWT has them) unless tokenIn is "query". A token whose claims
// cannot be read is taken as it is, its lifetime unknown: the server decides. A token given with setToken while connected
// (renewed before it expires) is used by the next connection: a 4001 for the old one then reconnects with it. The lifetime is measured on this device from
// when the token was given (exp - iat), so a device clock that is off does not matter. By default the token travels in the WebSocket
// subprotocol list ("usher", "bearer.<token>"), so it never appears in a URL or an access log; pass
// tokenIn: "query" to use ?token= instead. A connection attempt that neither opens nor fails within connectTimeout
// (10 s; a black-holed network, a proxy that accepts and goes silent) is abandoned and retried. close() stops the
// client for good and leaves no timer of it running (a React Native screen can close it as it unmounts). A socket the
// client gave up on (connectTimeout, close()) that opens all the same, as React Native's can on Android, is closed as
// it opens, and frames of a socket no longer the client's are ignored.
(function (root) {
  "use strict";

  function UsherClient(opts) {
    if (!opts || !opts.url || !opts.token) throw new Error("UsherClient: url and token are required");
    this.url = opts.url;
    this.token = opts.token;
    this.tokenSetAt = Date.now();
    this.tokenIn = opts.tokenIn || "protocol";
    this.minDelay = opts.minDelay || 500;
    this.maxDelay = opts.maxDelay || 30000;
    this.connectTimeout = opts.connectTimeout || 10000;
    this.stableAfter = opts.stableAfter || 10000;
    this.unavailableTries = opts.unavailableTries || 3;
    this.WebSocket = opts.WebSocket || root.WebSocket;
    this.onstate = null;
    // Maps without a prototype: a channel may be named "constructor" or "__proto__".
    this.subs = Object.create(null); // channel -> {handlers, seq}
    this.awaiting = Object.create(null); // channel -> subscribes sent on this connection and not answered yet
    this.inFlight = 0; // the sum of awaiting: subscribes waiting for their answer, at most subscribeWindow
    this.queue = []; // channels whose subscribe waits for room in the window, in the order they are to be sent
    this.queued = Object.create(null); // channel -> true while it is in queue (each channel is there once at most)
    this.sent = Object.create(null); // channel -> true once subscribed on this connection, until unsubscribed
    this.ws = null;
    this.attempt = 0;
    this.closed = false;
    this.timer = null;
    this.connectTimer = null;
    this.stableTimer = null;
    this.everLive = false;
    this.expired = false; // stopped because the token expired: setToken starts again
    this._connect();
  }

  // _state tells the app. An exception of onstate is reported as uncaught, apart, and does not stop the client in the
  // middle of a reconnection (the timer of the next attempt is set after the state is told).
  UsherClient.prototype._state = function (state, info) {
    this.state = state;
    if (!this.onstate) return;
    try {
      this.onstate(state, info || {});
    } catch (e) {
      setTimeout(function () { throw e; }, 0);
    }
  };

  UsherClient.prototype._connect = function () {
    var self = this, token = this.token; // the token this connection presents
    var url = this.url, protocols = ["usher"];
    if (this.tokenIn === "query") {
      url += (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(token);
    } else {
      protocols.push("bearer." + token);
    }
    this._state(this.attempt === 0 ? "connecting" : "reconnecting", { attempt: this.attempt });
    if (this.closed) return; // close() from onstate
    this.opened = false;
    if (this.tokenIn !== "query" && !subprotocolToken.test(token)) {
      // A WebSocket throws on a subprotocol with any other character (a space, a line break, "=", "/"), at every
      // attempt. No token the server takes has one (a JWT is base64url and dots), so stop as when the server
      // refuses a token; in a moment, so that an app that has just made the client (and sets onstate after) hears
      // it. A token given meanwhile is tried instead.
      this.timer = setTimeout(function () {
        self.timer = null;
        if (self.closed) return;
        if (self.token === token) self._expire("invalid_token");
        else self._connect();
      }, 0);
      return;
    }
    var ws = new this.WebSocket(url, protocols);
    this.ws = ws;
    // Not every WebSocket reports a handshake that never completes (Node's does not when the peer closes before
    // answering), so an attempt has a deadline of its own.
    this.connectTimer = setTimeout(function () {
      self.connectTimer = null;
      if (self.ws !== ws || ws.readyState === 1) return;
      self.ws = null; // its close event, if one ever comes, is ignored
      try { ws.close(); } catch (e) { /* some implementations throw while connecting */ }
      self._retry({ code: 1006, timeout: true });
    }, this.connectTimeout);
    ws.onopen = function () {
      // A socket abandoned (connectTimeout, close()) may open all the same: React Native's cannot cancel a
      // handshake on Android. It is not this client's connection: close it, take nothing from it.
      if (self.ws !== ws || self.closed) { try { ws.close(1000, "abandoned"); } catch (e) { /* closed already */ } return; }
      self._clearConnectTimer();
      self.opened = true;
      var resumed = self.everLive;
      self.everLive = true;
      // The backoff starts over only once this connection has lasted: a server that accepts and closes at once
      // (overloaded, shutting down, or closing a client as too slow) sees the delays grow.
      self.stableTimer = setTimeout(function () { self.stableTimer = null; if (self.ws === ws) self.attempt = 0; }, self.stableAfter);
      // A new connection: nothing of the old one can arrive, and every subscription is made again, in a stable
      // order, through the window.
      self._forgetConnection();
      for (var ch in self.subs) { self.subs[ch].retries = 0; self._queueSubscribe(ch); }
      self._state("live", { resumed: resumed });
    };
    ws.onmessage = function (m) {
      if (self.ws !== ws || self.closed) return; // React Native delivers frames to a socket closing, or abandoned
      var f;
      try { f = JSON.parse(m.data); } catch (e) { return; }
      self._frame(f);
    };
    ws.onclose = function (ev) {
      if (self.ws !== ws) return;
      self._clearConnectTimer();
      self._clearStableTimer();
      self.ws = null;
      if (self.closed) { self._state("closed", { code: ev.code, reason: ev.reason }); return; }
      // 4001 ends this connection's token; one given since (setToken) is used by the next connection.
      if (ev.code === 4001 && token === self.token) { self._expire(ev.reason); return; }
      self._retry(ev);
    };
    ws.onerror = function () { /* onclose follows */ };
  };

  UsherClient.prototype._clearConnectTimer = function () {
    if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null; }
  };

  UsherClient.prototype._clearStableTimer = function () {
    if (this.stableTimer) { clearTimeout(this.stableTimer); this.stableTimer = null; }
  };

  // _clearSubTimer cancels a subscription's pending subscribe after "unavailable" (see _resubscribeLater).
  UsherClient.prototype._clearSubTimer = function (sub) {
    if (sub.timer) { clearTimeout(sub.timer); sub.timer = null; }
  };

  // _expire stops on an expired token: the server would refuse every attempt with 401, which a browser reports only
  // as a failed connection, so retrying would go on for ever. setToken starts again.
  UsherClient.prototype._expire = function (reason) {
    this.closed = true;
    this.expired = true;
    this._state("closed", { code: 4001, reason: reason || "token expired" });
  };

  UsherClient.prototype._retry = function (ev) {
    var self = this;
    if (!this.opened) {
      // A browser says nothing of why a connection did not open. Past the token's lifetime on this device, stop;
      // otherwise ask the server over HTTP, which answers 401 token_expired before any upgrade.
      if (this._tokenExpired()) { this._expire(); return; }
      this._probe();
    }
    this.attempt++;
    // Exponential backoff with full jitter, so that many clients do not reconnect in step.
    var cap = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt - 1));
    var delay = Math.round(cap / 2 + Math.random() * cap / 2);
    var info = { attempt: this.attempt, delay: delay, code: ev && ev.code };
    if (ev && ev.timeout) info.timeout = true;
    this._state("reconnecting", info);
    if (this.closed) return; // close() from onstate
    this.timer = setTimeout(function () { self.timer = null; if (!self.closed) self._connect(); }, delay);
  };

  UsherClient.prototype._frame = function (f) {
    var ch = f.channel;
    if (typeof ch !== "string") return; // every frame for the app names its channel (pong does not)
    var sub = this.subs[ch];
    if (this.awaiting[ch] > 0) {
      // Frames sent before the server took the latest subscribe belong to an earlier subscription of the channel
      // (one unsubscribed, or replaced by subscribing again): drop them until its answer.
      if (f.type !== "subscribed" && f.type !== "error") return;
      // The answer to one subscribe (the server answers them in order, each once): its place in the window goes to
      // the next waiting, before the app's handlers run (one that throws must not stall the queue).
      this.awaiting[ch]--;
      this.inFlight--;
      this._sendQueued();
      if (this.awaiting[ch] > 0) return;
    }
    // The channel subscribed again and its subscribe still waiting for room in the window: what the server sends
    // until then is of the earlier subscription.
    if (this.queued[ch]) return;
    switch (f.type) {
      case "snapshot":
        if (!sub) return;
        sub.seq = f.seq;
        sub.epoch = f.epoch; // the stream the seqs count in: a resume names it
        call(sub.handlers.snapshot, f);
        break;
      case "presence":
        if (!sub || f.seq <= sub.seq) return; // never apply an event twice
        sub.seq = f.seq;
        call(sub.handlers.event, f);
        break;
      case "reset":
        if (sub) { sub.seq = null; call(sub.handlers.reset, f); }
        break;
      case "error":
        if (sub) {
          if (f.code === "forbidden" || f.code === "too_many_subscriptions") delete this.subs[f.channel];
          if (f.code === "unavailable") this._resubscribeLater(f.channel, sub);
          call(sub.handlers.error, f);
        }
        break;
      case "subscribed":
        if (sub) { sub.retries = 0; call(sub.handlers.subscribed, f); }
        break;
    }
  };

  UsherClient.prototype._send = function (obj) {
    if (this.ws && this.ws.readyState === 1) { this.ws.send(JSON.stringify(obj)); return true; }
    return false;
  };

  // The server answers a connection's subscribes one at a time, in order (a resume or a large snapshot can take a
  // while), and closes the connection (1008) when more than twice its USHER_MAX_SUBSCRIPTIONS, plus 16 (at least
  // 64), frames wait there. Sent all at once, the subscribes of an app watching many channels would have it closed
  // on every connection, and reconnect for ever. So at most subscribeWindow subscribes wait for their answer
  // (subscribed or error) at a time, leaving room even with USHER_MAX_SUBSCRIPTIONS=1 for the unsubscribes of
  // everything subscribed or in flight, which get no answer; the others wait in queue, and each answer sends the
  // next. The client sends no other frame that waits for an answer.
  var subscribeWindow = 16;

  // _queueSubscribe puts channel's subscribe in the queue, unless it waits there already (it is then sent with the
  // channel's subscription as it is when its turn comes), and sends what the window has room for.
  UsherClient.prototype._queueSubscribe = function (channel) {
    if (!this.queued[channel]) {
      this.queued[channel] = true;
      this.queue.push(channel);
    }
    this._sendQueued();
  };

  // _sendQueued sends queued subscribes, oldest first, while the window has room on an open connection.
  UsherClient.prototype._sendQueued = function () {
    while (this.inFlight < subscribeWindow && this.queue.length > 0 && this.opened && this.ws && this.ws.readyState === 1) {
      var channel = this.queue.shift();
      delete this.queued[channel];
      if (this.subs[channel]) this._sendSubscribe(channel);
    }
  };

  // _forgetConnection forgets what was sent on a connection that is gone, and the subscribes still in queue.
  UsherClient.prototype._forgetConnection = function () {
    this.awaiting = Object.create(null);
    this.inFlight = 0;
    this.queue = [];
    this.queued = Object.create(null);
    this.sent = Object.create(null);
  };

  UsherClient.prototype._sendSubscribe = function (channel) {
    var sub = this.subs[channel];
    var msg = { op: "subscribe", channel: channel };
    if (sub.seq !== null && sub.seq !== undefined) {
      msg.since = sub.seq; // resume: only what was missed
      if (sub.epoch) msg.epoch = sub.epoch; // if the stream was made anew since, the server sends reset and a snapshot
    }
    if (this._send(msg)) {
      this.awaiting[channel] = (this.awaiting[channel] || 0) + 1;
      this.inFlight++;
      this.sent[channel] = true;
    }
  };

  // _resubscribeLater subscribes again, with backoff, after the server answered "unavailable" (it is loading its
  // rosters), while sub is still the channel's subscription. At the unavailableTries-th refusal on one connection
  // it reconnects instead (with the connection's backoff): behind a load balancer, the next connection may reach an
  // instance that serves.
  UsherClient.prototype._resubscribeLater = function (channel, sub) {
    var self = this, ws = this.ws;
    sub.retries = (sub.retries || 0) + 1;
    if (sub.retries >= this.unavailableTries) {
      if (ws) ws.close(1000, "server unavailable");
      return;
    }
    var cap = Math.min(this.maxDelay, this.minDelay * Math.pow(2, sub.retries));
    if (sub.timer) clearTimeout(sub.timer);
    sub.timer = setTimeout(function () {
      sub.timer = null;
      // On this connection only (a new one subscribes to every channel as it opens), through the window.
      if (!self.closed && self.ws === ws && self.subs[channel] === sub) self._queueSubscribe(channel);
    }, Math.round(cap / 2 + Math.random() * cap / 2));
  };

  // subscribe starts watching a channel; handlers: snapshot, event, reset, error, subscribed (all optional).
  // Subscribing again to a channel starts it over, with a new snapshot, for the new handlers only. A channel is a
  // non-empty string without a lone surrogate (half an emoji, from a string cut short): the server's refusal of
  // anything else would not name it (it reads a lone surrogate as U+FFFD), so it could not be told to the app, and
  // the subscribe's place in the window would never be given back. Nor is it longer than Agora allows (64): the
  // server refuses it anyway, and one of about 4 KiB would make a frame over the server's limit, which closes the
  // connection (1009) at every attempt.
  UsherClient.prototype.subscribe = function (channel, handlers) {
    if (typeof channel !== "string" || channel === "" || channel.length > 64 || loneSurrogate.test(channel)) {
      throw new Error("UsherClient: subscribe needs a channel name");
    }
    if (this.subs[channel]) this._clearSubTimer(this.subs[channel]);
    this.subs[channel] = { handlers: handlers || {}, seq: null };
    this._queueSubscribe(channel);
  };

  UsherClient.prototype.unsubscribe = function (channel) {
    if (!this.subs[channel]) return;
    this._clearSubTimer(this.subs[channel]);
    delete this.subs[channel];
    if (this.queued[channel]) { // its subscribe is not to be sent
      delete this.queued[channel];
      this.queue.splice(this.queue.indexOf(channel), 1);
    }
    // Only what the server was told is undone there: a channel whose subscribe was still in queue (and none sent
    // before on this connection) costs it no frame.
    if (!this.sent[channel]) return;
    delete this.sent[channel];
    this._send({ op: "unsubscribe", channel: channel });
  };

  // setToken replaces the token (the next connection uses it; when the server ends the current connection for the
  // old token's expiry, 4001, the client reconnects with the new one). After the client stopped on an expired token
  // it reconnects at once and resumes every subscription from its last seq.
  UsherClient.prototype.setToken = function (token) {
    if (!token) throw new Error("UsherClient: setToken needs a token");
    if (token !== this.token) {
      this.token = token;
      this.tokenSetAt = Date.now();
    }
    if (!this.expired) return;
    this.expired = false;
    this.closed = false;
    this.attempt = 0;
    this._connect();
  };

  // lastSeq is the seq of the last snapshot or event applied for channel (null before the first).
  UsherClient.prototype.lastSeq = function (channel) {
    return this.subs[channel] ? this.subs[channel].seq : null;
  };

  // retryNow skips the wait before the next reconnection attempt (for a "retry now" button, or the browser's
  // "online" event). It does nothing while connected or after close.
  UsherClient.prototype.retryNow = function () {
    if (this.closed || this.ws || !this.timer) return;
    clearTimeout(this.timer);
    this.timer = null;
    this._connect();
  };

  UsherClient.prototype.close = function () {
    this.closed = true;
    this.expired = false;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    this._clearConnectTimer();
    this._clearStableTimer();
    for (var ch in this.subs) this._clearSubTimer(this.subs[ch]); // no timer of the client outlives it
    if (this.ws) this.ws.close(1000, "bye");
    else this._state("closed", {});
  };

  function call(fn, arg) { if (typeof fn === "function") fn(arg); }

  // loneSurrogate finds half of a UTF-16 surrogate pair, which no UTF-8 text (a WebSocket frame, JSON as Go reads it)
  // can carry. No lookbehind: older engines (React Native's) lack it.
  var loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/;

  // subprotocolToken matches what a WebSocket subprotocol may be made of (an HTTP token, RFC 7230).
  var subprotocolToken = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

  // _probe asks the server whether it takes the token: GET on the WebSocket URL over HTTP, the token in a header
  // (never in the URL). 401 token_expired stops the client, whatever this device's clock says, and so does 401
  // invalid_token (the server will never take it); any other answer, or none (the server out of reach, or on
  // another origin without CORS), changes nothing.
  UsherClient.prototype._probe = function () {
    if (this.probing || typeof fetch !== "function") return;
    var self = this, token = this.token;
    this.probing = true;
    var url = this.url.replace(/^ws(s?):/i, "http$1:");
    fetch(url, { headers: { Authorization: "Bearer " + token }, credentials: "omit", cache: "no-store" })
      .then(function (res) {
        if (res.status !== 401) return null;
        return res.json().then(function (b) { return b && b.error; }, function () { return null; });
      })
      .then(function (code) {
        self.probing = false;
        if ((code === "token_expired" || code === "invalid_token") && token === self.token && !self.closed && !self.ws) {
          if (self.timer) { clearTimeout(self.timer); self.timer = null; }
          self._expire(code === "invalid_token" ? code : undefined);
        }
      }, function () { self.probing = false; });
  };

  // _tokenExpired reports whether the token has run out. A token with iat is judged by the time elapsed on this
  // device since it was given (its lifetime, exp - iat), not by comparing exp with this device's clock, which may be
  // off by hours; a token without iat by its exp. False when it has no exp or cannot be read: the server decides.
  UsherClient.prototype._tokenExpired = function () {
    var claims = jwtClaims(this.token);
    if (!claims || typeof claims.exp !== "number") return false;
    if (typeof claims.iat === "number") return Date.now() - this.tokenSetAt >= (claims.exp - claims.iat) * 1000;
    return claims.exp * 1000 <= Date.now();
  };

  function jwtClaims(token) {
    var part = String(token).split(".")[1];
    if (!part) return null;
    try {
      return JSON.parse(base64url(part));
    } catch (e) {
      return null;
    }
  }

  // base64url decodes to a string of bytes (enough for JSON of ASCII claims); React Native may have no atob.
  function base64url(s) {
    var abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", out = "", bits = 0, n = 0;
    for (var i = 0; i < s.length; i++) {
      var v = abc.indexOf(s.charAt(i) === "+" ? "-" : s.charAt(i) === "/" ? "_" : s.charAt(i));
      if (v < 0) { if (s.charAt(i) === "=") break; throw new Error("not base64url"); }
      bits = bits << 6 | v;
      n += 6;
      if (n >= 8) { n -= 8; out += String.fromCharCode(bits >> n & 255); }
    }
    return out;
  }

  if (typeof module === "object" && module.exports) module.exports = UsherClient;
  else root.UsherClient = UsherClient;
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this);
