package jepsen

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// named is the state of the resource id.
type named struct {
	id string
	r  resState
}

// State is the model state of the resources of one partition, by id
// (sorted); a resource that is not listed has no version.
type State struct {
	res []named
}

func (s State) get(id string) resState {
	for _, n := range s.res {
		if n.id == id {
			return n.r
		}
	}
	return resState{}
}

// with returns s with resource id in state r (s is not modified).
func (s State) with(id string, r resState) State {
	i, found := slices.BinarySearchFunc(s.res, id, func(n named, id string) int { return strings.Compare(n.id, id) })
	res := make([]named, len(s.res), len(s.res)+1)
	copy(res, s.res)
	if found {
		res[i].r = r
	} else {
		res = slices.Insert(res, i, named{id: id, r: r})
	}
	return State{res: res}
}

func equalState(a, b State) bool {
	if len(a.res) != len(b.res) {
		return false
	}
	for i := range a.res {
		if a.res[i].id != b.res[i].id || !equalRes(a.res[i].r, b.res[i].r) {
			return false
		}
	}
	return true
}

// hashState is consistent with equalState: it covers the ids, the
// positions and the newest version of each resource.
func hashState(s State) uint64 {
	h := fnv.New64a()
	for _, n := range s.res {
		fmt.Fprintf(h, "%s/%d/%d", n.id, n.r.cur, n.r.n)
		if n.r.log != nil {
			fmt.Fprintf(h, "/%d/%t;", n.r.log.v.write, n.r.log.v.hidden)
		}
	}
	return h.Sum64()
}
