package server

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"fhirbucket/internal/s3test"
	"fhirbucket/storage"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// interactionCosts runs one of each interaction and returns the storage
// requests each made, as counted by c.
func interactionCosts(t *testing.T, e *env, counts func() storage.Counts) []costRow {
	t.Helper()
	// Some history to page over.
	for i := range 5 {
		mustStatus(t, "seed", e.do("PUT", fmt.Sprintf("/Patient/seed%d", i), patient(fmt.Sprintf("seed%d", i), "S"), jsonCT), 201)
	}
	steps := []struct {
		name, method, path, body string
		status                   int
	}{
		{"create (POST)", "POST", "/Patient", patient("", "C"), 201},
		{"update-as-create (PUT)", "PUT", "/Patient/m1", patient("m1", "C"), 201},
		{"read", "GET", "/Patient/m1", "", 200},
		{"read 404", "GET", "/Patient/none", "", 404},
		{"vread", "GET", "/Patient/m1/_history/1", "", 200},
		{"update (PUT)", "PUT", "/Patient/m1", patient("m1", "D"), 200},
		{"delete", "DELETE", "/Patient/m1", "", 204},
		{"read 410", "GET", "/Patient/m1", "", 410},
		{"delete again", "DELETE", "/Patient/m1", "", 204},
		{"instance history (3 versions)", "GET", "/Patient/m1/_history", "", 200},
		{"type history, 6 resources, _count=3", "GET", "/Patient/_history?_count=3", "", 200},
		{"system history, _count=3", "GET", "/_history?_count=3", "", 200},
		{"search, 6 resources, _count=3", "GET", "/Patient?_count=3", "", 200},
		{"search _id=seed1", "GET", "/Patient?_id=seed1", "", 200},
		{"_summary=count", "GET", "/Patient?_summary=count", "", 200},
		{"metadata", "GET", "/metadata", "", 200},
	}
	var rows []costRow
	for _, s := range steps {
		before := counts()
		r := e.do(s.method, s.path, s.body, jsonCT)
		mustStatus(t, s.name, r, s.status)
		rows = append(rows, costRow{s.name, counts().Sub(before)})
	}
	return rows
}

type costRow struct {
	name string
	c    storage.Counts
}

func (r costRow) String() string {
	return fmt.Sprintf("%-38s GET %d  PUT %d  HEAD %d  LIST %d  DELETE %d  total %d", r.name, r.c.Get, r.c.Put, r.c.Head, r.c.List, r.c.Delete, r.c.Total())
}

// TestRequestsPerInteraction states the storage cost of each HTTP
// interaction, and checks the costs the write protocol promises
// (docs/object-layout.md): a create is 4 PUTs and nothing else, an update
// or delete 1 GET + 4 PUTs, a read or vread 1 GET, and the server itself
// adds no request to them.
func TestRequestsPerInteraction(t *testing.T) {
	e := newEnv(t, nil)
	rows := interactionCosts(t, e, e.count.Counts)
	want := map[string]storage.Counts{
		"create (POST)":          {Put: 4},
		"update-as-create (PUT)": {Get: 1, Put: 4},
		"read":                   {Get: 1},
		"read 404":               {Get: 1},
		"vread":                  {Get: 1},
		"update (PUT)":           {Get: 1, Put: 4},
		"delete":                 {Get: 1, Put: 4},
		"read 410":               {Get: 1},
		"delete again":           {Get: 1},
		"metadata":               {},
	}
	for _, r := range rows {
		t.Log(r)
		if w, ok := want[r.name]; ok && r.c != w {
			t.Errorf("%s: %+v, want %+v", r.name, r.c, w)
		}
	}
}

// TestRequestsPerInteractionMinIO counts the requests on the wire
// (retries included) against MinIO.
func TestRequestsPerInteractionMinIO(t *testing.T) {
	srv := s3test.MinIO(t)
	client, bucket := srv.NewBucket(t)
	e := newEnv(t, client.Bucket(bucket))
	for _, r := range interactionCosts(t, e, client.Requests) {
		t.Log(r)
	}
}

// percentiles returns p50 and p99 of ds.
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(ds)
	return ds[len(ds)/2], ds[(len(ds)*99)/100]
}

// measureOverhead compares a read through the server (HTTP, keep-alive)
// with a raw GET of the same object from the bucket.
func measureOverhead(t *testing.T, e *env, raw storage.Bucket, n int) {
	t.Helper()
	mustStatus(t, "seed", e.do("PUT", "/Patient/lat", patient("lat", "Latency"), jsonCT), 201)
	key := "default/resources/Patient/lat/current.json"
	rawRead := func() {
		if _, _, err := storage.ReadAll(t.Context(), raw, key); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest("GET", e.url+"/Patient/lat", nil)
	httpRead := func() {
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		buf := make([]byte, 4096)
		for {
			k, err := resp.Body.Read(buf)
			sb.Write(buf[:k])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("read: %d", resp.StatusCode)
		}
	}
	for range 20 { // warm up connections and caches
		rawRead()
		httpRead()
	}
	var rawD, httpD []time.Duration
	for range n {
		start := time.Now()
		rawRead()
		rawD = append(rawD, time.Since(start))
		start = time.Now()
		httpRead()
		httpD = append(httpD, time.Since(start))
	}
	r50, r99 := percentiles(rawD)
	h50, h99 := percentiles(httpD)
	t.Logf("raw GET     p50 %v  p99 %v", r50, r99)
	t.Logf("HTTP read   p50 %v  p99 %v", h50, h99)
	t.Logf("added       p50 %v  p99 %v  (n=%d)", h50-r50, h99-r99, n)
	if h50 < r50 {
		t.Errorf("a read through the server (p50 %v) cannot be faster than the raw GET it makes (p50 %v)", h50, r50)
	}
}

// TestLatencyOverhead measures the latency the server adds to a raw
// object GET, over memory (the server's own cost) and, when enabled,
// MinIO.
func TestLatencyOverhead(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	t.Run("memory", func(t *testing.T) {
		e := newEnv(t, nil)
		measureOverhead(t, e, e.bucket, 2000)
	})
	t.Run("minio", func(t *testing.T) {
		srv := s3test.MinIO(t)
		client, bucket := srv.NewBucket(t)
		b := client.Bucket(bucket)
		e := newEnv(t, b)
		measureOverhead(t, e, b, 1000)
	})
}
