package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/cluster-backup/cluster-backup/filter"
)

func TestConfigMapKeys(t *testing.T) {
	for _, tc := range []struct {
		key   string
		value string
		check func(t *testing.T, cm ConfigMap)
	}{
		{"filtering-mode", "Hybrid\n", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.Mode, filter.Hybrid) }},
		{"include-resources", "deployments\n services \n\n# comment\nconfigmaps,secrets\n", func(t *testing.T, cm ConfigMap) {
			eq(t, cm.Rules.IncludeResources, []string{"deployments", "services", "configmaps", "secrets"})
		}},
		{"exclude-resources", "nodes\n", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.ExcludeResources, []string{"nodes"}) }},
		{"exclude-resources", "", func(t *testing.T, cm ConfigMap) { eq(t, len(cm.Rules.ExcludeResources), 0) }},
		{"include-namespaces", "prod\nstaging", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.IncludeNamespaces, []string{"prod", "staging"}) }},
		{"exclude-namespaces", "kube-system", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.ExcludeNamespaces, []string{"kube-system"}) }},
		{"include-crds", "workflows.argoproj.io\n", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.IncludeCRDs, []string{"workflows.argoproj.io"}) }},
		{"label-selector", "app=production,tier!=cache", func(t *testing.T, cm ConfigMap) {
			eq(t, cm.Rules.LabelSelector.Matches(labels.Set{"app": "production"}), true)
			eq(t, cm.Rules.LabelSelector.Matches(labels.Set{"app": "production", "tier": "cache"}), false)
		}},
		{"annotation-selector", "backup.io/enabled=true", func(t *testing.T, cm ConfigMap) {
			eq(t, cm.Rules.AnnotationSelector.Matches(labels.Set{"backup.io/enabled": "true"}), true)
			eq(t, cm.Rules.AnnotationSelector.Matches(labels.Set{}), false)
		}},
		{"max-resource-size", "10Mi", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.MaxResourceSize, int64(10<<20)) }},
		{"max-resource-size", "1.5k", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.MaxResourceSize, int64(1500)) }},
		{"max-prune-fraction", "0.25", func(t *testing.T, cm ConfigMap) { eq(t, cm.MaxPruneFraction, 0.25) }},
		{"max-prune-fraction", "1", func(t *testing.T, cm ConfigMap) { eq(t, cm.MaxPruneFraction, 1.0) }},
		{"follow-owner-references", "true", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.FollowOwnerReferences, true) }},
		{"include-managed-fields", "TRUE", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.IncludeManagedFields, true) }},
		{"include-status", "1", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.IncludeStatus, true) }},
		{"openshift-mode", "disabled", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.OpenShiftMode, filter.OpenShiftDisabled) }},
		{"include-openshift-resources", "false", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.IncludeOpenShiftResources, false) }},
		{"validate-yaml", "false", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.ValidateYAML, false) }},
		{"skip-invalid-resources", "false", func(t *testing.T, cm ConfigMap) { eq(t, cm.Rules.SkipInvalidResources, false) }},
		{"batch-size", "25", func(t *testing.T, cm ConfigMap) { eq(t, *cm.BatchSize, 25) }},
		{"retry-attempts", "5", func(t *testing.T, cm ConfigMap) { eq(t, *cm.RetryAttempts, 5) }},
		{"retry-delay", "2s", func(t *testing.T, cm ConfigMap) { eq(t, *cm.RetryDelay, 2*time.Second) }},
	} {
		t.Run(tc.key+"="+strings.TrimSpace(tc.value), func(t *testing.T) {
			cm, err := ParseConfigMap(map[string]string{tc.key: tc.value})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cm)
		})
	}
}

func TestConfigMapDefaults(t *testing.T) {
	cm, err := ParseConfigMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := cm.Rules
	eq(t, d.Mode, filter.Blacklist)
	eq(t, d.ExcludeResources, []string{"events", "events.events.k8s.io", "leases", "endpoints", "endpointslices"})
	eq(t, d.FollowOwnerReferences, false)
	eq(t, d.IncludeManagedFields, false)
	eq(t, d.IncludeStatus, false)
	eq(t, d.OpenShiftMode, filter.OpenShiftAuto)
	eq(t, d.IncludeOpenShiftResources, true)
	eq(t, d.ValidateYAML, true)
	eq(t, d.SkipInvalidResources, true)
	eq(t, d.MaxResourceSize, int64(0))
	eq(t, d.LabelSelector.Empty(), true)
	eq(t, d.AnnotationSelector.Empty(), true)
	if cm.BatchSize != nil || cm.RetryAttempts != nil || cm.RetryDelay != nil {
		t.Error("absent override keys must stay unset")
	}
}

func TestConfigMapBadValues(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{"filtering-mode", "greylist"},
		{"label-selector", "app in (a"},
		{"label-selector", "a=b=c"},
		{"annotation-selector", "!!"},
		{"max-resource-size", "ten megs"},
		{"max-prune-fraction", "10%"},
		{"max-prune-fraction", "1.5"},
		{"max-resource-size", "-1Mi"},
		{"follow-owner-references", "yes please"},
		{"include-managed-fields", "maybe"},
		{"include-status", "2"},
		{"openshift-mode", "sometimes"},
		{"include-openshift-resources", "nope"},
		{"validate-yaml", "x"},
		{"skip-invalid-resources", "x"},
		{"batch-size", "0"},
		{"retry-attempts", "-1"},
		{"retry-delay", "5 seconds"},
		{"filter-mode", "whitelist"}, // misspelt key
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			_, err := ParseConfigMap(map[string]string{tc.key: tc.value})
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("want *Error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.value) {
				t.Errorf("error %q does not name key %q and value %q", err, tc.key, tc.value)
			}
		})
	}
}

// FuzzParseConfigMap checks that no input crashes the parser and that every
// rejection names its key.
func FuzzParseConfigMap(f *testing.F) {
	f.Add("filtering-mode", "hybrid", "label-selector", "app=web,tier!=cache")
	f.Add("annotation-selector", "backup.io/enabled in (true,yes)", "max-resource-size", "10Mi")
	f.Add("include-resources", "deployments\nservices\n", "retry-delay", "5s")
	f.Add("exclude-namespaces", "kube-system,kube-public", "batch-size", "50")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		cm, err := ParseConfigMap(map[string]string{k1: v1, k2: v2})
		if err != nil {
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is not *Error: %v", err)
			}
			if cerr.Key != k1 && cerr.Key != k2 && !strings.HasSuffix(cerr.Key, " "+k1) && !strings.HasSuffix(cerr.Key, " "+k2) {
				t.Fatalf("error key %q names neither %q nor %q", cerr.Key, k1, k2)
			}
			return
		}
		if cm.Rules.LabelSelector == nil || cm.Rules.AnnotationSelector == nil {
			t.Fatal("nil selector")
		}
		if cm.Rules.MaxResourceSize < 0 {
			t.Fatal("negative size accepted")
		}
	})
}

func eq(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
}
