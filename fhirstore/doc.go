// Package fhirstore keeps versioned FHIR resources over a storage.Bucket,
// in the object layout of docs/object-layout.md: current pointers,
// immutable version objects, type and system history events, tombstones,
// the crash-safe write protocol with roll-forward, and tenancy.
//
// # Keys and objects
//
// Below the tenant base T (G/{tenant}/ in prefix tenancy, G/ of the
// tenant's own bucket in bucket tenancy), as package internal/layout
// builds them:
//
//	resources/{type}/{id}/current.json
//	resources/{type}/{id}/_history/{version}.json
//	history/type/{type}/{ts}_{id}_{version}_{suffix}.json
//	history/system/{ts}_{type}_{id}_{version}_{suffix}.json
//
// {ts} is the version's meta.lastUpdated in Unix milliseconds, zero-padded
// to 13 digits. {suffix} is the first 128 bits, as 32 lowercase hex digits,
// of SHA-256 over tenant "\x00" type "\x00" id "\x00" version (decimal):
// a pure function of the version, so writing an event twice writes the
// same key with the same bytes. current.json and the version objects hold
// the envelope (resource_type, id, version_id, tenant_id, fhir_version,
// content, created_at, last_modified, deleted_at, etag, method), with
// content type application/json; the version object of N is byte-identical
// to current.json while N is current, because current.json is only ever
// written with the very bytes of a version object. Times are UTC with
// millisecond precision. A delete writes a tombstone version that keeps the
// previous version's content byte for byte.
//
// # The write protocol
//
// Writing version N+1 of a resource whose current.json holds version N
// under storage ETag E (N = 0: no current.json):
//
//  1. Claim: PUT _history/{N+1}.json with If-None-Match: *. Of all writers
//     racing for N+1 exactly one succeeds. From then on version N+1 is
//     committed: it is durable and nobody else can take its number.
//  2. Pointer: PUT current.json (the same bytes) with If-Match: E
//     (If-None-Match: * when N = 0).
//  3. Events: PUT the type and the system event.
//
// Steps 2 and 3 run in parallel; the write is acknowledged only when all
// three have succeeded. A create knows there is no current version, so it
// costs exactly 4 PUTs and no GET; an update or delete first GETs
// current.json (1 GET + 4 PUTs).
//
// Invariants. (I1) current.json only moves from version N to N+1, and only
// with the bytes of _history/{N+1}.json: every pointer write is conditional
// on the ETag of version N (whose bytes name N, so even a driver whose ETag
// is a content hash cannot confuse it with another version) and carries
// the one object that won the claim of N+1. Hence the pointer never moves
// backwards and never skips a version. (I2) A writer claims N+1 only after
// reading current.json at N, and current.json never moves backwards, so at
// any time at most one version (current+1) can be claimed but not yet
// current. (I3) Event keys and bodies are functions of the version object.
//
// The interleavings:
//
//   - Two writers race for N+1 (a live conflict). One claim wins; the
//     loser gets 412. The loser cannot tell a live winner from a crashed
//     one, and does not need to: it rolls N+1 forward (GETs the version
//     object, PUTs it to current.json If-Match E, PUTs its events). These
//     are exactly the bytes the winner writes in its own steps 2 and 3, so
//     whoever comes second is a harmless no-op or a failed precondition.
//     The loser then re-reads and, for an unconditional write, retries on
//     top of N+1 (bounded by Config.WriteRetries, with jittered backoff,
//     then ErrVersionConflict); a write with If-Match naming N fails with
//     ErrPreconditionFailed, since N is no longer current. Rolling forward
//     before answering 412 matters: a client that re-reads after a 412
//     must see the new version, or a crashed claim would make it loop.
//   - A writer crashed after its claim (current.json still at N, N+1
//     claimed). The next writer of the resource meets the claim as above
//     and rolls it forward; Verify with repair does the same. Reads in the
//     meantime return current.json, the last fully known version N; VRead
//     of N+1 returns it (it is durable); instance history starts at
//     current.json and shows N+1 once it is rolled forward.
//   - The winner's pointer write fails its precondition after its claim
//     succeeded. By I1 and I2 only a roll-forward of its own version can
//     have moved current.json away from E. The winner re-reads current.json:
//     at version >= N+1 its version is in place (and maybe already
//     superseded), so it writes its events (idempotent, I3) and acknowledges;
//     still at N under a new ETag (a 409 or a driver-level rewrite) it
//     retries the pointer write with the new ETag. Anything else would
//     contradict I1 and is reported as an error.
//   - A writer crashed after the pointer write but before one or both events.
//     The version is current and readable; the type or system history lacks
//     it until Verify with repair writes the missing events (it checks every
//     version against both event keys). Because of I3 re-emitting never
//     duplicates an entry.
//   - A writer crashed after writing events but before the pointer write:
//     the events name a committed version (events are only written after a
//     claim succeeded), so history pages list it; the pointer is fixed by the
//     next roll-forward.
//
// The protocol is exported as Apply ("write this content as version N+1
// if the current one is N", or on whatever is current) and Revert ("undo
// version N with version N+1, unless someone wrote after it"), on which
// Create, Update and Delete, and callers that write several resources as
// one unit, build: such a caller reads the current version N of each
// resource (Current), applies each change with Base N, and undoes what it
// applied with Revert. A lost race is then a 412, never a silent
// overwrite.
//
// No lost update: every acknowledged write holds a version number claimed
// with If-None-Match, and version objects are never overwritten or
// deleted. No double version: a number is claimed at most once.
//
// Conditional DELETE is never used (MinIO ignores If-Match on DELETE);
// normal operation never deletes anything.
//
// # Decisions
//
// See Match (If-Match "*" and tombstones), Update (update-as-create,
// restore of a tombstone), Delete (content of a tombstone), List and Count
// (cost, cursor) and History (paging method, cursor) for the choices this
// package makes where the API left them open. Timestamps: lastUpdated is
// the writer's clock truncated to the millisecond, but never earlier than
// the previous version's, so the versions of one resource are in time
// order even when the clocks of several servers disagree.
package fhirstore
