package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// headlessChromium starts headless Chromium (Debian's, provisioned) for one test.
func headlessChromium(t *testing.T) context.Context {
	t.Helper()
	bin := testenv.Require(t, "chromium")[0]
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 1000))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

// TestWebView drives the web view in a real browser against the real
// service writing to real MinIO: from the cluster to a namespace to an
// object changed three times (three versions, the right lines in the
// diff), the timeline bar of the minute of its last change and the changes
// behind it; the restore command copied from the page restores the object
// once it is deleted; no Secret value is in any page's DOM or any
// response; every control is labelled and the page is reachable by
// keyboard. With UI_SCREENSHOTS=DIR it saves the screenshots of docs/ui.md.
func TestWebView(t *testing.T) {
	requireServers(t)
	ctx := headlessChromium(t)
	ns, cluster := "e2e-ui", "webview"
	createNamespace(t, ns)
	// In the restore pack the first pass writes: its labels are read from
	// there; settings' from its own key.
	createConfigMap(t, ns, "early", map[string]string{"k": "v"}, map[string]string{"tier": "cache"}, nil)
	svc := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	svc.waitReady()
	svc.waitPass(1)
	createConfigMap(t, ns, "settings", map[string]string{"level": "debug"}, map[string]string{"tier": "config"}, nil)
	key := svc.key(ns, "configmaps", "settings")
	eventually(t, 30*time.Second, "the first version", func() bool { return svc.versions(key) >= 1 })
	cms := e2e.cs.CoreV1().ConfigMaps(ns)
	for i, level := range []string{"info", "warn"} {
		cm, err := cms.Get(bg, "settings", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["level"] = level
		if _, err := cms.Update(bg, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, fmt.Sprintf("version %d", i+2), func() bool { return svc.versions(key) >= i+2 })
	}
	const secretValue = "web-view-secret-0451"
	if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		StringData: map[string]string{"password": secretValue}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the Secret stored", func() bool { return svc.versions(svc.key(ns, "secrets", "creds")) >= 1 })
	secretForms := []string{secretValue, "d2ViLXZpZXctc2VjcmV0LTA0NTE="} // and its base64

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	startService(t, cluster, serviceOptions{args: []string{"ui"}, env: map[string]string{"UI_ADDR": fmt.Sprintf("127.0.0.1:%d", port)}, secrets: secretForms})
	eventually(t, 30*time.Second, "the web view serving", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})

	shots := os.Getenv("UI_SCREENSHOTS")
	var visited, doms []string
	// step runs one browser action, failing the test on an error.
	step := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		if _, err := chromedp.Run(ctx, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// page records the page shown (its URL, its DOM and every resource it
	// loaded), checks its accessibility basics and, with UI_SCREENSHOTS,
	// saves a screenshot.
	page := func(name string) {
		t.Helper()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		html, err := chromedp.Run(ctx, chromedp.OuterHTML("html"))
		if err != nil {
			t.Fatal(err)
		}
		resources, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`performance.getEntriesByType("resource").map(e => e.name)`))
		if err != nil {
			t.Fatal(err)
		}
		visited, doms = append(append(visited, loc), resources...), append(doms, html)
		problems, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
			const out = [];
			if (!document.documentElement.lang) out.push("no lang");
			document.querySelectorAll("input, select, textarea, button").forEach(e => {
				const named = (e.labels && e.labels.length > 0) || e.getAttribute("aria-label") || (e.tagName === "BUTTON" && e.textContent.trim());
				if (!named) out.push("unlabelled " + e.outerHTML.slice(0, 80));
			});
			document.querySelectorAll("svg").forEach(e => { if (e.getAttribute("role") !== "img" || !e.getAttribute("aria-label")) out.push("svg without role and label"); });
			document.querySelectorAll("a").forEach(e => { if (!(e.textContent.trim() || e.getAttribute("aria-label"))) out.push("a link without a name: " + e.outerHTML.slice(0, 80)); });
			if (!document.querySelector("main h1")) out.push("no h1");
			return out;
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s page: %s", name, p)
		}
		if shots != "" {
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	step("open the view", chromedp.Steps(chromedp.Navigate(base+"/"), chromedp.WaitVisible(`a[href="/c/`+cluster+`/"]`)))
	page("clusters")
	step("open the cluster", chromedp.Steps(chromedp.Click(`a[href="/c/`+cluster+`/"]`), chromedp.WaitVisible(`a[href="/c/`+cluster+`/ns/`+ns+`/"]`)))
	page("cluster")
	// Search by label: the form's selector field.
	step("search by label", chromedp.Steps(chromedp.SendKeys(`#l`, "tier in (cache,config)"), chromedp.Submit(`#l`), chromedp.WaitVisible(`#found-title`)))
	found, err := chromedp.Run(ctx, chromedp.Text(`section[aria-labelledby="found-title"]`))
	if err != nil || !strings.Contains(found, "configmaps/"+ns+"/early") || !strings.Contains(found, "configmaps/"+ns+"/settings") || strings.Contains(found, "secrets") {
		t.Errorf("objects labelled tier in (cache,config) (%v):\n%s", err, found)
	}
	step("back to the cluster", chromedp.Steps(chromedp.Navigate(base+"/c/"+cluster+"/"), chromedp.WaitVisible(`a[href="/c/`+cluster+`/ns/`+ns+`/"]`)))
	step("open the namespace", chromedp.Steps(chromedp.Click(`a[href="/c/`+cluster+`/ns/`+ns+`/"]`),
		chromedp.WaitVisible(`a[href="/c/`+cluster+`/o/`+ns+`/configmaps/settings"]`)))
	page("namespace")
	step("open the object", chromedp.Steps(chromedp.Click(`a[href="/c/`+cluster+`/o/`+ns+`/configmaps/settings"]`), chromedp.WaitVisible(`table.diff`)))
	page("object")
	versions, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("tr.version").length`))
	if err != nil || versions != 3 {
		t.Errorf("%d versions on the object's page (%v), want 3", versions, err)
	}
	diffText, err := chromedp.Run(ctx, chromedp.Text(`table.diff`))
	if err != nil || !strings.Contains(diffText, "-  level: info") || !strings.Contains(diffText, "+  level: warn") || strings.Contains(diffText, "level: debug") {
		t.Errorf("the diff of the newest version (%v):\n%s", err, diffText)
	}
	restoreCmd, err := chromedp.Run(ctx, chromedp.Value(`#restore-command`))
	if err != nil {
		t.Fatal(err)
	}
	// Against the live object: the cluster holds the newest version.
	step("against the live object", chromedp.Steps(chromedp.Click(`a[href*="live=1"]`), chromedp.WaitVisible(`p.sides`)))
	sides, err := chromedp.Run(ctx, chromedp.Text(`section[aria-labelledby="diff-title"]`))
	if err != nil || !strings.Contains(sides, "− live object") || !strings.Contains(sides, "0 lines added, 0 removed") {
		t.Errorf("the newest version against the live object (%v):\n%s", err, sides)
	}
	step("back to the object", chromedp.Steps(chromedp.Navigate(base+"/c/"+cluster+"/o/"+ns+"/configmaps/settings"), chromedp.WaitVisible(`table.diff`)))

	// The timeline of the last hour has a bar at the minute of the last
	// change; behind it, the change.
	last := svc.stored()[key].LastModified.UTC().Truncate(time.Minute).Format(time.RFC3339)
	step("the last hour's timeline", chromedp.Steps(chromedp.Click(`a[href$="range=1h"]`), chromedp.WaitVisible(`svg.chart`)))
	step("the bar of "+last, chromedp.Steps(chromedp.Click(`svg.chart a rect[data-start="`+last+`"]`), chromedp.WaitVisible(`#changes-title`)))
	page("timeline")
	changes, err := chromedp.Run(ctx, chromedp.Text(`table.changes`))
	if err != nil || !strings.Contains(changes, "configmaps/"+ns+"/settings") || !strings.Contains(changes, "kubectl-edit") {
		t.Errorf("the changes of the minute %s (%v):\n%s", last, err, changes)
	}

	// The Secret's page: its values masked.
	step("the Secret's page", chromedp.Steps(chromedp.Navigate(base+"/c/"+cluster+"/o/"+ns+"/secrets/creds"), chromedp.WaitVisible(`table.diff`)))
	page("secret")

	// Keyboard: the first Tab reaches the skip link.
	step("Tab", chromedp.KeyEvent(kb.Tab))
	focused, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.getAttribute("href") || document.activeElement.tagName`))
	if err != nil || focused != "#main" {
		t.Errorf("the first Tab focuses %q (%v), want the skip link to #main", focused, err)
	}

	// No Secret value in any DOM, nor in any page or resource the browser
	// loaded (fetched again: the view answers GETs the same way).
	for _, dom := range doms {
		for _, s := range secretForms {
			if strings.Contains(dom, s) {
				t.Error("a page's DOM holds the Secret's value")
			}
		}
	}
	if len(visited) < 8 {
		t.Errorf("%d pages and resources seen, want every page with its stylesheet and script: %v", len(visited), visited)
	}
	for _, u := range visited {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", u, csp)
		}
		for _, s := range secretForms {
			if strings.Contains(string(body), s) {
				t.Errorf("%s holds the Secret's value", u)
			}
		}
	}

	// The restore command copied from the page brings the object back.
	if err := cms.Delete(bg, "settings", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	args := strings.Fields(restoreCmd)
	if len(args) < 3 || args[0] != "cluster-backup" || args[1] != "restore" {
		t.Fatalf("restore command %q", restoreCmd)
	}
	stdout, stderr, code := cli(t, cluster, args[1:]...)
	if code != 0 {
		t.Fatalf("%s: exit %d\n%s\n%s", restoreCmd, code, stdout, stderr)
	}
	cm, err := cms.Get(bg, "settings", metav1.GetOptions{})
	if err != nil || cm.Data["level"] != "warn" {
		t.Errorf("after %s: %v, %v", restoreCmd, cm.Data, err)
	}
	// Named objects: one the backup does not hold is exit 1, and prune
	// does not take names.
	if _, stderr, code := cli(t, cluster, "restore", "configmaps/nothing", "-n", ns); code != 1 || !strings.Contains(stderr, "configmaps/nothing") {
		t.Errorf("restore of an object the backup does not hold: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := cli(t, cluster, "restore", "configmaps/settings", "-n", ns, "--prune"); code != 2 {
		t.Errorf("restore of a named object with --prune: exit %d, want 2\n%s", code, stderr)
	}
}
