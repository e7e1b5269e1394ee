package config

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/cluster-backup/cluster-backup/filter"
)

// ConfigMap is the parsed filtering ConfigMap: the rules, and the overrides
// of the BATCH_SIZE, RETRY_ATTEMPTS and RETRY_DELAY variables.
type ConfigMap struct {
	Rules            filter.Rules
	MaxPruneFraction float64
	BatchSize        *int
	RetryAttempts    *int
	RetryDelay       *time.Duration
	// Hash identifies the content the ConfigMap was parsed from
	// (cluster_backup_config_hash).
	Hash uint64
}

// Hash is a digest of a ConfigMap's content, the same for the same keys
// and values in any order: the first 48 bits of a SHA-256, so that it is
// exact as a Prometheus sample.
func Hash(data map[string]string) uint64 {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(data[k]), data[k])
	}
	var b [8]byte
	copy(b[2:], h.Sum(nil)[:6])
	return binary.BigEndian.Uint64(b[:])
}

// ApplyTo puts the ConfigMap's rules and overrides into c.
func (cm ConfigMap) ApplyTo(c *Config) {
	c.Rules = cm.Rules
	c.MaxPruneFraction = cm.MaxPruneFraction
	if cm.BatchSize != nil {
		c.BatchSize = *cm.BatchSize
	}
	if cm.RetryAttempts != nil {
		c.RetryAttempts = *cm.RetryAttempts
	}
	if cm.RetryDelay != nil {
		c.RetryDelay = *cm.RetryDelay
	}
}

// DefaultMaxPruneFraction is max-prune-fraction when the ConfigMap does not
// set it.
const DefaultMaxPruneFraction = 0.1

type configMapKey struct {
	name  string
	usage string
	apply func(cm *ConfigMap, v string) error
}

// ConfigMapKeys are the names of every key of the filtering ConfigMap.
func ConfigMapKeys() []string {
	var out []string
	for _, k := range configMapKeys() {
		out = append(out, k.name)
	}
	return out
}

func configMapKeys() []configMapKey { //nolint:funlen // one table literal, an entry per key
	list := func(dst func(*ConfigMap) *[]string) func(*ConfigMap, string) error {
		return func(cm *ConfigMap, v string) error {
			*dst(cm) = splitList(v)
			return nil
		}
	}
	boolean := func(dst func(*ConfigMap) *bool) func(*ConfigMap, string) error {
		return func(cm *ConfigMap, v string) (err error) {
			*dst(cm), err = parseBool(v)
			return err
		}
	}
	selector := func(dst func(*ConfigMap) *labels.Selector) func(*ConfigMap, string) error {
		return func(cm *ConfigMap, v string) error {
			sel, err := labels.Parse(strings.TrimSpace(v))
			if err != nil {
				return err
			}
			*dst(cm) = sel
			return nil
		}
	}
	return []configMapKey{
		{"filtering-mode", "whitelist, blacklist (default) or hybrid", func(cm *ConfigMap, v string) error {
			switch m := filter.Mode(strings.ToLower(strings.TrimSpace(v))); m {
			case filter.Whitelist, filter.Blacklist, filter.Hybrid:
				cm.Rules.Mode = m
				return nil
			}
			return errors.New("want whitelist, blacklist or hybrid")
		}},
		{"include-resources", "resources to back up, one per line", list(func(cm *ConfigMap) *[]string { return &cm.Rules.IncludeResources })},
		{"exclude-resources", "resources never backed up, one per line (default: events, leases, endpoints, endpointslices)", list(func(cm *ConfigMap) *[]string { return &cm.Rules.ExcludeResources })},
		{"include-namespaces", "namespaces to back up, one per line (empty: all)", list(func(cm *ConfigMap) *[]string { return &cm.Rules.IncludeNamespaces })},
		{"exclude-namespaces", "namespaces never backed up, one per line", list(func(cm *ConfigMap) *[]string { return &cm.Rules.ExcludeNamespaces })},
		{"include-crds", "custom resources (plural.group) for whitelist and hybrid modes", list(func(cm *ConfigMap) *[]string { return &cm.Rules.IncludeCRDs })},
		{"label-selector", "label selector applied server-side to every list and watch", selector(func(cm *ConfigMap) *labels.Selector { return &cm.Rules.LabelSelector })},
		{"annotation-selector", "selector over annotations, label-selector syntax", selector(func(cm *ConfigMap) *labels.Selector { return &cm.Rules.AnnotationSelector })},
		{"max-resource-size", "quantity such as 10Mi; larger objects are skipped (0: no limit)", func(cm *ConfigMap, v string) error {
			q, err := resource.ParseQuantity(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want a quantity such as 512Ki or 10Mi")
			}
			if q.Sign() < 0 {
				return errors.New("must not be negative")
			}
			cm.Rules.MaxResourceSize = q.Value()
			return nil
		}},
		{"include-service-account-tokens", "store Secrets of type kubernetes.io/service-account-token (default false: working credentials a restore never uses)", boolean(func(cm *ConfigMap) *bool { return &cm.Rules.IncludeServiceAccountTokens })},
		{"follow-owner-references", "back up objects whose owner is backed up (default false)", boolean(func(cm *ConfigMap) *bool { return &cm.Rules.FollowOwnerReferences })},
		{"include-managed-fields", "keep metadata.managedFields (default false)", boolean(func(cm *ConfigMap) *bool { return &cm.Rules.IncludeManagedFields })},
		{"include-status", "keep status (default false)", boolean(func(cm *ConfigMap) *bool { return &cm.Rules.IncludeStatus })},
		{"openshift-mode", "auto (default), enabled or disabled", func(cm *ConfigMap, v string) error {
			switch m := filter.OpenShiftMode(strings.ToLower(strings.TrimSpace(v))); m {
			case filter.OpenShiftAuto, filter.OpenShiftEnabled, filter.OpenShiftDisabled:
				cm.Rules.OpenShiftMode = m
				return nil
			}
			return errors.New("want auto, enabled or disabled")
		}},
		{"include-openshift-resources", "back up *.openshift.io resources when OpenShift is on (default true)", boolean(func(cm *ConfigMap) *bool { return &cm.Rules.IncludeOpenShiftResources })},
		{"validate-yaml", "re-parse each document before writing (default true)", boolean(func(cm *ConfigMap) *bool { return &cm.Rules.ValidateYAML })},
		{"skip-invalid-resources", "skip and count invalid or oversized objects instead of failing (default true)", boolean(func(cm *ConfigMap) *bool { return &cm.Rules.SkipInvalidResources })},
		{"max-prune-fraction", "a pass deleting more than this share of the stored objects deletes nothing (default 0.1; 1 disables)", func(cm *ConfigMap, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 || f > 1 {
				return errors.New("want a number from 0 to 1")
			}
			cm.MaxPruneFraction = f
			return nil
		}},
		{"batch-size", "overrides BATCH_SIZE", func(cm *ConfigMap, v string) error {
			n, err := parseInt(v, 1)
			cm.BatchSize = &n
			return err
		}},
		{"retry-attempts", "overrides RETRY_ATTEMPTS", func(cm *ConfigMap, v string) error {
			n, err := parseInt(v, 0)
			cm.RetryAttempts = &n
			return err
		}},
		{"retry-delay", "overrides RETRY_DELAY", func(cm *ConfigMap, v string) error {
			d, err := parseDuration(v)
			cm.RetryDelay = &d
			return err
		}},
	}
}

