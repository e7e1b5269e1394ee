package object

import (
	"fmt"
	"slices"
	"strings"
)

// Identity is the content of a cluster's identity marker: the cluster that
// owns its prefix (the UID of its kube-system namespace), and the clusters
// whose prefix it adopted after a rebuild (cluster-backup adopt). Keys the
// adopted clusters wrote are the owner's own: it may write over and delete
// them.
type Identity struct {
	Cluster string
	UID     string
	Adopted []string
}

// Marshal is the marker's body.
func (id Identity) Marshal() []byte {
	var b strings.Builder
	b.WriteString("# Written by cluster-backup: the cluster that owns this prefix.\n")
	fmt.Fprintf(&b, "cluster: %s\nkubeSystemUID: %s\n", id.Cluster, id.UID)
	if len(id.Adopted) > 0 {
		b.WriteString("# The clusters this one took the prefix over from: their keys are its own.\nadopted:\n")
		for _, uid := range id.Adopted {
			fmt.Fprintf(&b, "- %s\n", uid)
		}
	}
	return []byte(b.String())
}

// ParseIdentity reads a marker's body, as Marshal writes it.
func ParseIdentity(body []byte) Identity {
	var id Identity
	inAdopted := false
	for _, line := range strings.Split(string(body), "\n") {
		switch {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "- ") && inAdopted:
			id.Adopted = append(id.Adopted, strings.TrimSpace(line[2:]))
		default:
			k, v, _ := strings.Cut(line, ":")
			inAdopted = k == "adopted"
			switch k {
			case "cluster":
				id.Cluster = strings.TrimSpace(v)
			case "kubeSystemUID":
				id.UID = strings.TrimSpace(v)
			}
		}
	}
	return id
}

// Owns reports whether a key stored with clusterUID belongs to the owner:
// written by it, by a cluster it adopted, or by a version that recorded no
// cluster.
func (id Identity) Owns(clusterUID string) bool {
	return clusterUID == "" || id.UID == "" || clusterUID == id.UID || slices.Contains(id.Adopted, clusterUID)
}

// Adopt is the identity of the cluster uid taking the prefix over from the
// owner id: the owner and everything it had adopted become adopted.
func (id Identity) Adopt(cluster, uid string) Identity {
	out := Identity{Cluster: cluster, UID: uid}
	for _, prev := range append(slices.Clone(id.Adopted), id.UID) {
		if prev != "" && prev != uid && !slices.Contains(out.Adopted, prev) {
			out.Adopted = append(out.Adopted, prev)
		}
	}
	return out
}
