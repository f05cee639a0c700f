package jepsen

import (
	"fmt"
	"strings"
)

// Describe renders one operation for reports and the visualization.
func Describe(in Input, out Output) string {
	var b strings.Builder
	if in.Kind == KindTxEnd {
		fmt.Fprintf(&b, "t%d %s(", in.Tx, in.Kind)
		for i, e := range in.Entries {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%s:w%d", e.ID, e.Write)
		}
		b.WriteString(")")
	} else {
		fmt.Fprintf(&b, "%s %s", in.ID, in.Kind)
	}
	switch in.Kind {
	case KindVRead:
		fmt.Fprintf(&b, "(v%d)", in.Version)
	case KindHistory:
		fmt.Fprintf(&b, "(_count=%d)", in.Count)
	case KindPut, KindTxPut:
		b.WriteString("(")
		if in.Kind == KindTxPut {
			fmt.Fprintf(&b, "t%d ", in.Tx)
		}
		fmt.Fprintf(&b, "w%d %s", in.Write, in.Marker)
		if in.IfMatch > 0 {
			fmt.Fprintf(&b, ` If-Match W/"%d"`, in.IfMatch)
		}
		b.WriteString(")")
	case KindDelete:
		fmt.Fprintf(&b, "(w%d)", in.Write)
	case KindComplete:
		fmt.Fprintf(&b, "(w%d", in.Write)
		if in.Version > 0 {
			fmt.Fprintf(&b, " v%d", in.Version)
		}
		b.WriteString(")")
	}
	b.WriteString(" -> ")
	if out.Unknown {
		b.WriteString("unknown")
		return b.String()
	}
	fmt.Fprintf(&b, "%d", out.Status)
	if out.Version > 0 {
		fmt.Fprintf(&b, " v%d", out.Version)
	}
	if out.Marker != "" {
		fmt.Fprintf(&b, " %s", out.Marker)
	}
	if len(out.Entries) > 0 {
		parts := make([]string, len(out.Entries))
		for i, e := range out.Entries {
			parts[i] = fmt.Sprintf("v%d:%s", e.Version, entryText(e.Marker, e.Deleted))
		}
		fmt.Fprintf(&b, " [%s]", strings.Join(parts, " "))
	}
	return b.String()
}

// DescribeState renders a state: per resource its versions, current
// marked with "*", a claimed version beyond current with "?", a hidden
// (transaction, not committed) version with "~".
func DescribeState(s State) string {
	if len(s.res) == 0 {
		return "(none)"
	}
	var out []string
	for _, n := range s.res {
		out = append(out, n.id+": "+describeRes(n.r))
	}
	return strings.Join(out, "; ")
}

func describeRes(r resState) string {
	if r.n == 0 {
		return "(none)"
	}
	parts := make([]string, r.n)
	nd := r.log
	for v := r.n; v >= 1; v-- {
		mark := ""
		switch {
		case v == r.cur:
			mark = "*"
		case v > r.cur:
			mark = "?"
		}
		if nd.v.hidden {
			mark += "~"
		}
		who := fmt.Sprintf("w%d", nd.v.write)
		if nd.v.tx > 0 {
			who = fmt.Sprintf("t%d w%d", nd.v.tx, nd.v.write)
		}
		parts[v-1] = fmt.Sprintf("v%d%s:%s(%s)", v, mark, entryText(nd.v.marker, nd.v.deleted), who)
		nd = nd.prev
	}
	return strings.Join(parts, " ")
}

func entryText(marker string, deleted bool) string {
	if deleted {
		return "deleted"
	}
	return marker
}
