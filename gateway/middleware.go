package gateway

import (
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/usher-presence/usher/hub"
)

// HeaderRequestID carries a request's id: taken from the client (a load balancer's) when it is sane, made up
// otherwise, and sent back on the response. Every log line about the request carries it as "req".
const HeaderRequestID = "X-Request-Id"

type requestIDKey struct{}

// requestLog gives each request an id and a logger that carries it, then logs one line when it ends: method, route,
// path (never the query string, where a browser's token may be), status, duration and client address. The
// high-volume successes (notifications, health checks, scrapes) are logged at debug level, everything else at
// info, failures at warn.
func (g *Gateway) requestLog(c *gin.Context) {
	start := time.Now()
	id := c.GetHeader(HeaderRequestID)
	if !saneID(id) {
		id = strconv.FormatUint(rand.Uint64(), 36)
	}
	c.Header(HeaderRequestID, id)
	c.Header("X-Content-Type-Options", "nosniff") // every body is served with its type: never let a browser guess another
	c.Set(requestIDKey{}, id)
	c.Next()

	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	status := c.Writer.Status()
	g.metrics.countRequest(route, status)
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	case route == "/v1/ncs" || route == "/healthz" || route == "/readyz" || route == "/metrics":
		level = slog.LevelDebug
	}
	if !g.log.Enabled(c, level) {
		return
	}
	attrs := []slog.Attr{slog.String("req", id), slog.String("method", c.Request.Method), slog.String("route", route),
		slog.String("path", c.Request.URL.Path), slog.Int("status", status),
		slog.Float64("ms", float64(time.Since(start).Microseconds())/1000), slog.String("remote", c.ClientIP())}
	if len(c.Errors) > 0 {
		_, code := classify(c.Errors.Last().Err)
		attrs = append(attrs, slog.String("error", code))
	} else if code := c.GetString(wsRefusalKey); code != "" {
		attrs = append(attrs, slog.String("error", code))
	}
	g.log.LogAttrs(c, level, "http request", attrs...)
}

// wsRefusalKey is where serveWS keeps the error code of an upgrade the hub refused, for the request's log line.
const wsRefusalKey = "usher.wsRefusal"

// serveWS hands GET /v1/ws to the hub, and keeps the error code of an upgrade it refuses (the hub answers it, so
// it is not among the context's errors).
func (g *Gateway) serveWS(c *gin.Context) {
	var code string
	g.hub.ServeHTTP(c.Writer, c.Request.WithContext(hub.WithRefusal(c.Request.Context(), &code)))
	if code != "" {
		c.Set(wsRefusalKey, code)
	}
}

// saneID accepts a client's request id of up to 64 letters, digits, '-', '_' and '.', so that nothing odd reaches
// the log.
func saneID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// logOf is a logger for lines about the request, carrying its id. (Made when needed: most requests log only their
// one line.)
func (g *Gateway) logOf(c *gin.Context) *slog.Logger {
	if id, ok := c.Get(requestIDKey{}); ok {
		return g.log.With("req", id)
	}
	return g.log
}

// forwardedWithoutPorts drops the ports that some load balancers (Azure's Application Gateway, for one) write after
// the addresses in X-Forwarded-For and X-Real-IP ("203.0.113.7:4711", "[2001:db8::7]:4711"). gin takes an entry it
// cannot parse as an address for a forged header and falls back to the peer's address: every client behind such a
// proxy would be the proxy, sharing one upgrade-rate bucket and judged by the proxy's address in the NCS
// allow-list. gin reads those headers only from a trusted proxy.
func forwardedWithoutPorts(c *gin.Context) {
	for _, name := range []string{"X-Forwarded-For", "X-Real-IP"} {
		vs := c.Request.Header.Values(name)
		for i, v := range vs {
			if strings.Contains(v, ":") {
				vs[i] = withoutPorts(v)
			}
		}
	}
	c.Next()
}

// withoutPorts rewrites each comma-separated address:port of a forwarding header as the address alone.
func withoutPorts(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		if ap, err := netip.ParseAddrPort(strings.TrimSpace(p)); err == nil {
			parts[i] = " " + ap.Addr().String()
		}
	}
	return strings.TrimSpace(strings.Join(parts, ","))
}

// clientAddr is the client's address: the peer's, or what a trusted proxy says (gin's ClientIP with the
// engine's trusted proxies).
func clientAddr(c *gin.Context) netip.Addr {
	a, err := netip.ParseAddr(c.ClientIP())
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// allowSources refuses requests from outside nets with 403 forbidden_source.
func (g *Gateway) allowSources(nets []netip.Prefix) gin.HandlerFunc {
	return func(c *gin.Context) {
		a := clientAddr(c)
		for _, p := range nets {
			if p.Contains(a) {
				c.Next()
				return
			}
		}
		g.metrics.received.Inc()
		g.reject(c, errSource)
		c.Abort()
	}
}

// limitUpgrades refuses WebSocket upgrades past the per-address rate with 429 and a Retry-After.
func (g *Gateway) limitUpgrades(l *addrLimiter) gin.HandlerFunc {
	return func(c *gin.Context) {
		if l.allow(clientAddr(c), time.Now()) {
			c.Next()
			return
		}
		g.metrics.rateLimited.Inc()
		c.Header("Retry-After", strconv.Itoa(max(1, int(1/float64(l.rate)+0.999))))
		_ = c.Error(errRateLimited)
		c.Abort()
	}
}

// addrLimiter is a token bucket per client address (IPv6 by /64, since one host usually holds a whole /64).
// Buckets idle long enough to have refilled are dropped by a sweep at most once a minute, so memory follows the
// addresses seen in the last minutes. Past maxAddrs addresses, a new one takes the bucket of one picked at random,
// which starts over full: it never costs that address more than a fresh bucket would. (The newest addresses once
// shared one bucket instead: anyone with 100,000 addresses, a few IPv6 /48s, could fill the table with unauthenticated
// upgrades, about 1,500 a second to keep it full, and every client not in it then had 20 upgrades a second among all.)
type addrLimiter struct {
	rate     rate.Limit
	burst    int
	maxAddrs int

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const maxAddrs = 100_000

func newAddrLimiter(perSecond float64, burst int) *addrLimiter {
	return &addrLimiter{rate: rate.Limit(perSecond), burst: burst, maxAddrs: maxAddrs, buckets: map[netip.Addr]*bucket{},
		lastSweep: time.Now()}
}

func (l *addrLimiter) allow(a netip.Addr, now time.Time) bool {
	if a.Is6() {
		p, _ := a.Prefix(64)
		a = p.Addr()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute {
		l.sweep(now)
	}
	b := l.buckets[a]
	if b == nil {
		if len(l.buckets) >= l.maxAddrs {
			for victim := range l.buckets { // map order: a pseudo-random one
				delete(l.buckets, victim)
				break
			}
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[a] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// sweep drops buckets unused for longer than a full refill takes (plus a minute): a new bucket would be the same.
func (l *addrLimiter) sweep(now time.Time) {
	l.lastSweep = now
	idle := time.Minute + time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second))
	for a, b := range l.buckets {
		if now.Sub(b.seen) > idle {
			delete(l.buckets, a)
		}
	}
}

// recovery answers a panicking handler with 500 and logs the panic, without the request's headers (gin's own
// recovery would print them, tokens included).
func (g *Gateway) recovery(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			g.logOf(c).Error("handler panicked", "panic", p, "route", c.FullPath())
			c.AbortWithStatusJSON(http.StatusInternalServerError, apiError{Error: "internal", Message: "internal error"})
		}
	}()
	c.Next()
}
