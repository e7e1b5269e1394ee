package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/service"
	"github.com/cluster-backup/cluster-backup/sink"
)

// runAdopt lets a rebuilt cluster take its prefix over: it shows which
// cluster owns the prefix and since when, asks, and records this cluster
// as the owner, with the old owner adopted. The service then writes over
// and prunes the old cluster's keys as its own, where it would otherwise
// hold every delete back and leave them alone.
func runAdopt(ctx context.Context, cfg config.Config, yes bool, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usagef("adopt takes no arguments, got %v", args)
	}
	kube, err := service.RestConfig(cfg, version)
	if err != nil {
		return fatalError{err}
	}
	cs, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return fatalError{err}
	}
	ns, err := cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return fatalError{fmt.Errorf("read this cluster's identity (the kube-system namespace): %w", err)}
	}
	uid := string(ns.UID)
	// The bucket must exist: adopt never creates one.
	reader, err := openReadStore(ctx, cfg, 1)
	if err != nil {
		return err
	}
	store, ok := reader.(sink.Store)
	if !ok {
		return fatalError{fmt.Errorf("the store cannot be written")}
	}
	layout := object.Layout{Prefix: cfg.BackupPrefix, Cluster: cfg.ClusterName}
	key := layout.IdentityKey()
	body, meta, err := store.Get(ctx, key, "")
	var owner object.Identity
	switch {
	case errors.Is(err, sink.ErrNotFound):
	case err != nil:
		return fatalError{fmt.Errorf("read the identity marker %s: %w", key, err)}
	default:
		owner = object.ParseIdentity(body)
		owner.UID = meta.ClusterUID // the metadata, as the service reads it
	}
	if owner.UID == uid {
		fmt.Fprintf(stdout, "This cluster (kube-system UID %s) already owns %s.\n", uid, layout.Root())
		return nil
	}
	if owner.UID == "" {
		fmt.Fprintf(stdout, "No cluster owns %s yet.\n", layout.Root())
	} else {
		fmt.Fprintf(stdout, "%s is owned by cluster %q (kube-system UID %s)%s.\n", layout.Root(), owner.Cluster, owner.UID, since(ctx, reader, key))
	}
	fmt.Fprintf(stdout, "This cluster is kube-system UID %s.\n", uid)
	if !yes {
		if err := confirm(stderr, "Adopt records this cluster as the owner: its service then writes over and prunes the keys the other cluster wrote. Do it only when that cluster is gone."); err != nil {
			return err
		}
	}
	next := owner.Adopt(cfg.ClusterName, uid)
	body = next.Marshal()
	if err := store.Put(ctx, key, body, object.Meta{UID: uid, ClusterUID: uid, SHA256: object.Digest(body)}); err != nil {
		return fatalError{fmt.Errorf("write the identity marker %s: %w", key, err)}
	}
	fmt.Fprintf(stdout, "This cluster now owns %s; the keys of %v are its own. Start (or restart) the service.\n", layout.Root(), next.Adopted)
	return nil
}

// since says since when the marker names its owner: the time of its
// current version, when the store keeps versions.
func since(ctx context.Context, r restore.Reader, key string) string {
	versions, err := restore.History(ctx, r, key, time.Time{}, time.Time{})
	if err != nil || len(versions) == 0 || versions[0].DeleteMarker {
		return ""
	}
	return " since " + versions[0].Time.UTC().Format(time.RFC3339)
}
