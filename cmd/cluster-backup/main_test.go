package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartupConfigErrorsExit2(t *testing.T) {
	cfgDir := func(key, value string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, key), []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string // substrings of the one stderr line
	}{
		{"missing CLUSTER_NAME", map[string]string{}, nil, []string{"CLUSTER_NAME"}},
		{"bad duration", map[string]string{"CLUSTER_NAME": "c", "SNAPSHOT_INTERVAL": "daily"}, nil, []string{"SNAPSHOT_INTERVAL", `"daily"`}},
		{"bad bool", map[string]string{"CLUSTER_NAME": "c", "MINIO_USE_SSL": "si"}, nil, []string{"MINIO_USE_SSL", `"si"`}},
		{"bad flag", map[string]string{"CLUSTER_NAME": "c"}, []string{"--retry-delay=forever"}, []string{"--retry-delay", `"forever"`}},
		{"unknown filtering mode", map[string]string{"CLUSTER_NAME": "c", "BACKUP_CONFIG_DIR": cfgDir("filtering-mode", "greylist")}, nil, []string{"filtering-mode", `"greylist"`}},
		{"bad selector", map[string]string{"CLUSTER_NAME": "c", "BACKUP_CONFIG_DIR": cfgDir("label-selector", "app in (x")}, nil, []string{"label-selector", `"app in (x"`}},
		{"bad annotation selector", map[string]string{"CLUSTER_NAME": "c", "BACKUP_CONFIG_DIR": cfgDir("annotation-selector", "==")}, nil, []string{"annotation-selector", `"=="`}},
		{"bad quantity", map[string]string{"CLUSTER_NAME": "c", "BACKUP_CONFIG_DIR": cfgDir("max-resource-size", "huge")}, nil, []string{"max-resource-size", `"huge"`}},
		{"bad config bool", map[string]string{"CLUSTER_NAME": "c", "BACKUP_CONFIG_DIR": cfgDir("include-status", "perhaps")}, nil, []string{"include-status", `"perhaps"`}},
	} {
		for _, sub := range []string{"run", "snapshot"} {
			t.Run(sub+"/"+tc.name, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				env := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
				code := run(context.Background(), append([]string{sub}, tc.args...), &stdout, &stderr, env)
				if code != exitUsage {
					t.Errorf("exit code %d, want %d", code, exitUsage)
				}
				line := stderr.String()
				if strings.Count(line, "\n") != 1 || !strings.HasPrefix(line, "error: ") {
					t.Errorf("want one stderr line starting with 'error: ', got %q", line)
				}
				for _, w := range tc.want {
					if !strings.Contains(line, w) {
						t.Errorf("stderr %q does not contain %q", line, w)
					}
				}
				if stdout.Len() != 0 {
					t.Errorf("stdout must carry only JSON log lines, got %q", stdout.String())
				}
			})
		}
	}
}

func TestCommands(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &errOut, env); code != exitOK || !strings.HasPrefix(out.String(), "cluster-backup ") {
		t.Errorf("version: %d %q", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"run", "--help"}, &out, &errOut, env); code != exitOK || !strings.Contains(out.String(), "--minio-endpoint") {
		t.Errorf("run --help: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"restore"}, &out, &errOut, env); code != exitUsage {
		t.Errorf("unknown command exit %d", code)
	}
	if code := run(context.Background(), nil, &out, &errOut, env); code != exitUsage {
		t.Errorf("no command exit %d", code)
	}
}

// TestBinaryExitCode checks the real process: os.Exit(2) and a credential
// that never reaches the output.
func TestBinaryExitCode(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cluster-backup")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "run")
	cmd.Env = []string{"MINIO_ENDPOINT=m:9000", "MINIO_SECRET_KEY=sup3r-s3cret", "DEBOUNCE=later"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
		t.Fatalf("want exit code 2, got %v", err)
	}
	if !strings.HasPrefix(stderr.String(), "error: ") || strings.Contains(stderr.String()+stdout.String(), "sup3r-s3cret") {
		t.Errorf("stderr %q stdout %q", stderr.String(), stdout.String())
	}
}

func TestReadPriorities(t *testing.T) {
	write := func(body string) string {
		path := filepath.Join(t.TempDir(), "priorities.yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	waves, err := readPriorities(write("- resources: [issuers.cert-manager.io, clusterissuers.cert-manager.io]\n  wave: configuration\n- resources: [widgets.example.com]\n  wave: admission\n"), resolver{})
	if err != nil {
		t.Fatal(err)
	}
	if len(waves) != 3 || waves["issuers.cert-manager.io"] != 2 || waves["widgets.example.com"] != 5 {
		t.Errorf("waves %v", waves)
	}
	for _, c := range []struct{ body, want string }{
		{"- resources: [a]\n  wave: early\n", `unknown wave "early"`},
		{"- resources: [customresourcedefinitions.apiextensions.k8s.io]\n  wave: rest\n", "CRDs always come first"},
		{"- wave: rest\n", "names no resources"},
		{"- resources: [a]\n  wave: rest\n  before: b\n", "want a list of"},
	} {
		_, err := readPriorities(write(c.body), resolver{})
		var usage usageError
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--priorities") {
			t.Errorf("%q: %v, want a usage error with %q", c.body, err, c.want)
		}
	}
}
