package restore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
)

func TestAt(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// Each key's versions newest first, as a listing returns them.
	versions := []object.Version{
		{Key: "a", ID: "a3", Time: at(30)},
		{Key: "a", ID: "a2", Time: at(20)},
		{Key: "a", ID: "a1", Time: at(10)},
		{Key: "b", ID: "b2", Time: at(25), DeleteMarker: true},
		{Key: "b", ID: "b1", Time: at(5)},
		{Key: "c", ID: "c1", Time: at(15)},
	}
	for _, tc := range []struct {
		name string
		t    time.Time
		want string // key:id, in order
	}{
		{"before every version", at(1), ""},
		{"between versions", at(12), "a:a1 b:b1"},
		{"exactly at a version", at(20), "a:a2 b:b1 c:c1"},
		{"a delete marker in force", at(26), "a:a2 c:c1"},
		{"now", at(100), "a:a3 c:c1"},
	} {
		var got []string
		for _, v := range At(versions, tc.t) {
			got = append(got, v.Key+":"+v.ID)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, got, tc.want)
		}
	}
}

// memReader is a Reader over fixed versions and bodies.
type memReader struct {
	versions []object.Version
	bodies   map[string]string // by key@id
	metas    map[string]object.Meta
}

func (m memReader) Versions(_ context.Context, prefix string) ([]object.Version, error) {
	var out []object.Version
	for _, v := range m.versions {
		if strings.HasPrefix(v.Key, prefix) {
			out = append(out, v)
		}
	}
	return out, nil
}

func (m memReader) Get(_ context.Context, key, id string) ([]byte, object.Meta, error) {
	b, ok := m.bodies[key+"@"+id]
	if !ok {
		return nil, object.Meta{}, errors.New("not found")
	}
	return []byte(b), m.metas[key+"@"+id], nil
}

func TestViewAndVerifiedReads(t *testing.T) {
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	now := time.Now()
	good, altered := "kind: ConfigMap\n", "kind: ConfigMap\ndata: {x: y}\n"
	cm := func(ns, name string) string {
		return layout.Key(object.Ref{Resource: "configmaps", Namespace: ns, Name: name})
	}
	r := memReader{
		versions: []object.Version{
			{Key: cm("a", "one"), ID: "1", Time: now},
			{Key: cm("a", "two"), ID: "1", Time: now},
			{Key: cm("b", "three"), ID: "1", Time: now},
			{Key: layout.IdentityKey(), ID: "1", Time: now},
			{Key: layout.Key(object.Ref{Resource: "namespaces", Name: "a"}), ID: "1", Time: now},
		},
		bodies: map[string]string{cm("a", "one") + "@1": good, cm("a", "two") + "@1": altered},
		metas: map[string]object.Meta{
			cm("a", "one") + "@1": {SHA256: object.Digest([]byte(good))},
			cm("a", "two") + "@1": {SHA256: object.Digest([]byte(good))}, // body changed, metadata kept
		},
	}
	items, err := View(context.Background(), r, layout, []string{"a"}, now)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range items {
		names = append(names, it.Segment+"/"+it.Name)
	}
	if strings.Join(names, " ") != "namespaces/a configmaps/one configmaps/two" {
		t.Errorf("view of namespace a: %v", names)
	}
	got := Fetch(context.Background(), r, items[1:], 4)
	if got[0].Err != nil || string(got[0].Body) != good {
		t.Errorf("a good document: %q %v", got[0].Body, got[0].Err)
	}
	if !errors.Is(got[1].Err, ErrAltered) || !strings.Contains(got[1].Err.Error(), cm("a", "two")) {
		t.Errorf("an altered document: %v, want ErrAltered naming its key", got[1].Err)
	}
}

func TestWaveOfSegmentMatchesWaveOfKind(t *testing.T) {
	r := newRestorer(Target{}, Options{})
	for gk, want := range waveOfKind {
		if got := r.waveOf(segmentOf(gk.Group, gk.Kind)); got != want {
			t.Errorf("%s: wave %d by segment %q, %d by kind", gk, got, segmentOf(gk.Group, gk.Kind), want)
		}
	}
	for seg, want := range map[string]Wave{
		"configmaps": WaveConfiguration, "deployments": WaveWorkloads, "namespaces": WaveCluster,
		"customresourcedefinitions.apiextensions.k8s.io": WaveCRDs, "priorityclasses.scheduling.k8s.io": WaveCluster,
		"validatingwebhookconfigurations.admissionregistration.k8s.io": WaveAdmission, "widgets.example.com": WaveRest,
	} {
		if got := r.waveOf(seg); got != want {
			t.Errorf("%s: wave %d, want %d", seg, got, want)
		}
	}
}

