package encrypt

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"filippo.io/age"
)

func secret() map[string]any {
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"type":       "Opaque",
		"metadata": map[string]any{
			"name":      "db",
			"namespace": "payments",
			"labels":    map[string]any{"app": "db"},
			"annotations": map[string]any{
				LastApplied: `{"stringData":{"password":"hunter2"}}`,
				"team":      "payments",
			},
		},
		"data":       map[string]any{"password": base64.StdEncoding.EncodeToString([]byte("hunter2")), "empty": ""},
		"stringData": map[string]any{"token": "s3cr3t"},
	}
}

func identity(t *testing.T) (*age.X25519Identity, string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(path, []byte("# test key\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return id, path
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestEncryptHidesValuesAndDecryptRestoresThem(t *testing.T) {
	id, path := identity(t)
	e, err := New(id.Recipient().String(), testKey)
	if err != nil {
		t.Fatal(err)
	}
	obj := secret()
	if err := e.Encrypt(obj); err != nil {
		t.Fatal(err)
	}
	if !Encrypted(obj) {
		t.Fatal("not marked as encrypted")
	}
	flat := flatten(obj)
	for _, plain := range []string{"hunter2", base64.StdEncoding.EncodeToString([]byte("hunter2")), "s3cr3t"} {
		if strings.Contains(flat, plain) {
			t.Errorf("%q is readable in the encrypted object: %s", plain, flat)
		}
	}
	// What stays readable: names, labels, type, keys, other annotations.
	for _, readable := range []string{"db", "payments", "Opaque", "password", "token", "empty", "app"} {
		if !strings.Contains(flat, readable) {
			t.Errorf("%q is no longer readable", readable)
		}
	}
	// One value decrypts on its own, as base64 -d | age -d | tail -n +2
	// does: its first line names its place.
	sealed, _ := base64.StdEncoding.DecodeString(obj["data"].(map[string]any)["password"].(string))
	r, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(r)
	line, value, _ := bytes.Cut(plain, []byte("\n"))
	if string(line) != "cluster-backup.io/bound-to: payments/db data/password" || string(value) != "hunter2" {
		t.Errorf("data.password decrypts to %q", plain)
	}

	d, err := LoadIdentities(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Decrypt(obj); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(obj, secret()) {
		t.Errorf("decrypted:\n%v\nwant:\n%v", obj, secret())
	}
}

func TestDecryptRefusesWithoutTheRightIdentity(t *testing.T) {
	id, _ := identity(t)
	_, otherPath := identity(t)
	e, _ := New(id.Recipient().String(), testKey)
	obj := secret()
	if err := e.Encrypt(obj); err != nil {
		t.Fatal(err)
	}
	var none *Decrypter
	if err := none.Decrypt(obj); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("no identity: %v", err)
	}
	other, _ := LoadIdentities(otherPath)
	if err := other.Decrypt(obj); err == nil || !strings.Contains(err.Error(), "data.empty") {
		t.Errorf("wrong identity: %v, want an error naming the value", err)
	}
	plain := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "data": map[string]any{"a": "b"}}
	if err := none.Decrypt(plain); err != nil {
		t.Errorf("a document stored in the clear: %v", err)
	}
}

func TestDigestIsKeyedAndCoversTheRecipients(t *testing.T) {
	a, _ := identity(t)
	b, _ := identity(t)
	one, _ := New(a.Recipient().String(), testKey)
	again, _ := New(" "+a.Recipient().String()+" ,\n", testKey)
	two, _ := New(b.Recipient().String()+","+a.Recipient().String(), testKey)
	twoReordered, _ := New(a.Recipient().String()+"\n"+b.Recipient().String(), testKey)
	otherKey, _ := New(a.Recipient().String(), []byte("another key of 32 bytes, at last"))
	doc := []byte("kind: Secret\n")
	switch {
	case one.Digest(doc) != again.Digest(doc):
		t.Error("the same recipients spelled differently change the digest")
	case two.Digest(doc) != twoReordered.Digest(doc):
		t.Error("the order of the recipients changes the digest")
	case one.Digest(doc) == two.Digest(doc):
		t.Error("adding a recipient leaves the digest unchanged: nothing would be re-encrypted")
	case one.Digest(doc) == otherKey.Digest(doc):
		t.Error("the digest does not depend on the key")
	case one.Digest(doc) == one.Digest([]byte("kind: Secret\n\n")):
		t.Error("the digest does not depend on the document")
	}
}

func TestSettingsErrors(t *testing.T) {
	id, _ := identity(t)
	file := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(file, []byte("# ops\n"+id.Recipient().String()+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, names, err := Recipients("@" + file); err != nil || len(names) != 1 {
		t.Errorf("recipients file: %v %v", names, err)
	}
	for _, bad := range []string{"", " , ", "age1notakey", "@/does/not/exist"} {
		if _, _, err := Recipients(bad); err == nil {
			t.Errorf("Recipients(%q) accepted", bad)
		}
	}
	if _, err := Key("short"); err == nil {
		t.Error("a 5-byte key accepted")
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, append(testKey, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := Key("@" + keyFile); err != nil || !bytes.Equal(k, testKey) {
		t.Errorf("key file: %q %v", k, err)
	}
}

// flatten renders every string of obj, keys and values.
func flatten(v any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				b.WriteString(k + "\n")
				walk(e)
			}
		case string:
			b.WriteString(t + "\n")
		}
	}
	walk(v)
	return b.String()
}

// TestCiphertextDecryptsOnlyInItsPlace: a value copied into another Secret,
// another key of the same Secret or any object other than a Secret is
// refused, and so is an unbound value in a bound document; a document
// written before values were bound still decrypts.
func TestCiphertextDecryptsOnlyInItsPlace(t *testing.T) {
	id, path := identity(t)
	e, _ := New(id.Recipient().String(), testKey)
	d, err := LoadIdentities(path)
	if err != nil {
		t.Fatal(err)
	}
	sealedSecret := func() map[string]any {
		obj := secret()
		if err := e.Encrypt(obj); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	password := func(obj map[string]any) string { return obj["data"].(map[string]any)["password"].(string) }
	// A value sealed as an age file of the bare value, as documents were
	// written before values were bound.
	unbound := func(v string) string {
		var buf bytes.Buffer
		w, _ := age.Encrypt(&buf, id.Recipient())
		_, _ = io.WriteString(w, v)
		_ = w.Close()
		return base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	cases := []struct {
		name string
		obj  func() map[string]any
		want error
	}{
		{"another Secret's name", func() map[string]any {
			obj := sealedSecret()
			obj["metadata"].(map[string]any)["name"] = "stolen"
			return obj
		}, ErrMisplaced},
		{"another namespace", func() map[string]any {
			obj := sealedSecret()
			obj["metadata"].(map[string]any)["namespace"] = "attacker"
			return obj
		}, ErrMisplaced},
		{"another key of the same Secret", func() map[string]any {
			obj := sealedSecret()
			obj["stringData"].(map[string]any)["token"] = password(obj)
			return obj
		}, ErrMisplaced},
		{"a ConfigMap", func() map[string]any {
			obj := sealedSecret()
			obj["kind"] = "ConfigMap"
			return obj
		}, ErrNotEncryptable},
		{"an unbound value in a bound document", func() map[string]any {
			obj := sealedSecret()
			obj["data"].(map[string]any)["password"] = unbound("hunter2")
			return obj
		}, ErrMisplaced},
		{"a bound value relabelled as an older document", func() map[string]any {
			obj := sealedSecret()
			obj["metadata"].(map[string]any)["name"] = "stolen"
			obj["metadata"].(map[string]any)["annotations"].(map[string]any)[Annotation] = Scheme + ": older"
			return obj
		}, ErrMisplaced},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := d.Decrypt(c.obj()); !errors.Is(err, c.want) {
				t.Errorf("decrypt: %v, want %v", err, c.want)
			}
		})
	}
	t.Run("a document written before values were bound", func(t *testing.T) {
		obj := secret()
		want := secret()
		obj["data"].(map[string]any)["password"] = unbound("hunter2")
		obj["data"].(map[string]any)["empty"] = unbound("")
		obj["stringData"].(map[string]any)["token"] = unbound("s3cr3t")
		annotations := obj["metadata"].(map[string]any)["annotations"].(map[string]any)
		annotations[LastApplied] = unbound(annotations[LastApplied].(string))
		annotations[Annotation] = Scheme + ": each value is base64(age ciphertext)"
		if err := d.Decrypt(obj); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(obj, want) {
			t.Errorf("decrypted:\n%v\nwant:\n%v", obj, want)
		}
	})
}
