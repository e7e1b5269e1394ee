package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
)

// clusterEntry is one cluster of the bucket, as ls --clusters prints it.
type clusterEntry struct {
	Name string `json:"name"`
	// Objects are the keys of the layout that hold a document now.
	Objects int `json:"objects"`
	// LastBackup is when the service last wrote into the cluster's prefix
	// (an object, a delete, the index or the restore pack).
	LastBackup time.Time `json:"lastBackup"`
}

// bucketClusters lists the clusters under BACKUP_PREFIX with what each
// holds and when it was last written.
func bucketClusters(ctx context.Context, cfg config.Config) ([]clusterEntry, error) {
	reader, err := openReadStore(ctx, cfg, readConnections)
	if err != nil {
		return nil, err
	}
	root := strings.TrimSuffix(cfg.BackupPrefix, "/") + "/"
	versions, err := reader.Versions(ctx, root)
	if err != nil {
		return nil, fatalError{err}
	}
	byName := map[string]*clusterEntry{}
	current := map[string]bool{}
	for _, v := range versions {
		name, _, ok := strings.Cut(strings.TrimPrefix(v.Key, root), "/")
		if !ok || name == "" || name == journal.Dir {
			continue // the change journal: no cluster can be called _journal
		}
		c := byName[name]
		if c == nil {
			c = &clusterEntry{Name: name}
			byName[name] = c
		}
		if v.Time.After(c.LastBackup) {
			c.LastBackup = v.Time
		}
		// Versions lists each key's newest version first: it says whether
		// the key holds a document now.
		if _, seen := current[v.Key]; !seen {
			current[v.Key] = true
			layout := object.Layout{Prefix: cfg.BackupPrefix, Cluster: name}
			if _, inLayout := layout.Parse(v.Key); inLayout && !v.DeleteMarker {
				c.Objects++
			}
		}
	}
	out := make([]clusterEntry, 0, len(byName))
	for _, c := range byName {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// listClusters is ls --clusters: the clusters this bucket holds.
func listClusters(ctx context.Context, cfg config.Config, sel *selection, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usagef("ls --clusters takes no arguments, got %q", strings.Join(args, " "))
	}
	clusters, err := bucketClusters(ctx, cfg)
	if err != nil {
		return err
	}
	now := time.Now()
	return printList(stdout, sel.output, clusters, func(c clusterEntry) string { return c.Name },
		func(tw io.Writer, wide bool) {
			fmt.Fprintln(tw, "CLUSTER\tOBJECTS\tLAST BACKUP\tAGE")
			for _, c := range clusters {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", c.Name, c.Objects, c.LastBackup.UTC().Format(time.RFC3339), sinceText(now.Sub(c.LastBackup)))
			}
		})
}

// sinceText is d as kubectl prints ages: 45s, 12m, 5h, 3d.
func sinceText(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
