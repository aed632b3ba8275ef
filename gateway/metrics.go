package gateway

import (
	"crypto/subtle"
	"strconv"
	"sync"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/hub"
)

// metrics are the gateway's Prometheus metrics, on a registry of its own (several gateways may run in one process,
// as tests do). Counters the hub and NATS already keep are read when scraped, not counted twice.
type metrics struct {
	reg *prometheus.Registry

	received   prometheus.Counter
	accepted   prometheus.Counter
	duplicates prometheus.Counter
	rejected   *prometheus.CounterVec
	ingest     prometheus.Histogram

	notices map[presence.Outcome]prometheus.Counter
	events  prometheus.Counter

	checkpointSeconds  prometheus.Histogram
	checkpointBytes    prometheus.Gauge
	checkpointFailures prometheus.Counter

	// natsReconnects counts the NATS connection's reconnections. (The client's own Stats().Reconnects counts
	// attempts whose TCP connection was accepted, handshake failed or not.)
	natsReconnects prometheus.Counter

	delivery    prometheus.Histogram
	rateLimited prometheus.Counter
	requests    *prometheus.CounterVec
	byRoute     sync.Map // route and status -> prometheus.Counter: resolved once, not per request
}

type routeCode struct {
	route string
	code  int
}

// countRequest counts one HTTP request.
func (m *metrics) countRequest(route string, code int) {
	k := routeCode{route, code}
	c, ok := m.byRoute.Load(k)
	if !ok {
		c, _ = m.byRoute.LoadOrStore(k, m.requests.WithLabelValues(route, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
}

// rejectReasons are the error codes a notification can be refused with; each has a series from the start, so that
// an alert on one of them does not wait for its first occurrence.
var rejectReasons = []string{"missing_signature", "bad_signature", "body_too_large", "unreadable_body", "invalid_json",
	"missing_field", "invalid_channel", "invalid_payload", "forbidden_source", "unavailable"}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := promauto{m.reg}
	m.received = f.counter("usher_ncs_received_total", "NCS notifications received by POST /v1/ncs.")
	m.accepted = f.counter("usher_ncs_accepted_total", "NCS notifications answered 200: stored, or already stored (duplicates).")
	m.duplicates = f.counter("usher_ncs_duplicates_total", "Accepted NCS notifications whose noticeId was already stored (Agora's resends).")
	m.rejected = f.counterVec("usher_ncs_rejected_total", "NCS notifications refused, by error code.", "reason")
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	m.ingest = f.histogram("usher_ncs_ingest_seconds", "From the request reaching Usher to JetStream's acknowledgement, for accepted notifications.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5})
	notices := f.counterVec("usher_presence_notices_total", "Stored notifications folded by the applier on this instance, by outcome: "+
		"applied, stale (duplicate or older than the roster), replayed (notifyMs past the retention window), ignored.", "outcome")
	m.notices = map[presence.Outcome]prometheus.Counter{}
	for _, o := range []presence.Outcome{presence.Applied, presence.Stale, presence.Replayed, presence.Ignored} {
		m.notices[o] = notices.WithLabelValues(o.String())
	}
	m.events = f.counter("usher_presence_events_total", "Presence events the applier on this instance stored in USHER_PRESENCE (counted on their acknowledgement: a failed publish, derived again by the next leader, is not).")
	m.checkpointSeconds = f.histogram("usher_applier_checkpoint_seconds", "Time to encode and store one applier checkpoint (in the background, or at the end of a lease).",
		[]float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30})
	m.checkpointBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "usher_applier_checkpoint_bytes", Help: "Size of the last applier checkpoint stored."})
	m.reg.MustRegister(m.checkpointBytes)
	m.checkpointFailures = f.counter("usher_applier_checkpoint_failures_total", "Applier checkpoints not stored (an older one stays: a new applier replays more).")
	m.delivery = f.histogram("usher_delivery_seconds", "End-to-end latency: from the notification's notifyMs (Agora's clock) to the WebSocket frame written.",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30})
	m.natsReconnects = f.counter("usher_nats_reconnects_total", "Times the NATS connection was re-established.")
	m.rateLimited = f.counter("usher_ws_upgrades_rate_limited_total", "WebSocket upgrades refused with 429 by the per-IP rate limit.")
	m.requests = f.counterVec("usher_http_requests_total", "HTTP requests by route and status code.", "route", "code")
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeState registers the gauges and counters read from the gateway's parts when scraped.
func (m *metrics) observeState(g *Gateway) {
	f := promauto{m.reg}
	hs := func(pick func(s hub.Stats) int64) func() float64 {
		return func() float64 { return float64(pick(g.hub.Stats())) }
	}
	f.gaugeFunc("usher_ws_connections", "Open WebSocket connections.", hs(func(s hub.Stats) int64 { return s.Connections }))
	f.gaugeFunc("usher_ws_subscriptions", "Active channel subscriptions over WebSocket.", hs(func(s hub.Stats) int64 { return s.Subscriptions }))
	f.counterFunc("usher_ws_frames_sent_total", "WebSocket frames written to clients.", hs(func(s hub.Stats) int64 { return s.FramesSent }))
	f.counterFunc("usher_ws_slow_clients_dropped_total", "WebSocket clients closed (4008) because they did not read their frames in time.",
		hs(func(s hub.Stats) int64 { return s.SlowClosed }))
	refused := prometheus.NewDesc("usher_ws_upgrades_refused_total", "WebSocket upgrades refused by the hub, by reason.", []string{"reason"}, nil)
	m.reg.MustRegister(collectorFunc{desc: refused, collect: func(ch chan<- prometheus.Metric) {
		s := g.hub.Stats()
		for reason, n := range map[string]int64{"token": s.RefusedToken, "full": s.RefusedFull, "subject": s.RefusedSubject} {
			ch <- prometheus.MustNewConstMetric(refused, prometheus.CounterValue, float64(n), reason)
		}
	}})
	resumed := prometheus.NewDesc("usher_ws_resumes_total", "WebSocket resumes replayed to the client, by where the events came from: "+
		"memory (the view's latest events) or stored (read from USHER_PRESENCE, when since is older than the memory reaches).", []string{"from"}, nil)
	m.reg.MustRegister(collectorFunc{desc: resumed, collect: func(ch chan<- prometheus.Metric) {
		s := g.hub.Stats()
		ch <- prometheus.MustNewConstMetric(resumed, prometheus.CounterValue, float64(s.ResumedMemory), "memory")
		ch <- prometheus.MustNewConstMetric(resumed, prometheus.CounterValue, float64(s.ResumedStored), "stored")
	}})
	f.gaugeFunc("usher_nats_connected", "1 while the NATS connection is up, 0 while it is down or reconnecting.", func() float64 {
		if g.nc.Status() == nats.CONNECTED {
			return 1
		}
		return 0
	})
	f.gaugeFunc("usher_applier_leading", "1 while this instance holds the applier lease.", func() float64 {
		if g.applier.leading.Load() {
			return 1
		}
		return 0
	})
	f.gaugeFunc("usher_applier_backlog", "Notifications stored in USHER_NCS that the applier on this instance has not applied yet "+
		"(their presence events not all stored); kept while it fails and retries, 0 on instances that do not lead.",
		func() float64 {
			stored, settled := g.applier.storedNCS.Load(), g.applier.settledNCS.Load()
			if stored > settled {
				return float64(stored - settled)
			}
			return 0
		})
	f.gaugeFunc("usher_presence_view_ready", "1 while this instance's view holds the rosters; 0 while it loads them, or reloads them "+
		"after it found events missing or USHER_PRESENCE made anew (it then serves no roster: subscribes get unavailable, /readyz 503).",
		func() float64 {
			if g.view.ready.Load() {
				return 1
			}
			return 0
		})
	f.gaugeFunc("usher_presence_view_seq", "Last USHER_PRESENCE sequence this instance's view has applied.", func() float64 { return float64(g.view.lastSeq()) })
}

// serveMetrics is GET /metrics, behind USHER_METRICS_TOKEN when one is set.
func (g *Gateway) serveMetrics() gin.HandlerFunc {
	h := promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{})
	want := []byte(g.cfg.MetricsToken)
	return func(c *gin.Context) {
		if len(want) > 0 {
			if subtle.ConstantTimeCompare([]byte(bearerHeader(c)), want) != 1 {
				_ = c.Error(errMetricsToken)
				c.Abort()
				return
			}
		}
		h.ServeHTTP(c.Writer, c.Request)
	}
}

// promauto is a small registering factory, so that each metric above is one line.
type promauto struct{ r prometheus.Registerer }

func (f promauto) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.r.MustRegister(c)
	return c
}

func (f promauto) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(c)
	return c
}

func (f promauto) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.r.MustRegister(h)
	return h
}

func (f promauto) gaugeFunc(name, help string, fn func() float64) {
	f.r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

func (f promauto) counterFunc(name, help string, fn func() float64) {
	f.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn))
}

// collectorFunc is a collector of one labelled family computed when scraped.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