// ParseConfigMap validates the filtering keys. Keys that are absent keep
// their defaults; a key that is present replaces its default. An unknown key
// is an error, so that a misspelt key is not silently ignored.
func ParseConfigMap(data map[string]string) (ConfigMap, error) {
	cm := ConfigMap{Rules: filter.DefaultRules(), MaxPruneFraction: DefaultMaxPruneFraction}
	known := map[string]configMapKey{}
	for _, k := range configMapKeys() {
		known[k.name] = k
	}
	names := make([]string, 0, len(data))
	for name := range data {
		names = append(names, name)
	}
	sort.Strings(names) // report the first bad key deterministically
	for _, name := range names {
		k, ok := known[name]
		if !ok {
			return ConfigMap{}, &Error{Key: "ConfigMap key " + name, Value: oneLine(data[name]), Reason: "unknown key"}
		}
		if err := k.apply(&cm, data[name]); err != nil {
			return ConfigMap{}, &Error{Key: name, Value: oneLine(data[name]), Reason: err.Error()}
		}
	}
	cm.Hash = Hash(data)
	return cm, nil
}

// ReadDir reads a mounted ConfigMap: one regular file per key. Kubernetes
// mounts keys as symlinks into a timestamped "..data" directory, which is
// skipped along with every other dot entry.
func ReadDir(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &Error{Key: "BACKUP_CONFIG_DIR", Value: dir, Reason: "cannot read: " + unwrapPathError(err)}
	}
	data := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p) // follows the ..data symlinks
		if err != nil || st.IsDir() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, &Error{Key: "BACKUP_CONFIG_DIR", Value: p, Reason: "cannot read: " + unwrapPathError(err)}
		}
		data[e.Name()] = string(b)
	}
	return data, nil
}

// splitList reads a one-per-line list; commas also separate, blank lines and
// lines starting with # are ignored.
func splitList(v string) []string {
	var out []string
	for _, line := range strings.Split(v, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, item := range strings.Split(line, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

// oneLine keeps a multi-line value readable inside a one-line error.
func oneLine(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 200 {
		v = v[:200] + "..."
	}
	return v
}

func unwrapPathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
