package restore

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Modifiers are restore-time patches in Velero's resource-modifier format
// (restore --resource-modifiers FILE), read as Velero reads them, so that
// a user brings their rules unchanged:
//
//	version: v1
//	resourceModifierRules:
//	- conditions:
//	    groupResource: deployments.apps   # a glob: *.apps, *
//	    resourceNameRegex: "^web-.*$"
//	    namespaces: [shop]
//	    labelSelector: {matchLabels: {app: web}}
//	    matches: [{path: /spec/replicas, value: "3"}]
//	  patches:            # RFC 6902; or mergePatches, or strategicPatches
//	  - operation: replace
//	    path: /spec/replicas
//	    value: "0"
//
// Conditions are judged on the object as the backup holds it (its original
// namespace), before any rule patched it; a rule's patches apply to the
// object as the rules before it left it.
type Modifiers struct {
	Version string         `json:"version"`
	Rules   []ModifierRule `json:"resourceModifierRules"`
}

// ModifierRule is one rule: when its conditions hold, its patches apply.
// Of patches, mergePatches and strategicPatches, the first that is set is
// applied, as Velero does.
type ModifierRule struct {
	Conditions       ModifierConditions `json:"conditions"`
	Patches          []JSONPatchOp      `json:"patches,omitempty"`
	MergePatches     []PatchData        `json:"mergePatches,omitempty"`
	StrategicPatches []PatchData        `json:"strategicPatches,omitempty"`

	groupResource *regexp.Regexp
	name          *regexp.Regexp
	selector      labels.Selector
	matches       jsonpatch.Patch
	patch         jsonpatch.Patch
}

// ModifierConditions select the objects a rule patches.
type ModifierConditions struct {
	GroupResource     string                `json:"groupResource"`
	ResourceNameRegex string                `json:"resourceNameRegex,omitempty"`
	Namespaces        []string              `json:"namespaces,omitempty"`
	LabelSelector     *metav1.LabelSelector `json:"labelSelector,omitempty"`
	Matches           []MatchRule           `json:"matches,omitempty"`
}

// MatchRule holds when the value at Path equals Value (a JSON patch test).
type MatchRule struct {
	Path  string `json:"path"`
	Value string `json:"value,omitempty"`
}

// JSONPatchOp is one RFC 6902 operation; Value is JSON when it reads as
// JSON (a number, true, false, null, an object or array), else a string,
// and a value in double quotes is always a string.
type JSONPatchOp struct {
	Operation string `json:"operation"`
	From      string `json:"from,omitempty"`
	Path      string `json:"path"`
	Value     string `json:"value,omitempty"`
}

// PatchData is a merge or strategic merge patch, in YAML or JSON.
// Velero's documentation spells the field patchData; patchBytes is read too.
type PatchData struct {
	PatchData  string `json:"patchData,omitempty"`
	PatchBytes string `json:"patchBytes,omitempty"`
}

func (p PatchData) data() string {
	if p.PatchData != "" {
		return p.PatchData
	}
	return p.PatchBytes
}

// LoadModifiers reads a resource-modifier file. Every error names the rule
// and the field at fault; a file that loads applies without surprises of
// syntax.
func LoadModifiers(data []byte) (*Modifiers, error) {
	var m Modifiers
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		return nil, fmt.Errorf("resource modifiers: %w", err)
	}
	if m.Version != "v1" {
		return nil, fmt.Errorf("resource modifiers: version %q: want v1", m.Version)
	}
	for i := range m.Rules {
		if err := m.Rules[i].compile(); err != nil {
			return nil, fmt.Errorf("resource modifiers: resourceModifierRules[%d]: %w", i, err)
		}
	}
	return &m, nil
}

