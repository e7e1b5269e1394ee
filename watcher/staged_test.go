package watcher

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// TestStagedCopiesEndAtTheSync: during the first list the writer reads an
// object from its staged copy; once the informer has synced, the cache is
// the truth, and an object deleted before the staged copies are dropped is
// not read back from them.
func TestStagedCopiesEndAtTheSync(t *testing.T) {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			return &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			// A streamed first list of no objects: only its end.
			fw := watch.NewFake()
			go fw.Action(watch.Bookmark, &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"resourceVersion": "1", "annotations": map[string]any{metav1.InitialEventsAnnotationKey: "true"}},
			}})
			return fw, nil
		},
	}
	w := &informer{inf: cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, 0, cache.Indexers{})}
	w.setListing(true)
	w.stage(&cached{cachedMeta: cachedMeta{namespace: "ns", name: "doomed"}})
	if _, ok := w.get("ns/doomed"); !ok {
		t.Fatal("a staged object is not found while the list streams")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.inf.RunWithContext(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for !w.inf.HasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("informer did not sync")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Synced, with the staged copy not yet dropped (setListing(false)
	// runs when the sync is noticed).
	if _, ok := w.get("ns/doomed"); ok {
		t.Error("an object absent from the synced cache was read from its staged copy")
	}
}
