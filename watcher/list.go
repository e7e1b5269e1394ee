package watcher

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/cluster-backup/cluster-backup/wire"
)

// Client is the dynamic client the service watches with (NewDynamicClient),
// with the REST client the informers list with (streamedListWatch).
type Client struct {
	*dynamic.DynamicClient
	lists rest.Interface
}

// streamedListWatch lists a type in one request, read item by item: each
// item is decoded and handed to each (the informer's transform, which
// compacts it and offers it to the writer) as it arrives, and the list the
// reflector receives holds the compacted objects. The decoded list is never
// held whole, and the API server serves a list from its watch cache at
// about a third of the CPU it spends streaming the same objects as watch
// events (measured: 10 us against 30 us per 2 KiB ConfigMap), which is
// why the reflector is told not to use a streaming watch for it.
type streamedListWatch struct {
	*cache.ListWatch
}

// IsWatchListSemanticsUnSupported keeps the reflector on list and watch.
func (streamedListWatch) IsWatchListSemanticsUnSupported() bool { return true }

func (c *Client) listWatch(gvr schema.GroupVersionResource, kind string, tweak func(*metav1.ListOptions), each func(any) (any, error)) cache.ListerWatcher {
	return streamedListWatch{&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			tweak(&opts)
			// One response, however large: it is read item by item.
			opts.Limit, opts.Continue = 0, ""
			// A consistent read, always. A list at any version ("0", as
			// the reflector first asks) may be served from the watch
			// cache as it is: with a conversion webhook down, such a list
			// of a custom resource succeeded with no items, and the pass
			// took the stored objects for deleted. A consistent list
			// fails instead, and the type stays incomplete
			// (TestFailingTypeDoesNotStallTheRest). Its version is the
			// newest: never older than one the reflector asks for.
			opts.ResourceVersion, opts.ResourceVersionMatch = "", ""
			return c.streamList(ctx, gvr, kind, opts, each)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			tweak(&opts)
			return c.Resource(gvr).Watch(ctx, opts)
		},
	}}
}

// compactList is a list of compacted objects, as the reflector reads it.
type compactList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []runtime.Object
}

func (l *compactList) DeepCopyObject() runtime.Object {
	out := *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]runtime.Object, len(l.Items))
	for i, item := range l.Items {
		out.Items[i] = item.DeepCopyObject()
	}
	return &out
}

// streamList reads the list item by item (wire.List), each item handed to
// each, and returns a list of what each made of them.
func (c *Client) streamList(ctx context.Context, gvr schema.GroupVersionResource, kind string, opts metav1.ListOptions, each func(any) (any, error)) (*compactList, error) {
	list := &compactList{}
	meta, err := wire.List(ctx, c.lists, gvr, "", kind, opts, func(u *unstructured.Unstructured) error {
		out, err := each(u)
		if err != nil {
			return err
		}
		obj, ok := out.(runtime.Object)
		if !ok {
			return fmt.Errorf("list item became %T", out)
		}
		list.Items = append(list.Items, obj)
		return nil
	})
	if err != nil {
		return nil, err
	}
	list.ListMeta = meta
	return list, nil
}
