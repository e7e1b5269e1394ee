package object

import (
	"errors"
	"strings"
	"testing"
)

func TestSignerAuthenticatesTheFieldManager(t *testing.T) {
	key := "clusterbackup/east/shop/configmaps/web.yaml"
	s := NewSigner([]byte("0123456789abcdef-current"))
	m := Meta{ResourceVersion: "7", UID: "u", APIVersion: "v1", SHA256: Digest([]byte("data: {}\n")), Manager: "helm"}
	m.Integrity = s.Sign(key, m)
	if err := s.Check(key, m); err != nil {
		t.Fatalf("a signed document with its manager: %v", err)
	}
	for _, forged := range []string{"kubectl-edit", ""} {
		m2 := m
		m2.Manager = forged
		if err := s.Check(key, m2); !errors.Is(err, ErrForged) {
			t.Errorf("manager %q in place of helm: %v, want ErrForged", forged, err)
		}
	}
	// A tag of a document without a manager is the one it always was.
	plain := Meta{ResourceVersion: "7", UID: "u", APIVersion: "v1", SHA256: m.SHA256}
	if string(documentMessage(key, plain)) == string(documentMessage(key, m)) || !strings.Contains(string(documentMessage(key, plain)), "document 1") {
		t.Error("a document without a manager must keep the first form of the message")
	}
}

func TestSignerAuthenticatesKeyMetadataAndBytes(t *testing.T) {
	key := "clusterbackup/east/shop/configmaps/web.yaml"
	m := Meta{ResourceVersion: "7", UID: "u", APIVersion: "v1", SHA256: Digest([]byte("data: {}\n")), ClusterUID: "c1"}
	s := NewSigner([]byte("0123456789abcdef-current"))
	m.Integrity = s.Sign(key, m)
	if err := s.Check(key, m); err != nil {
		t.Fatalf("a signed document: %v", err)
	}
	if !strings.HasPrefix(m.Integrity, s.KeyID()+".") || len(m.Integrity) != 8+1+64 {
		t.Errorf("tag %q, want %s.<64 hex digits>", m.Integrity, s.KeyID())
	}
	// Every field, the key and the bytes (through SHA256) are bound.
	for name, alter := range map[string]func(*Meta, *string){
		"key":              func(_ *Meta, k *string) { *k = strings.Replace(*k, "web", "api", 1) },
		"resource-version": func(m *Meta, _ *string) { m.ResourceVersion = "8" },
		"uid":              func(m *Meta, _ *string) { m.UID = "v" },
		"api-version":      func(m *Meta, _ *string) { m.APIVersion = "v2" },
		"bytes":            func(m *Meta, _ *string) { m.SHA256 = Digest([]byte("data: {a: b}\n")) },
		"hmac":             func(m *Meta, _ *string) { m.HMAC = "00" },
		"cluster-uid":      func(m *Meta, _ *string) { m.ClusterUID = "c2" },
		"manager added":    func(m *Meta, _ *string) { m.Manager = "kubectl-edit" },
		"tag":              func(m *Meta, _ *string) { m.Integrity = m.Integrity[:len(m.Integrity)-1] + "0" },
	} {
		m2, k2 := m, key
		alter(&m2, &k2)
		if m2.Integrity == m.Integrity && name == "tag" {
			m2.Integrity = m.Integrity[:len(m.Integrity)-1] + "1"
		}
		if err := s.Check(k2, m2); !errors.Is(err, ErrForged) {
			t.Errorf("%s altered: %v, want ErrForged", name, err)
		}
	}
	unsigned := m
	unsigned.Integrity = ""
	if err := s.Check(key, unsigned); !errors.Is(err, ErrUnsigned) {
		t.Errorf("no tag: %v, want ErrUnsigned", err)
	}
	// Rotation: the new key checks what the old one signed; a key it does
	// not hold is named.
	rotated := NewSigner([]byte("0123456789abcdef-next"), []byte("0123456789abcdef-current"))
	if err := rotated.Check(key, m); err != nil {
		t.Errorf("signed by an old key: %v", err)
	}
	if rotated.Sign(key, m) == m.Integrity {
		t.Error("the new key signs as the old one")
	}
	other := NewSigner([]byte("0123456789abcdef-other"))
	if err := other.Check(key, m); !errors.Is(err, ErrForged) || !strings.Contains(err.Error(), s.KeyID()) {
		t.Errorf("signed by a key not held: %v, want ErrForged naming %s", err, s.KeyID())
	}
	// A nil Signer signs and checks nothing.
	var none *Signer
	if none.Sign(key, m) != "" || none.Check(key, unsigned) != nil || none.KeyID() != "" {
		t.Error("a nil Signer signs or checks")
	}
	// Side objects: the name and the bytes are bound.
	tag := s.SignBytes("index", []byte("a\tb\n"))
	if err := s.CheckBytes("index", []byte("a\tb\n"), tag); err != nil {
		t.Errorf("side object: %v", err)
	}
	if s.CheckBytes("index", []byte("a\tc\n"), tag) == nil || s.CheckBytes("pack", []byte("a\tb\n"), tag) == nil {
		t.Error("a side object's tag checks other bytes or another name")
	}
}

// BenchmarkIntegrityTag compares the tag a write adds with the SHA-256 of
// a 2 KiB document, which every write already computes.
func BenchmarkIntegrityTag(b *testing.B) {
	doc := []byte(strings.Repeat("server.pool.max=42\n", 108))
	key := "clusterbackup/prod/shop/configmaps/settings.yaml"
	m := Meta{ResourceVersion: "123456", UID: "0a6e7f3c-8d1e-4c55-9f4e-2b7f1a9c3d21", APIVersion: "v1", SHA256: Digest(doc), ClusterUID: "5b0c8e2a-1f3d-4a6b-8c9e-7d2f4a1b3c5e"}
	s := NewSigner([]byte("integrity-key-0123456789abcdef"))
	b.Run("sha256 of the document", func(b *testing.B) {
		for b.Loop() {
			_ = Digest(doc)
		}
	})
	b.Run("integrity tag", func(b *testing.B) {
		for b.Loop() {
			_ = s.Sign(key, m)
		}
	})
}
