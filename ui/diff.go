package ui

import (
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// diffLine is one line of a unified diff: Kind is "ctx", "add", "del" or
// "gap" (unchanged lines left out); Old and New are line numbers (0: none).
type diffLine struct {
	Kind     string
	Old, New int
	Text     string
}

// diffRow is one row of a side-by-side diff.
type diffRow struct {
	Gap         bool
	Left, Right diffCell
}

type diffCell struct {
	Kind string // "ctx", "add", "del" or "" (an empty cell)
	N    int
	Text string
}

// diffView is a diff between two texts in both layouts.
type diffView struct {
	Unified []diffLine
	Split   []diffRow
	Added   int
	Removed int
}

// contextLines is how many unchanged lines surround each change.
const contextLines = 3

// diffTexts compares a and b line by line.
func diffTexts(a, b string) diffView {
	al, bl := lines(a), lines(b)
	var v diffView
	groups := difflib.NewMatcher(al, bl).GetGroupedOpCodes(contextLines)
	for gi, group := range groups {
		if gi > 0 || (len(group) > 0 && (group[0].I1 > 0 || group[0].J1 > 0)) {
			v.Unified = append(v.Unified, diffLine{Kind: "gap"})
			v.Split = append(v.Split, diffRow{Gap: true})
		}
		for _, op := range group {
			switch op.Tag {
			case 'e':
				for i, j := op.I1, op.J1; i < op.I2; i, j = i+1, j+1 {
					v.Unified = append(v.Unified, diffLine{Kind: "ctx", Old: i + 1, New: j + 1, Text: al[i]})
					v.Split = append(v.Split, diffRow{Left: diffCell{"ctx", i + 1, al[i]}, Right: diffCell{"ctx", j + 1, bl[j]}})
				}
			default: // r, d, i
				for i := op.I1; i < op.I2; i++ {
					v.Unified = append(v.Unified, diffLine{Kind: "del", Old: i + 1, Text: al[i]})
					v.Removed++
				}
				for j := op.J1; j < op.J2; j++ {
					v.Unified = append(v.Unified, diffLine{Kind: "add", New: j + 1, Text: bl[j]})
					v.Added++
				}
				for k := 0; k < max(op.I2-op.I1, op.J2-op.J1); k++ {
					var row diffRow
					if i := op.I1 + k; i < op.I2 {
						row.Left = diffCell{"del", i + 1, al[i]}
					}
					if j := op.J1 + k; j < op.J2 {
						row.Right = diffCell{"add", j + 1, bl[j]}
					}
					v.Split = append(v.Split, row)
				}
			}
		}
	}
	return v
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
