package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"k8s.io/client-go/util/jsonpath"
	"sigs.k8s.io/yaml"
)

// printList prints items as -o asks, the way kubectl's printers do: json
// and yaml as a list ({"items": [...]}), name one per line, table and
// wide through table, jsonpath=TEMPLATE over the list, custom-columns=
// HEADER:.field,... one row per item.
func printList[T any](w io.Writer, format string, items []T, name func(T) string, table func(w io.Writer, wide bool)) error {
	kind, arg, _ := strings.Cut(format, "=")
	switch kind {
	case "table", "", "wide":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw, kind == "wide")
		return tw.Flush()
	case "name":
		for _, it := range items {
			fmt.Fprintln(w, name(it))
		}
		return nil
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(listOf(items))
	case "yaml":
		out, err := yaml.Marshal(listOf(items))
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	case "jsonpath":
		data, err := generic(listOf(items))
		if err != nil {
			return err
		}
		jp, err := parseJSONPath("jsonpath", arg)
		if err != nil {
			return err
		}
		if err := jp.Execute(w, data); err != nil {
			return usagef("-o jsonpath=%s: %v", arg, err)
		}
		fmt.Fprintln(w)
		return nil
	case "custom-columns":
		return printColumns(w, arg, items)
	}
	return usagef("invalid -o %q: want table, wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=HEADER:FIELD,...", format)
}

// list is what json, yaml and jsonpath print: a kubectl-style list.
type list[T any] struct {
	Items []T `json:"items"`
}

func listOf[T any](items []T) list[T] {
	if items == nil {
		items = []T{}
	}
	return list[T]{Items: items}
}

// printColumns prints custom-columns=NAME:.name,NS:.namespace: one
// column per HEADER:FIELD, FIELD a JSONPath into one item.
func printColumns[T any](w io.Writer, spec string, items []T) error {
	if spec == "" {
		return usagef("-o custom-columns= needs HEADER:FIELD,... (NAME:.name,TIME:.time)")
	}
	var headers []string
	var paths []*jsonpath.JSONPath
	for _, col := range strings.Split(spec, ",") {
		header, field, ok := strings.Cut(col, ":")
		if !ok || header == "" || field == "" {
			return usagef("invalid -o custom-columns column %q: want HEADER:FIELD", col)
		}
		if !strings.HasPrefix(field, "{") {
			field = "{" + field + "}"
		}
		jp, err := parseJSONPath("custom-columns", field)
		if err != nil {
			return err
		}
		headers, paths = append(headers, header), append(paths, jp)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, it := range items {
		data, err := generic(it)
		if err != nil {
			return err
		}
		cells := make([]string, len(paths))
		for i, jp := range paths {
			var b bytes.Buffer
			if err := jp.Execute(&b, data); err != nil || b.Len() == 0 {
				cells[i] = "<none>"
				continue
			}
			cells[i] = b.String()
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func parseJSONPath(kind, template string) (*jsonpath.JSONPath, error) {
	jp := jsonpath.New(kind).AllowMissingKeys(true)
	if err := jp.Parse(template); err != nil {
		return nil, usagef("invalid -o %s=%s: %v", kind, template, err)
	}
	return jp, nil
}

// generic is v as JSONPath reads it: maps, slices and scalars.
func generic(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(raw, &out)
}
