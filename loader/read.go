package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"fhirbucket/fhir"
)

// readBundleFile reads a Bundle file whole and emits it as one job, as it
// is, when it is a batch or transaction; anything else is an error for
// the file and nothing is sent.
func (l *Loader) readBundleFile(f *fileState, emit func(job) bool) error {
	rc, err := f.in.open()
	if err != nil {
		return err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return err
	}
	b, err := fhir.ParseBundle(data)
	if err != nil {
		return err
	}
	if b.Type != fhir.BundleBatch && b.Type != fhir.BundleTransaction {
		return fmt.Errorf("not sent: only batch and transaction Bundles can be loaded, and Bundle.type is %q", b.Type)
	}
	j := job{body: data, kind: b.Type, entries: make([]entryRef, len(b.Entry))}
	for i, e := range b.Entry {
		if e.Request != nil {
			j.entries[i].request = e.Request.Method + " " + e.Request.URL
		}
	}
	emit(j)
	return nil
}

// resourceHead is what an NDJSON line must say of itself.
type resourceHead struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
}

// readNDJSON streams an NDJSON file into batch Bundles of BatchSize
// entries: a line with an id becomes PUT Type/id, one without POST Type.
// A line that is not a resource with a known type and valid id is a
// failure of that line, and the others go on. At most one Bundle is held
// here while the workers are busy.
func (l *Loader) readNDJSON(f *fileState, emit func(job) bool) error {
	rc, err := f.in.open()
	if err != nil {
		return err
	}
	defer rc.Close()
	r := fhir.NewNDJSONReader(rc, 0)
	var (
		buf     bytes.Buffer
		entries []entryRef
	)
	flush := func() bool {
		if len(entries) == 0 {
			return true
		}
		buf.WriteString("]}")
		j := job{body: bytes.Clone(buf.Bytes()), kind: fhir.BundleBatch, entries: entries}
		buf.Reset()
		entries = nil
		return emit(j)
	}
	refuse := func(line int, msg string) {
		l.record(f, false, 1, []Failure{{File: f.in.Path, Entry: -1, Line: line, Entries: 1, Diagnostics: msg}})
	}
	for {
		line, n, err := r.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, fhir.ErrTooLarge) {
			refuse(n, err.Error())
			continue
		}
		if err != nil {
			flush()
			return err
		}
		var h resourceHead
		if err := json.Unmarshal(line, &h); err != nil {
			refuse(n, "not a FHIR resource: "+err.Error())
			continue
		}
		switch {
		case h.ResourceType == "":
			refuse(n, "not a FHIR resource: resourceType is missing")
			continue
		case !fhir.IsResourceType(h.ResourceType):
			refuse(n, fmt.Sprintf("resourceType %q is not an R4 resource type", h.ResourceType))
			continue
		case h.ID != "" && !fhir.ValidID(h.ID):
			refuse(n, fmt.Sprintf("id %q is not a valid FHIR id", h.ID))
			continue
		}
		ref := entryRef{line: n, request: "POST " + h.ResourceType}
		if h.ID != "" {
			ref.request = "PUT " + h.ResourceType + "/" + h.ID
		}
		if len(entries) == 0 {
			buf.WriteString(`{"resourceType":"Bundle","type":"batch","entry":[`)
		} else {
			buf.WriteByte(',')
		}
		method, url, _ := strings.Cut(ref.request, " ")
		buf.WriteString(`{"resource":`)
		buf.Write(line)
		buf.WriteString(`,"request":{"method":"` + method + `","url":`)
		buf.WriteString(strconv.Quote(url)) // type and id are plain ASCII: Quote is JSON here
		buf.WriteString(`}}`)
		entries = append(entries, ref)
		if len(entries) == l.cfg.BatchSize && !flush() {
			return nil
		}
	}
	flush()
	return nil
}
