package lease

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary objects to the document parser: it must
// refuse them with ErrCorrupt or accept them, and what it accepts must
// survive a write and a read unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"lease":{"owner":"a","expires":"2026-01-02T03:04:05.678Z","token":1},"state":{"x":1.50}}`))
	f.Add([]byte(`{"lease":{"token":3},"state":null}`))
	f.Add([]byte(`{"lease":{"owner":"\u00e9","expires":"2026-01-02T03:04:05Z","token":9223372036854775807},"state":[1e400]}`))
	f.Add([]byte(`{"lease":{"token":1},"state":1} x`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decode(data)
		if err != nil {
			return
		}
		again, err := decode(encode(d.Lease, d.State))
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", encode(d.Lease, d.State), err)
		}
		if again.Lease != d.Lease || !bytes.Equal(again.State, d.State) {
			t.Fatalf("round trip changed %+v %q into %+v %q", d.Lease, d.State, again.Lease, again.State)
		}
	})
}
