package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/service"
)

// kubeFlags are kubectl's flags over the kubeconfig, spelled and read as
// kubectl reads them (--kubeconfig is the KUBECONFIG setting's flag).
type kubeFlags struct {
	context, cluster, user string
	as                     string
	asGroups               []string
	requestTimeout         string
}

func (k *kubeFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&k.context, "context", "", "the kubeconfig context to use")
	fs.StringVar(&k.cluster, "cluster", "", "the kubeconfig cluster to use (the backed-up cluster is --backup-cluster)")
	fs.StringVar(&k.user, "user", "", "the kubeconfig user to use")
	fs.StringVar(&k.as, "as", "", "user to impersonate for the operation")
	fs.StringArrayVar(&k.asGroups, "as-group", nil, "group to impersonate for the operation (repeatable)")
	fs.StringVar(&k.requestTimeout, "request-timeout", "", "how long to wait for a single API request (1s, 2m; 0: no limit)")
}

// legacyCluster reads --cluster the old way, as the backed-up cluster,
// when it names no cluster of the kubeconfig (at path, KUBECONFIG's
// value) and --backup-cluster is not given; it says so on stderr.
func (k *kubeFlags) legacyCluster(path string, sel *selection, stderr io.Writer) {
	if k.cluster == "" || sel.cluster != "" {
		return
	}
	raw, err := service.ClientConfig(config.Config{Kubeconfig: path}).RawConfig()
	if _, known := raw.Clusters[k.cluster]; err != nil || known {
		return
	}
	fmt.Fprintf(stderr, "warning: --cluster %q names no kubeconfig cluster and is read as the backed-up cluster; that meaning is deprecated: use --backup-cluster %s\n", k.cluster, k.cluster)
	sel.cluster, k.cluster = k.cluster, ""
}

// overrides are the flags as clientcmd's overrides of the kubeconfig.
func (k *kubeFlags) overrides() clientcmd.ConfigOverrides {
	return clientcmd.ConfigOverrides{
		CurrentContext: k.context,
		Timeout:        k.requestTimeout,
		Context:        clientcmdapi.Context{Cluster: k.cluster, AuthInfo: k.user},
		AuthInfo:       clientcmdapi.AuthInfo{Impersonate: k.as, ImpersonateGroups: k.asGroups},
	}
}

// apply puts the overrides into cfg and reads from the kubeconfig what the
// selection needs: the context's namespace.
func (k *kubeFlags) apply(cfg config.Config, sel *selection) config.Config {
	cfg.Kube = k.overrides()
	if len(sel.namespaces) == 0 {
		if ns, _, err := service.ClientConfig(cfg).Namespace(); err == nil && ns != "" {
			sel.contextNamespace = ns
		}
	}
	return cfg
}
