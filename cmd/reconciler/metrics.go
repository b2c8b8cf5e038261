package main

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// Scale request results, the result label of swarmvlan_scale_requests_total.
// A fixed set, so the label's cardinality stays bounded whatever clients send.
const (
	scaleResultScaled       = "scaled"
	scaleResultUnchanged    = "unchanged"
	scaleResultRefused      = "refused"  // 409: no bounds, global, at a bound
	scaleResultCooldown     = "cooldown" // 429: cooldown or stabilization
	scaleResultInvalid      = "invalid"  // 400
	scaleResultNotFound     = "not_found"
	scaleResultUnauthorized = "unauthorized"
	scaleResultIgnored      = "ignored" // a resolved alert, or one without the labels
	scaleResultError        = "error"   // Consul trouble
)

// metrics holds the daemon's Prometheus collectors on a registry of its
// own, so nothing a library registers globally leaks into /metrics.
type metrics struct {
	reg *prometheus.Registry

	reconcileDuration *prometheus.HistogramVec
	reconcileErrors   *prometheus.CounterVec
	queueDepth        *prometheus.GaugeVec
	scaleRequests     *prometheus.CounterVec

	watchMu sync.Mutex
	watches map[string]*state.WatchCounters

	docker atomic.Pointer[engine.Docker]
}

var (
	watchWakeupsDesc = prometheus.NewDesc("swarmvlan_watch_wakeups_total",
		"Blocking queries of a Consul watch that answered, changed or not.", []string{"prefix"}, nil)
	watchErrorsDesc = prometheus.NewDesc("swarmvlan_watch_errors_total",
		"Blocking queries of a Consul watch that failed.", []string{"prefix"}, nil)
	dockerRequestsDesc = prometheus.NewDesc("swarmvlan_docker_requests_total",
		"Docker Engine API calls, by method.", []string{"method"}, nil)
	permissionDeniedDesc = prometheus.NewDesc("swarmvlan_consul_permission_denied_total",
		"Consul requests refused for want of an ACL permission (a 403, a rejected transaction op, or a listing with keys hidden by ACLs), by operation.",
		[]string{"op"}, nil)
)

// newMetrics registers every collector. leading reports whether this
// process holds the leader lock.
func newMetrics(store *state.Store, leading func() bool) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reconcileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "swarmvlan_reconcile_duration_seconds",
			Help: "Time one reconcile of one object took, by document kind.",
			// From a no-op (a cache read) to a service create that waits on
			// the Engine.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"kind"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmvlan_reconcile_errors_total",
			Help: "Reconciles that ended in an error, by document kind.",
		}, []string{"kind"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "swarmvlan_queue_depth",
			Help: "Keys waiting in a controller's work queue.",
		}, []string{"controller"}),
		scaleRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmvlan_scale_requests_total",
			Help: "Scale requests, by front door (api, orbiter, alertmanager) and result.",
		}, []string{"source", "result"}),
		watches: map[string]*state.WatchCounters{},
	}
	// Every kind shows from the start, so a rate() over the errors has a
	// series to work on before the first failure.
	for _, k := range spec.Kinds {
		m.reconcileErrors.WithLabelValues(k)
	}
	m.reg.MustRegister(
		m.reconcileDuration, m.reconcileErrors, m.queueDepth, m.scaleRequests,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmvlan_leader",
			Help: "1 while this process holds the leader lock, else 0.",
		}, func() float64 {
			if leading() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "swarmvlan_consul_requests_total",
			Help: "HTTP requests made to Consul.",
		}, func() float64 { return float64(store.Requests()) }),
		watchCollector{m},
		dockerCollector{m},
		permissionCollector{store},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// handler serves the registry in the Prometheus exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// observeReconcile is the controller's OnReconcile hook.
func (m *metrics) observeReconcile(kind string, d time.Duration, err error) {
	m.reconcileDuration.WithLabelValues(kind).Observe(d.Seconds())
	if err != nil {
		m.reconcileErrors.WithLabelValues(kind).Inc()
	}
}

// queueDepthFunc returns a queue depth hook for one controller.
func (m *metrics) queueDepthFunc(controller string) func(int) {
	g := m.queueDepth.WithLabelValues(controller)
	g.Set(0)
	return func(n int) { g.Set(float64(n)) }
}

// countScale counts one scale request.
func (m *metrics) countScale(source, result string) {
	if m == nil {
		return
	}
	m.scaleRequests.WithLabelValues(source, result).Inc()
}

// watchOptions returns options for a watch of prefix whose counters are
// exported under that prefix.
func (m *metrics) watchOptions(prefix string) state.WatchOptions {
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	c, ok := m.watches[prefix]
	if !ok {
		c = new(state.WatchCounters)
		m.watches[prefix] = c
	}
	return state.WatchOptions{Counters: c}
}

// setDocker exports d's call counts from now on.
func (m *metrics) setDocker(d engine.Docker) {
	m.docker.Store(&d)
}

// watchCollector reads the watch counters at scrape time.
type watchCollector struct{ m *metrics }

func (c watchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- watchWakeupsDesc
	ch <- watchErrorsDesc
}

func (c watchCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.watchMu.Lock()
	defer c.m.watchMu.Unlock()
	for prefix, w := range c.m.watches {
		s := w.Stats()
		ch <- prometheus.MustNewConstMetric(watchWakeupsDesc, prometheus.CounterValue, float64(s.Wakeups), prefix)
		ch <- prometheus.MustNewConstMetric(watchErrorsDesc, prometheus.CounterValue, float64(s.Errors), prefix)
	}
}

// permissionCollector reads the store's ACL refusal counts at scrape time;
// every op shows from the start, so a rate() has a series before the first
// refusal.
type permissionCollector struct{ store *state.Store }

func (c permissionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- permissionDeniedDesc }

func (c permissionCollector) Collect(ch chan<- prometheus.Metric) {
	for op, n := range c.store.PermissionDenials() {
		ch <- prometheus.MustNewConstMetric(permissionDeniedDesc, prometheus.CounterValue, float64(n), op)
	}
}

// dockerCollector reads the Docker client's call counts at scrape time; it
// exports nothing until a client is set.
type dockerCollector struct{ m *metrics }

func (c dockerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dockerRequestsDesc }

func (c dockerCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.m.docker.Load()
	if d == nil {
		return
	}
	for method, n := range (*d).Calls() {
		ch <- prometheus.MustNewConstMetric(dockerRequestsDesc, prometheus.CounterValue, float64(n), method)
	}
}