func (r *ModifierRule) compile() error {
	c := r.Conditions
	if c.GroupResource == "" {
		return errors.New("conditions.groupResource is required")
	}
	var err error
	if r.groupResource, err = globRegexp(c.GroupResource); err != nil {
		return fmt.Errorf("conditions.groupResource %q: %w", c.GroupResource, err)
	}
	if c.ResourceNameRegex != "" {
		if r.name, err = regexp.Compile(c.ResourceNameRegex); err != nil {
			return fmt.Errorf("conditions.resourceNameRegex %q: %w", c.ResourceNameRegex, err)
		}
	}
	if c.LabelSelector != nil {
		if r.selector, err = metav1.LabelSelectorAsSelector(c.LabelSelector); err != nil {
			return fmt.Errorf("conditions.labelSelector: %w", err)
		}
	}
	if len(c.Matches) > 0 {
		tests := make([]JSONPatchOp, len(c.Matches))
		for i, m := range c.Matches {
			if m.Path == "" {
				return fmt.Errorf("conditions.matches[%d].path is required", i)
			}
			tests[i] = JSONPatchOp{Operation: "test", Path: m.Path, Value: m.Value}
		}
		if r.matches, err = decodeOps(tests); err != nil {
			return fmt.Errorf("conditions.matches: %w", err)
		}
	}
	switch {
	case len(r.Patches) > 0:
		for i, op := range r.Patches {
			switch op.Operation {
			case "add", "remove", "replace", "copy", "move", "test":
			default:
				return fmt.Errorf("patches[%d].operation %q: want add, remove, replace, copy, move or test", i, op.Operation)
			}
		}
		if r.patch, err = decodeOps(r.Patches); err != nil {
			return fmt.Errorf("patches: %w", err)
		}
	case len(r.MergePatches) > 0:
		for i, p := range r.MergePatches {
			if _, err := yaml.YAMLToJSON([]byte(p.data())); err != nil || strings.TrimSpace(p.data()) == "" {
				return fmt.Errorf("mergePatches[%d].patchData is not a YAML or JSON document", i)
			}
		}
	case len(r.StrategicPatches) > 0:
		for i, p := range r.StrategicPatches {
			if _, err := yaml.YAMLToJSON([]byte(p.data())); err != nil || strings.TrimSpace(p.data()) == "" {
				return fmt.Errorf("strategicPatches[%d].patchData is not a YAML or JSON document", i)
			}
		}
	default:
		return errors.New("no patches, mergePatches or strategicPatches")
	}
	return nil
}

