// Package docs_test checks that the reference pages say what the code
// declares: each table of settings, ConfigMap keys, metrics, alerts, log
// operations and folders lists exactly what exists, and every link of the
// README and the pages leads somewhere.
package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/restore"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the text of page from the heading that starts with heading
// to the next heading of the same or a higher level.
func section(t *testing.T, page, heading string) string {
	t.Helper()
	page = "\n" + page
	i := strings.Index(page, "\n"+heading)
	if i < 0 {
		t.Fatalf("no heading %q", heading)
	}
	rest := page[i+1+len(heading):]
	level := strings.Count(strings.Fields(heading)[0], "#")
	for _, line := range regexp.MustCompile(`(?m)^#+ `).FindAllStringIndex(rest, -1) {
		if line[1]-line[0]-1 <= level {
			return rest[:line[0]]
		}
	}
	return rest
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// firstColumn returns the code spans of the first cell of every table row
// in text, in order.
func firstColumn(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| ---") {
			continue
		}
		cell := strings.SplitN(line[2:], " |", 2)[0]
		for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

func sameSet(t *testing.T, what string, documented, declared []string) {
	t.Helper()
	doc, code := slices.Sorted(slices.Values(documented)), slices.Sorted(slices.Values(declared))
	doc, code = slices.Compact(doc), slices.Compact(code)
	for _, d := range doc {
		if !slices.Contains(code, d) {
			t.Errorf("%s: %q is documented but not declared", what, d)
		}
	}
	for _, c := range code {
		if !slices.Contains(doc, c) {
			t.Errorf("%s: %q is declared but not documented", what, c)
		}
	}
}

func TestConfigurationTables(t *testing.T) {
	page := read(t, "configuration.md")
	vars := section(t, page, "# Configuration")
	vars = vars[:strings.Index(vars, "## Filtering ConfigMap")]
	sameSet(t, "environment variables", firstColumn(vars), config.Variables())
	sameSet(t, "ConfigMap keys", firstColumn(section(t, page, "## Filtering ConfigMap")), config.ConfigMapKeys())
}

// metricNames are the fully qualified names of the service's own metrics,
// read from their descriptors so that vectors without samples count too.
func metricNames(t *testing.T) []string {
	m := metrics.New(prometheus.NewRegistry())
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	var out []string
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok {
			t.Fatalf("metrics.Metrics.%s is not a collector", v.Type().Field(i).Name)
		}
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		out = append(out, fq.FindStringSubmatch((<-ch).String())[1])
	}
	return out
}

func TestMetricsTable(t *testing.T) {
	page := read(t, "metrics.md")
	var documented []string
	for _, name := range firstColumn(section(t, page, "# Metrics, health and alerts")) {
		if strings.HasPrefix(name, "cluster_backup_") {
			documented = append(documented, name)
		}
	}
	sameSet(t, "metrics", documented, metricNames(t))
}

func TestAlertsTable(t *testing.T) {
	rules := read(t, filepath.Join("..", "charts", "cluster-backup", "templates", "prometheusrule.yaml"))
	var declared []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(rules, -1) {
		declared = append(declared, m[1])
	}
	if len(declared) == 0 {
		t.Fatal("no alert found in the chart")
	}
	sameSet(t, "alerts", firstColumn(section(t, read(t, "metrics.md"), "## Alerts")), declared)
}

// TestOperationsTable compares the operations table with the constants of
// type logging.Operation.
func TestOperationsTable(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "logging", "logging.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Type == nil || fmtType(vs.Type) != "Operation" {
			return true
		}
		for _, v := range vs.Values {
			if lit, ok := v.(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				declared = append(declared, s)
			}
		}
		return true
	})
	if len(declared) < 10 {
		t.Fatalf("found only %d operations in logging.go", len(declared))
	}
	page := read(t, "operations.md")
	table := section(t, page, "## Logs")
	sameSet(t, "log operations", firstColumn(table), declared)
}

