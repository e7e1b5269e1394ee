package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestLineHasContractFields(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, zapcore.InfoLevel).With(Component("sink"), zap.String(KeyCluster, "east"))
	log.Error("write failed",
		Op("object_write"),
		Namespace("default"),
		Resource("configmaps"),
		Data(map[string]any{"key": "a/b.yaml", "attempt": 2}),
		Duration(1234560*time.Microsecond),
		zap.Error(errors.New("connection refused")),
	)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line, got %d: %q", len(lines), buf.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("line is not JSON: %v", err)
	}
	want := map[string]any{
		KeyLevel:      "error",
		KeyMessage:    "write failed",
		KeyComponent:  "sink",
		KeyCluster:    "east",
		KeyOperation:  "object_write",
		KeyNamespace:  "default",
		KeyResource:   "configmaps",
		KeyDurationMS: 1234.56,
		KeyError:      "connection refused",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	data, ok := got[KeyData].(map[string]any)
	if !ok || data["key"] != "a/b.yaml" || data["attempt"] != 2.0 {
		t.Errorf("data = %#v", got[KeyData])
	}
	ts, _ := got[KeyTimestamp].(string)
	if !strings.HasSuffix(ts, "Z") {
		t.Errorf("timestamp %q is not UTC", ts)
	}
	if _, err := time.Parse(time.RFC3339, ts); err != nil {
		t.Errorf("timestamp %q is not RFC 3339: %v", ts, err)
	}
	allowed := map[string]bool{KeyTimestamp: true, KeyData: true}
	for k := range want {
		allowed[k] = true
	}
	for k := range got {
		if !allowed[k] {
			t.Errorf("unexpected field %q", k)
		}
	}
}

func TestLevelIsHonoured(t *testing.T) {
	for _, tc := range []struct {
		level string
		lines int
	}{
		{"debug", 4}, {"info", 3}, {"warn", 2}, {"error", 1}, {"WARN", 2},
	} {
		t.Run(tc.level, func(t *testing.T) {
			lvl, err := ParseLevel(tc.level)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			log := New(&buf, lvl)
			log.Debug("d")
			log.Info("i")
			log.Warn("w")
			log.Error("e")
			if n := strings.Count(buf.String(), "\n"); n != tc.lines {
				t.Errorf("got %d lines, want %d", n, tc.lines)
			}
		})
	}
	if _, err := ParseLevel("verbose"); err == nil {
		t.Error("ParseLevel(verbose) succeeded")
	}
}
