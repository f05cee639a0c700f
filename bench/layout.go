package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// Building a history of N versions through fhirstore takes N sequential
// updates of 5 requests each: minutes for 100,000. writeHistory writes
// the same objects directly, in parallel, in the exact object layout of
// docs/object-layout.md (the public contract), so large histories cost
// 3 unconditional PUTs per version and no reads. The newest versions are
// then written by fhirstore itself on top, which proves the layout is
// readable (an update decodes current.json), and the bench tests run
// fhirstore's Verify over a built history. The keys come from package
// layout; the object bodies are written here, and Verify checks them.

const timeLayout = "2006-01-02T15:04:05.000Z"

func jsonString(s string) string {
	q, _ := json.Marshal(s) // cannot fail for a string
	return string(q)
}

// envelope renders a version object (method PUT except version 1, POST).
func envelope(tenant, typ, id string, v int, content []byte, created, modified time.Time) []byte {
	method := "PUT"
	if v == 1 {
		method = "POST"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"resource_type":%s,"id":%s,"version_id":%s,"tenant_id":%s,"fhir_version":%s,"content":`,
		jsonString(typ), jsonString(id), jsonString(strconv.Itoa(v)), jsonString(tenant), jsonString(fhir.Version))
	b.Write(content)
	fmt.Fprintf(&b, `,"created_at":%s,"last_modified":%s,"deleted_at":null,"etag":%s,"method":%s}`+"\n",
		jsonString(created.UTC().Format(timeLayout)), jsonString(modified.UTC().Format(timeLayout)),
		jsonString(`W/"`+strconv.Itoa(v)+`"`), jsonString(method))
	return b.Bytes()
}

func event(typ, id string, v int, modified time.Time) []byte {
	method := "PUT"
	if v == 1 {
		method = "POST"
	}
	return fmt.Appendf(nil, `{"resource_type":%s,"id":%s,"version_id":%s,"timestamp":%s,"method":%s,"deleted":false}`+"\n",
		jsonString(typ), jsonString(id), jsonString(strconv.Itoa(v)), jsonString(modified.UTC().Format(timeLayout)), jsonString(method))
}

// writeHistory writes versions 1..n of typ/id below the tenant base b,
// version v last modified at first + v-1 milliseconds (one event per
// millisecond), each with its version object and both events, and then
// current.json holding version n. body is the resource; its id and meta
// are set per version. par bounds the parallel requests.
func writeHistory(ctx context.Context, b storage.Bucket, tenant, typ, id string, n int, first time.Time, body []byte, par int) error {
	first = first.Truncate(time.Millisecond)
	var (
		wg      sync.WaitGroup
		sem     = make(chan struct{}, par)
		mu      sync.Mutex
		firstEr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error) {
		mu.Lock()
		if firstEr == nil {
			firstEr = err
			cancel()
		}
		mu.Unlock()
	}
	put := func(key string, data []byte) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			_, err := b.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{ContentType: "application/json", Size: int64(len(data))})
			if err != nil {
				fail(err)
			}
		})
	}
	// Three passes, each in ascending key order (system events, type
	// events, version objects by their decimal name): a store that keeps
	// its keys sorted (memstore) then appends instead of inserting in the
	// middle, and an S3 server sees the same requests in any order.
	mod := func(v int) time.Time { return first.Add(time.Duration(v-1) * time.Millisecond) }
	for v := 1; v <= n && ctx.Err() == nil; v++ {
		put(layout.SystemEventKey(tenant, typ, id, v, mod(v)), event(typ, id, v, mod(v)))
	}
	for v := 1; v <= n && ctx.Err() == nil; v++ {
		put(layout.TypeEventKey(tenant, typ, id, v, mod(v)), event(typ, id, v, mod(v)))
	}
	versions := make([]string, n)
	for v := 1; v <= n; v++ {
		versions[v-1] = strconv.Itoa(v)
	}
	slices.Sort(versions)
	var last []byte
	for _, vs := range versions {
		if ctx.Err() != nil {
			break
		}
		v, _ := strconv.Atoi(vs)
		content, err := fhir.SetMeta(body, id, vs, mod(v))
		if err != nil {
			fail(err)
			break
		}
		env := envelope(tenant, typ, id, v, content, first, mod(v))
		put(layout.VersionKey(typ, id, v), env)
		if v == n {
			last = env
		}
	}
	wg.Wait()
	if firstEr != nil {
		return firstEr
	}
	// current.json last: a reader never sees a pointer to a missing version.
	_, err := b.Put(ctx, layout.CurrentKey(typ, id), bytes.NewReader(last),
		storage.PutOptions{ContentType: "application/json", Size: int64(len(last))})
	return err
}
