package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
)

// side is one document of a diff.
type side struct {
	Label   string
	Version object.Version
	Meta    object.Meta
	Live    bool
	Missing bool // deleted at that version, or absent from the cluster
}

// objectData is one object's page.
type objectData struct {
	Cluster  string
	Key      object.Key
	Versions []versionRow
	Old, New side
	Diff     diffView
	Split    bool
	Error    string
	LiveHref string // the diff against the live object, when the view reaches the cluster
	Restore  string
	DiffCmd  string
	Timeline *timelineData
}

type versionRow struct {
	object.Version
	Href    string // this version against the one before it
	Current bool   // one of the two compared
}

func (s *Server) object(w http.ResponseWriter, r *http.Request) {
	cluster, ns, seg, name := r.PathValue("cluster"), r.PathValue("ns"), r.PathValue("segment"), r.PathValue("name")
	if !validName(cluster) || !validName(ns) || !validName(seg) || !validName(name) {
		s.fail(w, http.StatusNotFound, errors.New("no such object"))
		return
	}
	k := object.Key{Segment: seg, Namespace: ns, Name: name}
	if ns == object.ClusterScope {
		k.Namespace = ""
	}
	key := s.layout(cluster).Root() + ns + "/" + seg + "/" + name + ".yaml"
	versions, err := restore.History(r.Context(), s.opts.Reader, key, time.Time{}, time.Time{})
	if err != nil {
		s.fail(w, http.StatusBadGateway, err)
		return
	}
	if len(versions) == 0 {
		s.fail(w, http.StatusNotFound, fmt.Errorf("%s: no version in the backup", key))
		return
	}
	q := r.URL.Query()
	d := objectData{Cluster: cluster, Key: k, Split: q.Get("view") == "split"}
	base := objectPath(cluster, k)
	// Versions come newest first: each is compared with the one before it.
	newIdx, oldIdx := 0, 1
	for i, v := range versions {
		if v.ID == q.Get("b") {
			newIdx, oldIdx = i, i+1
		}
	}
	for i, v := range versions {
		if v.ID == q.Get("a") && q.Get("a") != "" {
			oldIdx = i
		}
	}
	live := q.Get("live") == "1" && s.opts.Live != nil
	for i, v := range versions {
		href := base + "?" + url.Values{"b": {v.ID}}.Encode()
		d.Versions = append(d.Versions, versionRow{Version: v, Href: href, Current: i == newIdx || (!live && i == oldIdx)})
	}
	unread := s.compare(r.Context(), &d, versions, newIdx, oldIdx, live)
	if s.opts.Live != nil {
		d.LiveHref = base + "?" + url.Values{"b": {versions[newIdx].ID}, "live": {"1"}}.Encode()
	}
	scope := "-n " + k.Namespace
	if k.Namespace == "" {
		scope = "-A"
	}
	at := versions[newIdx].Time.UTC().Format(time.RFC3339Nano)
	d.Restore = fmt.Sprintf("%s restore %s/%s %s --backup-cluster %s --at %s", s.opts.Command, seg, name, scope, cluster, at)
	d.DiffCmd = fmt.Sprintf("%s diff %s/%s %s --backup-cluster %s --at %s --details", s.opts.Command, seg, name, scope, cluster, at)
	if unread {
		// A version that cannot be read, or fails its integrity check, is
		// never offered to restore.
		d.Restore, d.DiffCmd = "", ""
	}
	if d.Timeline, err = s.timelineOf(r.Context(), cluster, ns+"/"+seg+"/"+name+".yaml", q.Get("range"), base); err != nil {
		s.fail(w, http.StatusBadGateway, err)
		return
	}
	crumbs := []crumb{{"Clusters", "/"}, {cluster, "/c/" + cluster + "/"}}
	if k.Namespace != "" {
		crumbs = append(crumbs, crumb{k.Namespace, "/c/" + cluster + "/ns/" + k.Namespace + "/"})
	}
	crumbs = append(crumbs, crumb{seg + "/" + name, ""})
	s.render(w, "object", page{Title: seg + "/" + name, Crumbs: crumbs, Data: d})
}

// compare reads the two sides of the diff (versions[newIdx] against
// versions[oldIdx], or against the live object) into d, masked. It
// reports whether versions[newIdx] could not be read: a store error, or a
// document that fails its integrity check.
func (s *Server) compare(ctx context.Context, d *objectData, versions []object.Version, newIdx, oldIdx int, live bool) (unread bool) {
	read := func(label string, v object.Version) (side, string, error) {
		sd := side{Label: label, Version: v, Missing: v.DeleteMarker}
		if v.DeleteMarker {
			return sd, "", nil
		}
		body, meta, err := s.opts.Reader.Get(ctx, v.Key, v.ID)
		sd.Meta = meta
		return sd, string(body), err
	}
	var oldText, newText string
	var err error
	d.New, newText, err = read("version", versions[newIdx])
	unread = err != nil
	if err == nil {
		switch {
		case live:
			body, ok, lerr := s.opts.Live(ctx, d.Cluster, d.Key)
			d.Old = side{Label: "live", Live: true, Missing: !ok}
			oldText, err = string(body), lerr
		case oldIdx < len(versions):
			d.Old, oldText, err = read("version", versions[oldIdx])
		default:
			d.Old = side{Label: "nothing before", Missing: true}
		}
	}
	if err != nil {
		d.Error = err.Error()
		return unread
	}
	oldText, newText = restore.MaskedTexts([]byte(oldText), []byte(newText))
	d.Diff = diffTexts(oldText, newText)
	return false
}
