package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/service"
)

// The three places the commands find the store's settings, after flags
// and the environment: the CLI config file's named stores, then the
// chart's release in the cluster the kubeconfig reaches.
const (
	configFileName = "cluster-backup/config.yaml"
	chartLabel     = "app.kubernetes.io/name=cluster-backup"
)

// releaseSettings are the settings read from an installed release: what a
// reader of the bucket needs, and nothing that names a path in the pod.
var releaseSettings = []string{
	"CLUSTER_NAME", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET",
	"MINIO_USE_SSL", "MINIO_REGION", "BACKUP_PREFIX", "INTEGRITY_KEY", "INTEGRITY_KEYS_OLD",
}

// cliConfig is the CLI config file: named stores, each a set of settings
// by their environment variable names, and the one used by default.
type cliConfig struct {
	Default string                       `json:"default"`
	Stores  map[string]map[string]string `json:"stores"`
}

// configFilePath is $CLUSTER_BACKUP_CONFIG, else config.yaml under
// $XDG_CONFIG_HOME or ~/.config.
func configFilePath(lookupEnv func(string) (string, bool)) string {
	if p, ok := lookupEnv("CLUSTER_BACKUP_CONFIG"); ok && p != "" {
		return p
	}
	if dir, ok := lookupEnv("XDG_CONFIG_HOME"); ok && dir != "" {
		return filepath.Join(dir, configFileName)
	}
	if home, ok := lookupEnv("HOME"); ok && home != "" {
		return filepath.Join(home, ".config", configFileName)
	}
	return ""
}

// storeFromFile returns the settings of the named store (or the file's
// default) of the CLI config file; none when there is no file and no name.
func storeFromFile(path, name string, stderr io.Writer) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && name == "" {
		return nil, nil
	}
	if err != nil {
		return nil, usagef("--store %q: cannot read the CLI config file: %v", name, err)
	}
	var f cliConfig
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return nil, usagef("CLI config file %s: %v (want default: NAME and stores: {NAME: {MINIO_ENDPOINT: ..., ...}})", path, err)
	}
	if name == "" {
		name = f.Default
	}
	if name == "" {
		return nil, nil
	}
	store, ok := f.Stores[name]
	if !ok {
		names := make([]string, 0, len(f.Stores))
		for n := range f.Stores {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, usagef("CLI config file %s has no store %q (it has: %s)", path, name, strings.Join(names, ", "))
	}
	known := config.Variables()
	for k := range store {
		if !slices.Contains(known, k) {
			return nil, usagef("CLI config file %s, store %q: unknown setting %q (settings are named as their environment variables: MINIO_ENDPOINT, CLUSTER_NAME, ...)", path, name, k)
		}
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 && (store["MINIO_SECRET_KEY"] != "" || store["INTEGRITY_KEY"] != "") {
		fmt.Fprintf(stderr, "warning: %s holds credentials and others can read it (mode %v): chmod 600 it\n", path, st.Mode().Perm())
	}
	return store, nil
}

// fromRelease reads the store settings of the chart's release in the
// cluster the kubeconfig reaches: its Deployment's (or CronJob's)
// environment, with the values of the Secrets and ConfigMaps it refers
// to. release is NAMESPACE/NAME, or empty for the only one installed.
func fromRelease(ctx context.Context, cfg config.Config, release string) (map[string]string, string, error) {
	kube, err := service.RestConfig(cfg, version)
	if err != nil {
		return nil, "", err
	}
	cs, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return nil, "", err
	}
	type found struct {
		ns, name string
		spec     corev1.PodSpec
	}
	var releases []found
	deployments, err := cs.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: chartLabel})
	if err != nil {
		return nil, "", err
	}
	for _, d := range deployments.Items {
		releases = append(releases, found{d.Namespace, d.Name, d.Spec.Template.Spec})
	}
	cronJobs, err := cs.BatchV1().CronJobs("").List(ctx, metav1.ListOptions{LabelSelector: chartLabel})
	if err != nil {
		return nil, "", err
	}
	for _, c := range cronJobs.Items {
		releases = append(releases, found{c.Namespace, c.Name, c.Spec.JobTemplate.Spec.Template.Spec})
	}
	if release != "" {
		releases = slices.DeleteFunc(releases, func(f found) bool { return f.ns+"/"+f.name != release })
	}
	switch len(releases) {
	case 0:
		if release != "" {
			return nil, "", fmt.Errorf("no Deployment or CronJob %s labelled %s", release, chartLabel)
		}
		return nil, "", nil
	case 1:
	default:
		var names []string
		for _, f := range releases {
			names = append(names, f.ns+"/"+f.name)
		}
		return nil, "", usagef("several releases of the chart in this cluster (%s): choose one with --release NAMESPACE/NAME", strings.Join(names, ", "))
	}
	f := releases[0]
	out := map[string]string{}
	for _, c := range f.spec.Containers {
		for _, e := range c.Env {
			if !slices.Contains(releaseSettings, e.Name) {
				continue
			}
			v, err := envValue(ctx, cs, f.ns, e)
			if err != nil {
				return nil, "", fmt.Errorf("%s of %s/%s: %w", e.Name, f.ns, f.name, err)
			}
			if v != "" {
				out[e.Name] = v
			}
		}
	}
	return out, f.ns + "/" + f.name, nil
}

// envValue is the value one environment entry of the pod spec gives.
func envValue(ctx context.Context, cs kubernetes.Interface, ns string, e corev1.EnvVar) (string, error) {
	switch {
	case e.ValueFrom == nil:
		return e.Value, nil
	case e.ValueFrom.SecretKeyRef != nil:
		ref := e.ValueFrom.SecretKeyRef
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return string(s.Data[ref.Key]), nil
	case e.ValueFrom.ConfigMapKeyRef != nil:
		ref := e.ValueFrom.ConfigMapKeyRef
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return cm.Data[ref.Key], nil
	}
	return "", nil
}

// storeSources composes where settings come from after the flags: the
// environment, then the CLI config file's store, then the release.
type storeSources struct {
	env     func(string) (string, bool)
	file    map[string]string
	release map[string]string
}

func (s storeSources) lookup(key string) (string, bool) {
	if v, ok := s.env(key); ok {
		return v, true
	}
	if v, ok := s.file[key]; ok {
		return v, true
	}
	v, ok := s.release[key]
	return v, ok
}

// errNoStore names the three ways to give the store.
var errNoStore = usagef("no store configured: set MINIO_ENDPOINT and the other MINIO_* settings (or their flags, or BACKUP_DIR for a directory), " +
	"name a store in the CLI config file (~/.config/cluster-backup/config.yaml, --store NAME), " +
	"or point the kubeconfig at a cluster where the chart is installed (its release is read; --release NAMESPACE/NAME)")
