package metrics

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/cluster-backup/cluster-backup/logging"
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
	m.ConfigHash.Set(123456789)
	m.ConfigReloadTime.Set(1.7641e9)

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

// TestOperationsAreDeclaredOnce reads the module's code: every operation
// counted with Metrics.Error or logged with logging.Op is a declared
// logging.Operation constant (never a string literal), and every counted
// one is pre-initialised at zero.
func TestOperationsAreDeclaredOnce(t *testing.T) {
	fset := token.NewFileSet()
	declared := map[string]logging.Operation{}
	logFile, err := parser.ParseFile(fset, filepath.Join("..", "logging", "logging.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range logFile.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "Operation" {
				lit := vs.Values[0].(*ast.BasicLit)
				declared[vs.Names[0].Name] = logging.Operation(strings.Trim(lit.Value, `"`))
			}
		}
	}
	initialised := map[logging.Operation]bool{}
	for _, op := range Operations {
		initialised[op] = true
	}
	counted := 0
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 1 {
				return true
			}
			fn, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (fn.Sel.Name != "Error" && fn.Sel.Name != "Op") {
				return true
			}
			if pkg, ok := fn.X.(*ast.Ident); fn.Sel.Name == "Op" && (!ok || pkg.Name != "logging") {
				return true
			}
			pos := fset.Position(call.Pos())
			switch arg := call.Args[0].(type) {
			case *ast.BasicLit:
				t.Errorf("%s: operation %s spelt as a literal", pos, arg.Value)
			case *ast.SelectorExpr:
				if pkg, ok := arg.X.(*ast.Ident); !ok || pkg.Name != "logging" {
					return true
				}
				op, ok := declared[arg.Sel.Name]
				if !ok {
					t.Errorf("%s: %s is not a declared operation", pos, arg.Sel.Name)
				}
				if fn.Sel.Name == "Error" {
					counted++
					if !initialised[op] {
						t.Errorf("%s: %s is counted but not pre-initialised in Operations", pos, op)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if counted == 0 {
		t.Error("no counted operation found: the scan is broken")
	}
}
