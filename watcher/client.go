package watcher

import (
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/cluster-backup/cluster-backup/wire"
)

// NewDynamicClient is dynamic.NewForConfig with the leaner JSON decoders
// of wire.Serializer for watch streams, which carry every object the
// service backs up.
//
// The informers' lists (streamedListWatch) go through a second REST client
// without the client-side rate limit: each replaces the streaming watch
// that client-go's informers open instead of a list, and client-go does not
// rate-limit watches. API_QPS holds every other request, as before.
func NewDynamicClient(cfg *rest.Config) (*Client, error) {
	rc, err := wire.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	unlimited := rest.CopyConfig(cfg)
	unlimited.QPS, unlimited.Burst, unlimited.RateLimiter = -1, 0, nil
	lists, err := wire.NewClient(unlimited)
	if err != nil {
		return nil, err
	}
	return &Client{DynamicClient: dynamic.New(rc), lists: lists}, nil
}
