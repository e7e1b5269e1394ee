package main

import (
	"strings"
	"testing"
)

// TestPatchTextsNeverShowASecret: history -p masks a Secret's values on
// both sides, also when the other side cannot be read, and withholds a
// Secret that does not parse.
func TestPatchTextsNeverShowASecret(t *testing.T) {
	const value = "cGF0Y2gtc2VjcmV0LTQ0" // base64 of patch-secret-44
	secret := []byte("apiVersion: v1\ndata:\n  password: " + value + "\nkind: Secret\nmetadata:\n  name: db\n  namespace: shop\n")
	broken := []byte("kind: Secret\ndata: [password: " + value + "\n")
	b := &browser{}
	for _, tc := range []struct {
		name          string
		older, newer  []byte
		wantOld, want string
	}{
		{"a new Secret", nil, secret, "", "password: '***'"},
		{"the newer one unreadable", secret, []byte("{not yaml"), "password: '***'", "{not yaml"},
		{"the newer one a broken Secret", secret, broken, "password: '***'", "withheld"},
		{"the older one a broken Secret", broken, secret, "withheld", "password: '***'"},
	} {
		o, n := b.patchTexts(tc.older, tc.newer)
		if strings.Contains(o+n, value) {
			t.Errorf("%s: the Secret's value is shown:\n%s\n%s", tc.name, o, n)
		}
		if !strings.Contains(o, tc.wantOld) || !strings.Contains(n, tc.want) {
			t.Errorf("%s: %q / %q, want %q / %q", tc.name, o, n, tc.wantOld, tc.want)
		}
	}
}