func fmtType(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// TestCodeLayoutTable checks that every top-level folder is described.
// TestControlPlaneTable compares the table of what a control plane owns
// with the rules a restore applies, row by row and in order.
func TestControlPlaneTable(t *testing.T) {
	table := section(t, read(t, "restore.md"), "## What a control plane owns")
	var documented, declared []string
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| ---") || strings.HasPrefix(line, "| match |") {
			continue
		}
		cells := strings.Split(line, " | ")
		documented = append(documented, strings.TrimPrefix(cells[0], "| ")+" / "+cells[2])
	}
	for _, r := range restore.ControlPlaneRules {
		declared = append(declared, r.Match+" / "+r.Reason)
	}
	if !slices.Equal(documented, declared) {
		t.Errorf("docs/restore.md lists\n%s\nthe rules are\n%s", strings.Join(documented, "\n"), strings.Join(declared, "\n"))
	}
}

func TestCodeLayoutTable(t *testing.T) {
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || e.Name() == "bin" || e.Name() == "backup" {
			continue
		}
		declared = append(declared, e.Name())
	}
	var documented []string
	for _, f := range firstColumn(section(t, read(t, "development.md"), "## Layout of the code")) {
		documented = append(documented, strings.SplitN(strings.TrimSuffix(f, "/"), "/", 2)[0])
	}
	sameSet(t, "folders", documented, declared)
}

// TestImportGraph compares the import table with the imports of each
// package's non-test files.
func TestImportGraph(t *testing.T) {
	const module = "github.com/cluster-backup/cluster-backup/"
	table := section(t, read(t, "development.md"), "## Layout of the code")
	table = table[strings.Index(table, "| package | imports |"):]
	rows := 0
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(line, "| `") {
			continue
		}
		rows++
		pkg := codeSpan.FindStringSubmatch(cells[1])[1]
		var documented []string
		for _, m := range codeSpan.FindAllStringSubmatch(cells[2], -1) {
			documented = append(documented, m[1])
		}
		files, err := filepath.Glob(filepath.Join("..", pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("package %s: no files (%v)", pkg, err)
		}
		var declared []string
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if p, ok := strings.CutPrefix(path, module); ok {
					declared = append(declared, p)
				}
			}
		}
		sameSet(t, "imports of "+pkg, documented, declared)
	}
	if rows < 10 {
		t.Fatalf("only %d packages in the import table", rows)
	}
}

var link = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// slug is GitHub's anchor for a heading.
func slug(heading string) string {
	s := strings.ToLower(strings.TrimSpace(heading))
	s = regexp.MustCompile("[^a-z0-9 _-]").ReplaceAllString(s, "")
	return strings.ReplaceAll(s, " ", "-")
}

// TestLinks follows every relative link of the README and the pages: the
// file exists, and an anchor names one of its headings. The README stays
// short and links every page.
func TestLinks(t *testing.T) {
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := read(t, filepath.Join("..", "README.md"))
	if len(readme) >= 10000 {
		t.Errorf("README.md has %d characters; keep it under 10,000 and move reference material here", len(readme))
	}
	for _, p := range pages {
		if !strings.Contains(readme, "(docs/"+p+")") {
			t.Errorf("README.md does not link docs/%s", p)
		}
	}
	for _, from := range append(pages, filepath.Join("..", "README.md")) {
		for _, m := range link.FindAllStringSubmatch(read(t, from), -1) {
			target := m[1]
			if strings.Contains(target, "://") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := from
			if file != "" {
				path = filepath.Join(filepath.Dir(from), file)
			}
			body, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s links %s, which does not exist", from, target)
				continue
			}
			if anchor == "" {
				continue
			}
			found := false
			for _, h := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(body), -1) {
				found = found || slug(h[1]) == anchor
			}
			if !found {
				t.Errorf("%s links %s: no such heading", from, target)
			}
		}
	}
}
