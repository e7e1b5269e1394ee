package main

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
)

// completionTimeout bounds the store listing behind one completion: a
// shell waiting on a slow bucket is worse than no suggestion.
const completionTimeout = 10 * time.Second

// registerCompletions completes, from the backup itself, namespaces (-n),
// clusters (--backup-cluster) and RESOURCE/NAME arguments, with the store
// settings the command line and the environment give.
func registerCompletions(ctx context.Context, cmd *cobra.Command, c command, sel *selection, load func() (config.Config, error)) {
	items := func(namespaces []string) []restore.Item {
		cfg, err := load()
		if err != nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(ctx, completionTimeout)
		defer cancel()
		reader, err := openReadStore(ctx, cfg, readConnections)
		if err != nil {
			return nil
		}
		layout := object.Layout{Prefix: cfg.BackupPrefix, Cluster: cfg.ClusterName}
		if sel.at != "" {
			sel.atTime, _ = parseTime(sel.at, time.Now())
		}
		out, _ := restore.View(ctx, reader, layout, namespaces, sel.viewTime())
		return out
	}
	_ = cmd.RegisterFlagCompletionFunc("namespace", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var names []string
		for _, it := range items(nil) {
			if it.Namespace != "" {
				names = append(names, it.Namespace)
			}
		}
		return unique(names), cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("backup-cluster", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		cfg, err := load()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(ctx, completionTimeout)
		defer cancel()
		clusters, _ := bucketClusters(ctx, cfg)
		var names []string
		for _, c := range clusters {
			names = append(names, c.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{"table", "wide", "yaml", "json", "name", "jsonpath=", "custom-columns="}, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveNoSpace))
	if !c.complete {
		return
	}
	cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var namespaces []string
		if !sel.allNamespaces {
			namespaces = sel.namespaces
			if len(namespaces) == 0 && sel.contextNamespace != "" {
				namespaces = []string{sel.contextNamespace}
			}
		}
		found := items(namespaces)
		resource, _, named := strings.Cut(toComplete, "/")
		var out []string
		for _, it := range found {
			if len(namespaces) > 0 && it.Namespace == "" && it.Segment != "namespaces" {
				continue
			}
			switch {
			case !named:
				out = append(out, it.Segment+"/")
			case it.Segment == resource:
				out = append(out, it.Segment+"/"+it.Name)
			}
		}
		directive := cobra.ShellCompDirectiveNoFileComp
		if !named {
			directive |= cobra.ShellCompDirectiveNoSpace
		}
		return unique(out), directive
	}
}

// unique sorts names and drops repeats.
func unique(names []string) []string {
	sort.Strings(names)
	out := names[:0]
	for i, n := range names {
		if i == 0 || n != names[i-1] {
			out = append(out, n)
		}
	}
	return out
}
