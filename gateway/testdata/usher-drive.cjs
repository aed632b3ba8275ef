// Drives web/static/usher.js from Node for gateway tests: connects with the token given, subscribes to one channel,
// and prints every callback as a JSON line.
// Usage: node --experimental-websocket usher-drive.cjs URL TOKEN CHANNEL [USHER_JS [CONNECT_TIMEOUT_MS]]
const UsherClient = require(process.argv[5] || "../../web/static/usher.js");
const [url, token, channel] = process.argv.slice(2, 5);
const out = (kind, v) => process.stdout.write(JSON.stringify({ kind, ...v }) + "\n");
const connectTimeout = Number(process.argv[6]) || 2000;
const c = new UsherClient({ url, token, minDelay: 100, maxDelay: 1000, connectTimeout });
c.onstate = (state, info) => out("state", { state, info });
c.subscribe(channel, {
  snapshot: (s) => out("snapshot", { seq: s.seq, audience: s.audience.map((m) => m.uid) }),
  event: (e) => out("event", { seq: e.seq, event: e.event, uid: e.uid }),
  reset: () => out("reset", {}),
  error: (e) => out("error", { code: e.code }),
});
process.stdin.on("end", () => { c.close(); setTimeout(() => process.exit(0), 100); });
process.stdin.resume();
