package metrics

import (
	"context"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	clientmetrics "k8s.io/client-go/tools/metrics"
	"k8s.io/client-go/util/workqueue"
)

// NewWorkqueueProvider exports the debounce queue's own metrics
// (workqueue_depth, workqueue_adds_total, workqueue_queue_duration_seconds,
// ...) on reg, labelled by queue name, under the names controllers use.
func NewWorkqueueProvider(reg prometheus.Registerer) workqueue.MetricsProvider {
	f := promauto.With(reg)
	buckets := prometheus.ExponentialBuckets(0.001, 4, 10)
	return &workqueueProvider{
		depth: f.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_depth", Help: "Current depth of the workqueue."}, []string{"name"}),
		adds:  f.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_adds_total", Help: "Adds handled by the workqueue."}, []string{"name"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "workqueue_queue_duration_seconds", Help: "Time an item stays in the workqueue before being processed.", Buckets: buckets,
		}, []string{"name"}),
		work: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "workqueue_work_duration_seconds", Help: "Time processing an item takes.", Buckets: buckets,
		}, []string{"name"}),
		unfinished: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workqueue_unfinished_work_seconds", Help: "Seconds of work in progress not yet observed by work_duration.",
		}, []string{"name"}),
		longest: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workqueue_longest_running_processor_seconds", Help: "Seconds the longest running processor has been running.",
		}, []string{"name"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_retries_total", Help: "Retries handled by the workqueue."}, []string{"name"}),
	}
}

type workqueueProvider struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, work              *prometheus.HistogramVec
}

func (p *workqueueProvider) NewDepthMetric(name string) workqueue.GaugeMetric {
	return p.depth.WithLabelValues(name)
}

func (p *workqueueProvider) NewAddsMetric(name string) workqueue.CounterMetric {
	return p.adds.WithLabelValues(name)
}

func (p *workqueueProvider) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return p.latency.WithLabelValues(name)
}

func (p *workqueueProvider) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return p.work.WithLabelValues(name)
}

func (p *workqueueProvider) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return p.unfinished.WithLabelValues(name)
}

func (p *workqueueProvider) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return p.longest.WithLabelValues(name)
}

func (p *workqueueProvider) NewRetriesMetric(name string) workqueue.CounterMetric {
	return p.retries.WithLabelValues(name)
}

// RegisterClientGo exports client-go's API request counts and latencies
// (rest_client_requests_total, rest_client_request_duration_seconds) on
// reg. client-go accepts this once per process, so only main calls it.
func RegisterClientGo(reg prometheus.Registerer) {
	f := promauto.With(reg)
	results := f.NewCounterVec(prometheus.CounterOpts{
		Name: "rest_client_requests_total", Help: "API server requests, by status code, method and host.",
	}, []string{"code", "method", "host"})
	latency := f.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rest_client_request_duration_seconds", Help: "API server request latency, by verb.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"verb"})
	clientmetrics.Register(clientmetrics.RegisterOpts{
		RequestResult:  requestResult{results},
		RequestLatency: requestLatency{latency},
	})
}

type requestResult struct{ v *prometheus.CounterVec }

func (r requestResult) Increment(_ context.Context, code, method, host string) {
	r.v.WithLabelValues(code, method, host).Inc()
}

type requestLatency struct{ v *prometheus.HistogramVec }

func (r requestLatency) Observe(_ context.Context, verb string, _ url.URL, d time.Duration) {
	r.v.WithLabelValues(verb).Observe(d.Seconds())
}
