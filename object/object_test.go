package object

import "testing"

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{ResourceVersion: "1", UID: "u", APIVersion: "apps/v1", SHA256: Digest([]byte("x")), ClusterUID: "c"}
	served := map[string]string{}
	for k, v := range m.Map() {
		served["X-Amz-Meta-"+k] = v // how S3 listings return them
	}
	if got := MetaFromMap(served); got != m {
		t.Errorf("got %+v, want %+v", got, m)
	}
}