// TestViewTellsUnknownFromAbsent: a key whose versions all come after t
// did not exist at t when its object was created after t, and is unknown
// when it was created before (a store with one version per key, or with
// older versions expired) or when its oldest version kept is a delete
// marker.
func TestViewTellsUnknownFromAbsent(t *testing.T) {
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	cm := func(name string) string {
		return layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: name})
	}
	doc := func(name string, created time.Time) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: a\n  creationTimestamp: \"" + created.Format(time.RFC3339) + "\"\n"
	}
	bodies := map[string]string{
		cm("modified") + "@1":  doc("modified", at(0)),  // existed before t, rewritten after
		cm("created") + "@1":   doc("created", at(5)),   // created after t
		cm("kept") + "@1":      doc("kept", at(0)),      // a version from before t
		cm("recreated") + "@2": doc("recreated", at(0)), // the older of two, both after t
		cm("recreated") + "@3": doc("recreated", at(6)),
		// created in t's second (creation times have whole seconds):
		// after t, as far as anything can tell
		cm("same-second") + "@1": doc("same-second", at(2)),
	}
	metas := map[string]object.Meta{}
	for k, b := range bodies {
		metas[k] = object.Meta{SHA256: object.Digest([]byte(b))}
	}
	r := memReader{
		versions: []object.Version{
			{Key: cm("modified"), ID: "1", Time: at(4)},
			{Key: cm("created"), ID: "1", Time: at(5)},
			{Key: cm("deleted"), ID: "9", Time: at(4), DeleteMarker: true},
			{Key: cm("kept"), ID: "1", Time: at(1)},
			{Key: cm("recreated"), ID: "3", Time: at(6)},
			{Key: cm("recreated"), ID: "2", Time: at(3)},
			{Key: cm("same-second"), ID: "1", Time: at(2).Add(300 * time.Millisecond)},
		},
		bodies: bodies, metas: metas,
	}
	items, err := View(context.Background(), r, layout, []string{"a"}, at(2).Add(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		s := it.Name
		if it.Unknown {
			s += "?"
		}
		got = append(got, s)
	}
	if strings.Join(got, " ") != "deleted? kept modified? recreated?" {
		t.Errorf("view at t: %v, want deleted? kept modified? recreated?", got)
	}
	if known := Known(items); len(known) != 1 || known[0].Name != "kept" {
		t.Errorf("known: %v", known)
	}
	rs := newRestorer(Target{}, Options{})
	for _, it := range items {
		if it.Unknown {
			if p := rs.decide(Fetched{Item: it}, func(ownerKey) bool { return false }); p != nil {
				t.Errorf("%s: an unknown item was planned", it.Name)
			}
		}
	}
	if c := Counts(rs.results); c[Unknown] != 3 {
		t.Errorf("outcomes %v, want 3 unknown", c)
	}
}

// TestSignedRefusesWhatTheServiceDidNotWrite: a document whose tag the
// Signer does not accept is refused by name; an unsigned one unless
// AcceptUnsigned; a nil Signer accepts everything.
func TestSignedRefusesWhatTheServiceDidNotWrite(t *testing.T) {
	signer := object.NewSigner([]byte("integrity-key-0123456789"))
	r := memReader{bodies: map[string]string{}, metas: map[string]object.Meta{}}
	put := func(key, body string, sign bool, replay string) {
		m := object.Meta{SHA256: object.Digest([]byte(body)), APIVersion: "v1"}
		if sign {
			m.Integrity = signer.Sign(key, m)
		}
		if replay != "" {
			m.Integrity = r.metas[replay+"@1"].Integrity
		}
		r.bodies[key+"@1"], r.metas[key+"@1"] = body, m
	}
	put("a", "kind: ConfigMap\n", true, "")
	put("b", "kind: ConfigMap\n", false, "")
	put("c", "kind: ConfigMap\ndata: {x: y}\n", false, "a") // a's tag replayed
	ctx := context.Background()
	for _, tc := range []struct {
		key            string
		acceptUnsigned bool
		want           error
	}{
		{"a", false, nil},
		{"b", false, object.ErrUnsigned},
		{"b", true, nil},
		{"c", false, object.ErrForged},
		{"c", true, object.ErrForged},
	} {
		_, _, err := Read(ctx, Signed{Reader: r, Signer: signer, AcceptUnsigned: tc.acceptUnsigned}, tc.key, "1")
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) || (err != nil && !strings.Contains(err.Error(), tc.key+":")) {
			t.Errorf("%s (accept unsigned %v): %v, want %v naming the key", tc.key, tc.acceptUnsigned, err, tc.want)
		}
	}
	if _, _, err := Read(ctx, Signed{Reader: r}, "c", "1"); err != nil {
		t.Errorf("no Signer: %v", err)
	}
}
