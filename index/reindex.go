package index

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// marker is the body of layout.IdentifierCompleteKey.
type marker struct {
	Complete string `json:"complete"` // RFC 3339, when the marker was written
	Reason   string `json:"reason"`
}

func writeMarker(ctx context.Context, b storage.Bucket, now time.Time, reason string) error {
	data, _ := json.Marshal(marker{Complete: now.Format("2006-01-02T15:04:05.000Z07:00"), Reason: reason})
	_, err := b.Put(ctx, layout.IdentifierCompleteKey, bytes.NewReader(data),
		storage.PutOptions{ContentType: "application/json", IfNoneMatch: "*", Size: int64(len(data))})
	if err != nil && !errors.Is(err, storage.ErrPreconditionFailed) && !errors.Is(err, storage.ErrConflict) {
		return fmt.Errorf("index: writing the completeness marker: %w", err)
	}
	return nil
}

// reindexState is the body of layout.IdentifierReindexKey: the types done
// and the list cursor inside the current one.
type reindexState struct {
	Done    []string `json:"done"`
	Type    string   `json:"type,omitempty"`
	Cursor  string   `json:"cursor,omitempty"`
	Indexed int      `json:"indexed"`
}

// Progress is what Reindex reports after every page.
type Progress struct {
	Type    string // the type being indexed
	Types   int    // types done, of TotalTypes
	Total   int    // types to index
	Indexed int    // resources indexed so far (also by an earlier run)
}

// Reindex writes the index entries of the current version of every
// resource of the tenant whose type has an identifier element, then the
// completeness marker. It records its position after every page of 1,000
// resources (layout.IdentifierReindexKey), so an interrupted run resumes
// where it stopped; entries are written by key, so writing one twice is
// harmless. Replicas may serve while it runs (their writes maintain the
// index themselves). Cost: per 1,000 resources about 1 LIST, 1,000 GETs,
// 1 PUT per identifier and 1 PUT for the position. progress may be nil.
func (ix *Index) Reindex(ctx context.Context, tenant string, progress func(Progress)) error {
	b, err := ix.store.TenantBucket(tenant)
	if err != nil {
		return err
	}
	var st reindexState
	data, _, err := storage.ReadAll(ctx, b, layout.IdentifierReindexKey)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("index: %s is not a reindex position: %w", layout.IdentifierReindexKey, err)
		}
	case !errors.Is(err, storage.ErrNotExist):
		return fmt.Errorf("index: reading the reindex position: %w", err)
	}
	types := make([]string, 0, len(identifierTypes))
	for t := range identifierTypes {
		types = append(types, t)
	}
	slices.Sort(types)
	save := func() error {
		data, _ := json.Marshal(st)
		_, err := b.Put(ctx, layout.IdentifierReindexKey, bytes.NewReader(data), storage.PutOptions{ContentType: "application/json", Size: int64(len(data))})
		if err != nil {
			return fmt.Errorf("index: recording the reindex position: %w", err)
		}
		return nil
	}
	for _, typ := range types {
		if slices.Contains(st.Done, typ) {
			continue
		}
		cursor := ""
		if st.Type == typ {
			cursor = st.Cursor
		}
		for {
			page, err := ix.store.List(ctx, tenant, typ, fhirstore.ListQuery{Count: fhirstore.MaxCount, Cursor: cursor})
			if err != nil {
				return fmt.Errorf("index: listing %s: %w", typ, err)
			}
			err = forEach(ctx, ix.par, len(page.Resources), func(ctx context.Context, i int) error {
				return ix.putEntries(ctx, tenant, page.Resources[i])
			})
			if err != nil {
				return err
			}
			st.Indexed += len(page.Resources)
			cursor = page.Next
			if cursor == "" {
				st.Done, st.Type, st.Cursor = append(st.Done, typ), "", ""
			} else {
				st.Type, st.Cursor = typ, cursor
			}
			if len(page.Resources) > 0 || cursor == "" {
				if err := save(); err != nil {
					return err
				}
			}
			if progress != nil {
				progress(Progress{Type: typ, Types: len(st.Done), Total: len(types), Indexed: st.Indexed})
			}
			if cursor == "" {
				break
			}
		}
	}
	if err := writeMarker(ctx, b, ix.now(), fmt.Sprintf("reindex of %d resources", st.Indexed)); err != nil {
		return err
	}
	ix.complete.Store(tenant, struct{}{})
	if err := b.Delete(ctx, layout.IdentifierReindexKey); err != nil {
		return fmt.Errorf("index: removing the reindex position: %w", err)
	}
	return nil
}
