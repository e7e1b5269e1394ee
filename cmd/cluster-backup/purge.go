package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/sink"
)

// versionDeleter deletes one version of a key for good (sink.MinIO).
type versionDeleter interface {
	DeleteVersion(ctx context.Context, key, id string) error
}

// purgeTarget is one stored version purge deletes.
type purgeTarget struct {
	object.Version
	why string
}

// runPurge deletes the stored versions of Secrets written in the clear
// (before SECRET_ENCRYPTION, or with it off): the versions of Secrets
// without the hmac-sha256 metadata every encrypted document carries, and
// the restore packs that hold such a Secret. A current version is never
// deleted (the service rewrites it encrypted on its next pass); without
// --yes nothing is deleted. A version the bucket's Object Lock retains
// stops the purge, said as such.
func runPurge(ctx context.Context, cfg config.Config, plaintextSecrets, yes bool, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usagef("purge takes no arguments, got %v", args)
	}
	if !plaintextSecrets {
		return usagef("purge deletes only what --plaintext-secrets names; give it")
	}
	reader, err := openReadStore(ctx, cfg, readConnections)
	if err != nil {
		return err
	}
	deleter, ok := reader.(versionDeleter)
	if !ok {
		return usagef("the directory store keeps no versions: there is nothing older to purge")
	}
	layout := object.Layout{Prefix: cfg.BackupPrefix, Cluster: cfg.ClusterName}
	versions, err := reader.Versions(ctx, layout.Root())
	if err != nil {
		return fatalError{err}
	}
	targets, current, err := plaintextVersions(ctx, reader, layout, versions)
	if err != nil {
		return fatalError{err}
	}
	for _, v := range current {
		fmt.Fprintf(stdout, "%-10s %s: its current version is in the clear; the service rewrites it encrypted on its next pass with SECRET_ENCRYPTION: run purge again then\n", "current", v.Key)
	}
	for _, t := range targets {
		fmt.Fprintf(stdout, "%-10s %s version %s (%s): %s\n", "plaintext", t.Key, t.ID, t.Time.UTC().Format(time.RFC3339), t.why)
	}
	if !yes {
		fmt.Fprintf(stderr, "purge: dry run: %d versions would be deleted for good; run again with --yes to delete them\n", len(targets))
		return nil
	}
	for i, t := range targets {
		if err := deleter.DeleteVersion(ctx, t.Key, t.ID); errors.Is(err, sink.ErrLocked) {
			fmt.Fprintf(stderr, "purge: %v\npurge: stopped: the bucket's Object Lock keeps this version (and those written with it) until its retention ends; %d of %d deleted\n", err, i, len(targets))
			return partialError{failed: len(targets) - i, what: "versions in the clear are kept by the bucket's Object Lock"}
		} else if err != nil {
			return fatalError{err}
		}
	}
	fmt.Fprintf(stderr, "purge: %d versions deleted for good\n", len(targets))
	return nil
}

// plaintextVersions finds the noncurrent versions of Secrets stored in the
// clear and the restore packs holding one; current lists the Secrets whose
// current version is in the clear. versions are listed newest first per
// key, as S3 lists them.
func plaintextVersions(ctx context.Context, r restore.Reader, layout object.Layout, versions []object.Version) (targets []purgeTarget, current []object.Version, err error) {
	newest := map[string]bool{}
	for _, v := range versions {
		isNewest := !newest[v.Key]
		newest[v.Key] = true
		if v.DeleteMarker {
			continue
		}
		switch k, ok := layout.Parse(v.Key); {
		case ok && k.Segment == "secrets":
			_, meta, err := r.Get(ctx, v.Key, v.ID)
			if err != nil {
				return nil, nil, err
			}
			if meta.HMAC != "" {
				continue // encrypted
			}
			if isNewest {
				current = append(current, v)
				continue
			}
			targets = append(targets, purgeTarget{v, "a Secret stored in the clear"})
		case v.Key == layout.PackKey() && !isNewest:
			clear, err := packHoldsPlaintext(ctx, r, layout, v)
			if err != nil {
				return nil, nil, err
			}
			if clear {
				targets = append(targets, purgeTarget{v, "a restore pack holding a Secret in the clear"})
			}
		}
	}
	return targets, current, nil
}

// packHoldsPlaintext reads one version of the restore pack and says
// whether it holds a Secret without the encrypted documents' metadata.
func packHoldsPlaintext(ctx context.Context, r restore.Reader, layout object.Layout, v object.Version) (bool, error) {
	body, _, err := r.Get(ctx, v.Key, v.ID)
	if err != nil {
		return false, err
	}
	p, err := pack.NewReader(bytes.NewReader(body))
	if err != nil {
		return true, nil //nolint:nilerr // not a pack: nothing tells it holds no Secret
	}
	for {
		key, e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return true, nil //nolint:nilerr // damaged past this point: it may hold one
		}
		if k, ok := layout.Parse(key); ok && k.Segment == "secrets" && e.Meta.HMAC == "" {
			return true, nil
		}
	}
}