// decodeOps builds an RFC 6902 patch from ops, each value read as Velero
// reads it.
func decodeOps(ops []JSONPatchOp) (jsonpatch.Patch, error) {
	out := make([]map[string]any, len(ops))
	for i, op := range ops {
		o := map[string]any{"op": op.Operation, "path": op.Path}
		if op.From != "" {
			o["from"] = op.From
		}
		switch op.Operation {
		case "add", "replace", "test":
			v, err := patchValue(op.Value)
			if err != nil {
				return nil, fmt.Errorf("[%d].value %q: %w", i, op.Value, err)
			}
			o["value"] = v
		}
		out[i] = o
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return jsonpatch.DecodePatch(b)
}

// patchValue reads a value as Velero does: in double quotes, the string
// inside; null, true, false, a number, an object or an array, as JSON;
// anything else, the string itself.
func patchValue(v string) (any, error) {
	if len(v) >= 2 && strings.HasPrefix(v, `"`) && strings.HasSuffix(v, `"`) {
		return v[1 : len(v)-1], nil
	}
	switch strings.ToLower(v) {
	case "null":
		return nil, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	if strings.HasPrefix(v, "{") || strings.HasPrefix(v, "[") {
		var out any
		if err := json.Unmarshal([]byte(v), &out); err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		return out, nil
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return json.Number(v), nil
	}
	return v, nil
}

// globRegexp is a groupResource glob as Velero matches it, with "." as the
// separator: * matches within a segment, ** across them, ? one character,
// {a,b} either.
func globRegexp(glob string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	depth := 0
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; c {
		case '*':
			if i+1 < len(glob) && glob[i+1] == '*' {
				b.WriteString(".*")
				i++
			} else {
				b.WriteString(`[^.]*`)
			}
		case '?':
			b.WriteString(`[^.]`)
		case '{':
			depth++
			b.WriteString("(?:")
		case '}':
			if depth == 0 {
				return nil, errors.New("unbalanced }")
			}
			depth--
			b.WriteString(")")
		case ',':
			if depth > 0 {
				b.WriteString("|")
			} else {
				b.WriteString(",")
			}
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	if depth != 0 {
		return nil, errors.New("unbalanced {")
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// Apply patches obj, whose type is the layout's segment (configmaps,
// deployments, ingresses.networking.k8s.io), with every rule whose
// conditions hold, and reports how many applied. Rules name the type as
// Velero does, resource.group (deployments.apps), whatever the layout's
// spelling. An error names the rule that failed; obj is then unchanged.
// A nil Modifiers applies nothing.
func (m *Modifiers) Apply(obj *unstructured.Unstructured, segment string) (int, error) {
	if m == nil || len(m.Rules) == 0 {
		return 0, nil
	}
	groupResource := segment
	if g := obj.GroupVersionKind().Group; g != "" && !strings.HasSuffix(segment, "."+g) {
		groupResource = segment + "." + g
	}
	origin := obj.DeepCopy()
	work := obj.DeepCopy()
	applied := 0
	for i := range m.Rules {
		r := &m.Rules[i]
		ok, err := r.holds(origin, groupResource)
		if err != nil {
			return 0, fmt.Errorf("resource modifier rule %d: %w", i, err)
		}
		if !ok {
			continue
		}
		if err := r.apply(work); err != nil {
			return 0, fmt.Errorf("resource modifier rule %d: %w", i, err)
		}
		applied++
	}
	obj.Object = work.Object
	return applied, nil
}

func (r *ModifierRule) holds(obj *unstructured.Unstructured, groupResource string) (bool, error) {
	if ns := obj.GetNamespace(); ns != "" && len(r.Conditions.Namespaces) > 0 && !includes(r.Conditions.Namespaces, ns) {
		return false, nil
	}
	if !r.groupResource.MatchString(groupResource) {
		return false, nil
	}
	if r.name != nil && !r.name.MatchString(obj.GetName()) {
		return false, nil
	}
	if r.selector != nil && !r.selector.Matches(labels.Set(obj.GetLabels())) {
		return false, nil
	}
	if r.matches == nil {
		return true, nil
	}
	doc, err := obj.MarshalJSON()
	if err != nil {
		return false, err
	}
	if _, err := r.matches.Apply(doc); err != nil {
		if errors.Is(err, jsonpatch.ErrTestFailed) || errors.Is(err, jsonpatch.ErrMissing) {
			return false, nil
		}
		return false, fmt.Errorf("conditions.matches: %w", err)
	}
	return true, nil
}

// includes is Velero's namespace inclusion: the names, or * for all.
func includes(names []string, ns string) bool {
	for _, n := range names {
		if n == ns || n == "*" {
			return true
		}
	}
	return false
}

func (r *ModifierRule) apply(obj *unstructured.Unstructured) error {
	doc, err := obj.MarshalJSON()
	if err != nil {
		return err
	}
	switch {
	case r.patch != nil:
		out, err := r.patch.Apply(doc)
		if errors.Is(err, jsonpatch.ErrTestFailed) {
			return nil // a test operation that fails leaves the object as it is
		}
		if err != nil {
			return fmt.Errorf("patches: %w", err)
		}
		doc = out
	case len(r.MergePatches) > 0:
		for i, p := range r.MergePatches {
			patch, _ := yaml.YAMLToJSON([]byte(p.data()))
			if doc, err = jsonpatch.MergePatch(doc, patch); err != nil {
				return fmt.Errorf("mergePatches[%d]: %w", i, err)
			}
		}
	default:
		ref, err := scheme.Scheme.New(obj.GroupVersionKind())
		if err != nil {
			return fmt.Errorf("strategicPatches: %s has no built-in schema to merge by (use mergePatches for custom resources): %w", obj.GroupVersionKind(), err)
		}
		for i, p := range r.StrategicPatches {
			patch, _ := yaml.YAMLToJSON([]byte(p.data()))
			if doc, err = strategicpatch.StrategicMergePatch(doc, patch, ref); err != nil {
				return fmt.Errorf("strategicPatches[%d]: %w", i, err)
			}
		}
	}
	var patched unstructured.Unstructured
	if err := patched.UnmarshalJSON(doc); err != nil {
		return fmt.Errorf("the patched object: %w", err)
	}
	obj.Object = patched.Object
	return nil
}
