package ui

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
)

// index is what a cluster's pages list: the keys it holds now. It is
// built from one listing and served until it is IndexTTL old; then the
// next request still gets it while a new listing runs in the background,
// so no page waits for a listing but the very first.
type index struct {
	built      time.Time
	keys       []object.Key // sorted by namespace, type, name
	stored     []object.Stored
	refreshing bool

	labelsOnce sync.Once
	labels     []labels.Set // of keys[i], read on the first label search
	labelsErr  error
}

func (s *Server) index(ctx context.Context, cluster string) (*index, error) {
	s.mu.Lock()
	idx := s.indexes[cluster]
	if idx != nil {
		if s.opts.Now().Sub(idx.built) > s.opts.IndexTTL && !idx.refreshing {
			idx.refreshing = true
			go func() {
				fresh, err := s.list(context.WithoutCancel(ctx), cluster)
				s.mu.Lock()
				defer s.mu.Unlock()
				if err != nil {
					idx.refreshing = false
					return
				}
				s.indexes[cluster] = fresh
			}()
		}
		s.mu.Unlock()
		return idx, nil
	}
	s.mu.Unlock()
	fresh, err := s.list(ctx, cluster)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.indexes[cluster] = fresh
	s.mu.Unlock()
	return fresh, nil
}

// list lists the cluster's current keys.
func (s *Server) list(ctx context.Context, cluster string) (*index, error) {
	layout := s.layout(cluster)
	idx := &index{built: s.opts.Now()}
	type entry struct {
		key    object.Key
		stored object.Stored
	}
	var entries []entry
	err := s.opts.Lister.WalkAfter(ctx, layout.Root(), "", func(st object.Stored) error {
		if k, ok := layout.Parse(st.Key); ok {
			entries = append(entries, entry{k, st})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i].key, entries[j].key
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Segment != b.Segment {
			return a.Segment < b.Segment
		}
		return a.Name < b.Name
	})
	for _, e := range entries {
		idx.keys, idx.stored = append(idx.keys, e.key), append(idx.stored, e.stored)
	}
	return idx, nil
}

// Opener opens a stored object as a stream (sink.MinIO): the restore pack.
type Opener interface {
	Open(ctx context.Context, key, id string) (io.ReadCloser, error)
}

// labelsOf reads every listed object's labels, once per index: from the
// restore pack where it holds the version listed (its size and MD5
// match), else from the object itself, labelReaders at a time.
func (s *Server) labelsOf(ctx context.Context, cluster string, idx *index) ([]labels.Set, error) {
	idx.labelsOnce.Do(func() {
		idx.labels = make([]labels.Set, len(idx.keys))
		byKey := make(map[string]int, len(idx.keys))
		for i, st := range idx.stored {
			byKey[st.Key] = i
		}
		found := make([]bool, len(idx.keys))
		if opener, ok := s.opts.Reader.(Opener); ok {
			s.labelsFromPack(ctx, opener, cluster, idx, byKey, found)
		} else if opener, ok := s.opts.Lister.(Opener); ok {
			s.labelsFromPack(ctx, opener, cluster, idx, byKey, found)
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(labelReaders)
		for i, st := range idx.stored {
			if found[i] {
				continue
			}
			g.Go(func() error {
				body, _, err := s.opts.Reader.Get(gctx, st.Key, "")
				if errors.Is(err, object.ErrNotFound) {
					return nil // deleted since the listing
				}
				if err != nil {
					return err
				}
				idx.labels[i] = labelsIn(body)
				return nil
			})
		}
		idx.labelsErr = g.Wait()
	})
	return idx.labels, idx.labelsErr
}

// labelReaders bounds the objects read at once for their labels.
const labelReaders = 16

// labelsFromPack takes the labels of the documents the restore pack holds
// as listed; a pack that is missing or damaged only leaves more to read.
func (s *Server) labelsFromPack(ctx context.Context, opener Opener, cluster string, idx *index, byKey map[string]int, found []bool) {
	rc, err := opener.Open(ctx, s.layout(cluster).PackKey(), "")
	if err != nil {
		return
	}
	defer rc.Close()
	pr, err := pack.NewReader(rc)
	if err != nil {
		return
	}
	for {
		key, e, err := pr.Next()
		if err != nil {
			return
		}
		i, ok := byKey[key]
		if !ok {
			continue
		}
		st := idx.stored[i]
		body, err := e.Body(object.Version{Key: key, Size: st.Size, ETag: st.ETag})
		if err != nil {
			continue // another version than the one listed
		}
		idx.labels[i], found[i] = labelsIn(body), true
	}
}

// labelsIn reads a document's metadata.labels.
func labelsIn(body []byte) labels.Set {
	var doc struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if yaml.Unmarshal(body, &doc) != nil {
		return nil
	}
	return doc.Metadata.Labels
}
