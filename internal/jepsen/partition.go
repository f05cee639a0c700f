package jepsen

import (
	"github.com/anishathalye/porcupine"
)

// partition groups the operations by the resources that transactions
// join: an operation goes with every other operation on its resource, a
// commit with those on the resources of its entries.
func partition(history []porcupine.Operation) [][]porcupine.Operation {
	parent := map[string]string{}
	var find func(string) string
	find = func(id string) string {
		p, ok := parent[id]
		if !ok {
			parent[id] = id
			return id
		}
		if p == id {
			return id
		}
		root := find(p)
		parent[id] = root
		return root
	}
	key := func(in Input) string {
		if in.Kind == KindTxEnd && len(in.Entries) > 0 {
			return in.Entries[0].ID
		}
		return in.ID
	}
	for _, op := range history {
		in := op.Input.(Input)
		root := find(key(in))
		for _, e := range in.Entries {
			if r := find(e.ID); r != root {
				parent[r] = root
			}
		}
	}
	byRoot := map[string]int{}
	var out [][]porcupine.Operation
	for _, op := range history {
		root := find(key(op.Input.(Input)))
		i, seen := byRoot[root]
		if !seen {
			i = len(out)
			byRoot[root] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], op)
	}
	return out
}
