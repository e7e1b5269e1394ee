package metrics

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// TestExposition compares the exposition after a known sequence of events
// with a golden file, and lints it.
func TestExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.Resources.WithLabelValues("configmaps", Written).Add(3)
	m.Resources.WithLabelValues("configmaps", Unchanged).Inc()
	m.Resources.WithLabelValues("deployments", Deleted).Inc()
	m.Resources.WithLabelValues("secrets", Skipped).Inc()
	m.Errors.WithLabelValues("object_write").Add(2)
	m.Duration.Observe(1.2)
	m.ChangeLatency.Observe(0.8)
	m.ChangeLatency.Observe(1.1)
	m.LastSuccess.Set(1.7641e9)
	m.Namespaces.Set(6)
	m.Watched.Set(42)
	m.QueueDepth.Set(5)

	golden := filepath.Join("testdata", "exposition.txt")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(golden)
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(f, mf); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	want, err := os.Open(golden)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	if err := testutil.GatherAndCompare(reg, want); err != nil {
		t.Error(err)
	}

	problems, err := promlint.NewWithMetricFamilies(mustGather(t, reg)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestErrorSeriesStartAtZero(t *testing.T) {
	if n := testutil.CollectAndCount(New(prometheus.NewRegistry()).Errors); n != len(Operations) {
		t.Errorf("%d error series, want %d", n, len(Operations))
	}
}

func mustGather(t *testing.T, g prometheus.Gatherer) []*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}
