package watcher

import (
	"testing"

	"k8s.io/client-go/rest"
)

// TestListsAreNotRateLimited: an informer's list replaces the streaming
// watch client-go would open, which no client-side limit holds; with many
// types a rate-limited list of each would delay the first backup by
// seconds.
func TestListsAreNotRateLimited(t *testing.T) {
	c, err := NewDynamicClient(&rest.Config{Host: "http://127.0.0.1:1", QPS: 1, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c.lists.GetRateLimiter() != nil {
		t.Error("the informers' lists are rate-limited")
	}
}
