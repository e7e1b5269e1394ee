package ui

import (
	"context"
	"sort"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
)

// index is what a cluster's pages list: the keys it holds now. It is
// built from one listing and served until it is IndexTTL old; then the
// next request still gets it while a new listing runs in the background,
// so no page waits for a listing but the very first.
type index struct {
	built      time.Time
	keys       []object.Key // sorted by namespace, type, name
	refreshing bool
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
	err := s.opts.Lister.WalkAfter(ctx, layout.Root(), "", func(st object.Stored) error {
		if k, ok := layout.Parse(st.Key); ok {
			idx.keys = append(idx.keys, k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(idx.keys, func(i, j int) bool {
		a, b := idx.keys[i], idx.keys[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Segment != b.Segment {
			return a.Segment < b.Segment
		}
		return a.Name < b.Name
	})
	return idx, nil
}
