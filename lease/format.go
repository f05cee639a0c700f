package lease

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
)

// timeFormat is how expiries are written: RFC 3339, UTC, milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// jsonSpace is the whitespace JSON allows around a value.
const jsonSpace = " \t\r\n"

// checkState returns the caller's state without surrounding whitespace,
// or JSON null for an empty one. It must be exactly one JSON value.
func checkState(state []byte) (json.RawMessage, error) {
	st := bytes.Trim(state, jsonSpace)
	if len(st) == 0 {
		return json.RawMessage("null"), nil
	}
	if !json.Valid(st) {
		return nil, fmt.Errorf("%w: the state is not one JSON value", ErrInvalid)
	}
	return json.RawMessage(st), nil
}

// encode writes the document by hand rather than with json.Marshal, which
// would compact and HTML-escape the caller's state.
func encode(l Lease, state json.RawMessage) []byte {
	buf := make([]byte, 0, 96+len(l.Owner)+len(state))
	buf = append(buf, `{"lease":{`...)
	if !l.Released() {
		owner, _ := json.Marshal(l.Owner) // a string always marshals
		buf = append(buf, `"owner":`...)
		buf = append(buf, owner...)
		buf = append(buf, `,"expires":"`...)
		buf = l.Expires.UTC().AppendFormat(buf, timeFormat)
		buf = append(buf, `",`...)
	}
	buf = append(buf, `"token":`...)
	buf = strconv.AppendInt(buf, l.Token, 10)
	buf = append(buf, `},"state":`...)
	buf = append(buf, state...)
	buf = append(buf, '}')
	return buf
}

type wireLease struct {
	Owner   string `json:"owner"`
	Expires string `json:"expires"`
	Token   int64  `json:"token"`
}

type wireDoc struct {
	Lease *wireLease      `json:"lease"`
	State json.RawMessage `json:"state"`
}

// decode parses a document. Unknown fields are refused rather than
// dropped by the next write.
func decode(data []byte) (Doc, error) {
	var w wireDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Doc{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Doc{}, fmt.Errorf("%w: data after the document", ErrCorrupt)
	}
	if w.Lease == nil || w.State == nil {
		return Doc{}, fmt.Errorf("%w: \"lease\" and \"state\" are required", ErrCorrupt)
	}
	if w.Lease.Token < 1 {
		return Doc{}, fmt.Errorf("%w: token %d is not positive", ErrCorrupt, w.Lease.Token)
	}
	l := Lease{Owner: w.Lease.Owner, Token: w.Lease.Token}
	switch {
	case l.Owner == "" && w.Lease.Expires != "":
		return Doc{}, fmt.Errorf("%w: an expiry without an owner", ErrCorrupt)
	case l.Owner != "":
		t, err := time.Parse(time.RFC3339Nano, w.Lease.Expires)
		if err != nil {
			return Doc{}, fmt.Errorf("%w: expires: %w", ErrCorrupt, err)
		}
		l.Expires = t.UTC().Truncate(time.Millisecond)
	}
	return Doc{Lease: l, State: w.State}, nil
}
