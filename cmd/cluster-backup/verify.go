package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/sink"
)

// verifyBatch is how many documents verify holds at once.
const verifyBatch = 1000

// runVerify reads back every document of the selection as it was at --at
// (every namespace without -n): its bytes against its sha256, its
// integrity tag against INTEGRITY_KEY, the object it holds against its
// key. Each document that fails is listed with why; the change index is
// checked too. Exit 3 when any fails.
func runVerify(ctx context.Context, cfg config.Config, sel *selection, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usagef("verify takes no arguments, got %q", args)
	}
	if len(sel.namespaces) == 0 {
		sel.allNamespaces = true
	}
	base, err := openReadStore(ctx, cfg, readConnections)
	if err != nil {
		return err
	}
	layout := object.Layout{Prefix: cfg.BackupPrefix, Cluster: cfg.ClusterName}
	items, err := selectItems(ctx, base, layout, sel, resolver{}, sel.viewTime())
	if err != nil {
		return err
	}
	known := restore.Known(items)
	reader, readFrom := readThroughPack(ctx, "verify", base, layout, known, sel.viewTime(), cfg.Signer, stderr)
	reader = sel.signed(reader, cfg, "verify", stderr)
	failed := 0
	bar := newProgress(stderr, len(known), "verify", sel.quiet)
	defer bar.Done()
	listing := bar.Above(stdout)
	for batch := range slices.Chunk(known, verifyBatch) {
		for _, f := range restore.Fetch(ctx, reader, batch, 16) {
			bar.Add(1)
			err := f.Err
			if err == nil {
				err = filed(layout, f.Version.Key, f.Body)
			}
			if err != nil {
				failed++
				fmt.Fprintf(listing, "%-10s %s: %v\n", verdict(err), f.Version.Key, err)
			}
		}
	}
	readFrom()
	bar.Done()
	if err := verifyIndex(ctx, base, cfg.Signer, layout.IndexKey()); err != nil {
		failed++
		fmt.Fprintf(stdout, "%-10s %s: %v\n", verdict(err), layout.IndexKey(), err)
	}
	fmt.Fprintf(stderr, "verify: %d documents read, %d failed, %d the store cannot say (one version per key, or expired)\n",
		len(known), failed, len(items)-len(known))
	if failed > 0 {
		return partialError{failed: failed, what: "documents failed verification"}
	}
	return nil
}

// filed checks that a document holds the object its key names.
func filed(layout object.Layout, key string, body []byte) error {
	k, ok := layout.Parse(key)
	if !ok {
		return nil
	}
	obj, err := restore.Decode(body)
	if err != nil {
		return err
	}
	return restore.CheckKey(obj, k, "")
}

// verifyIndex checks the change index's tag; a store without one (its
// listings carry metadata) passes.
func verifyIndex(ctx context.Context, r restore.Reader, signer *object.Signer, key string) error {
	if signer == nil {
		return nil
	}
	body, meta, err := r.Get(ctx, key, "")
	if errors.Is(err, sink.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return signer.CheckBytes(key, body, meta.Integrity)
}

// verdict is the one word verify prints for why a document failed.
func verdict(err error) string {
	switch {
	case errors.Is(err, object.ErrForged):
		return "forged"
	case errors.Is(err, object.ErrUnsigned):
		return "unsigned"
	case errors.Is(err, restore.ErrAltered):
		return "altered"
	case errors.Is(err, restore.ErrMisfiled):
		return "misfiled"
	}
	return "unreadable"
}
