// Package bundle owns batch and transaction Bundles (POST [base]). This
// part is the plan: NewPlan parses a Bundle, checks every entry, assigns
// the ids of new resources, rewrites the references between entries, and
// orders the work. It reads nothing and writes nothing; applying a plan
// (journal, lease, writes per phase, commit, abort, recovery) is built on
// top of the store's write primitive. It imports only fhir and the
// standard library.
//
// # Entries
//
// request.method is GET, HEAD, POST, PUT or DELETE; PATCH is
// ErrNotSupported, anything else ErrInvalid. request.url is relative to the
// base (one leading slash is allowed, as in the official examples) or
// absolute on Options.Base; another server's URL is invalid. The forms are
// Type (POST create, GET search), Type/id (GET read, PUT update, DELETE
// delete), Type/id/_history/vid, Type/id/_history, Type/_history, _history,
// metadata and ?query (GET or HEAD), each with an optional query for GET
// and HEAD. An unknown type, a bad id or version id, "..", an empty or
// extra segment, a fragment, or a query on POST, on PUT Type/id or on
// DELETE Type/id is invalid. Operations ($name) and _search are
// ErrNotSupported. Conditional update and delete (PUT or DELETE
// Type?query, Interaction ConditionalUpdate and ConditionalDelete),
// ifNoneExist (POST only) and conditional references ("Patient?identifier=…"
// in a resource, Entry.CondRefs) pass the plan unresolved: they need
// search, which is the caller's (see conditional.go); Commit refuses them
// until they are resolved. ifMatch is for PUT and DELETE,
// ifNoneMatch and ifModifiedSince for GET and HEAD; ifModifiedSince must
// be a FHIR instant. POST and PUT need a resource of the URL's type, and a
// PUT's resource must carry the URL's id. A fullUrl must be absolute and
// not version specific (bdl-8); one on this server must name what the
// entry writes. Two entries with one fullUrl are invalid, except in a
// history Bundle (bdl-7). Every POST and PUT resource is checked by
// Options.Validator as it will be stored.
//
// # Transaction and batch
//
// A transaction is all or nothing: the first invalid entry (lowest index;
// pass-1 checks on their own come before rewriting and validation) fails
// the plan with its *EntryError, and two entries that write the same
// resource (DELETE, POST and PUT, Type/id after id assignment) are
// invalid. In a batch, and in a history Bundle, which is processed as a
// batch, each entry keeps its own Err and the others go on. Both are
// processed in the transaction's order: Plan.Phases gives DELETE, POST,
// PUT, then GET and HEAD, each in request order, and Plan.Entries keeps
// request order for the response.
//
// # Reference rewriting (transaction)
//
// Each POST gets a new id (32 lowercase hex digits, 128 random bits from
// crypto/rand, the format of fhirstore's ids), set as the resource's id.
// Then, in every POST and PUT resource, every JSON string value exactly
// equal to the fullUrl of a POST entry, or to the urn: fullUrl of a PUT
// entry, becomes that entry's "Type/id": "reference" at any depth
// (contained resources, extensions), and any uri, url or canonical value
// (valueUri, valueUrl, Attachment.url...). Without type information the
// rule is by value, so a plain string equal to a fullUrl is rewritten too.
// Members named *Oid or *Uuid (valueOid, valueUuid...) are left alone:
// their types admit only urn: values. Inside text.div, href and src
// attribute values equal to such a fullUrl are rewritten likewise.
//
// A POST's fullUrl is rewritten whatever its form: urn:uuid:, urn:oid:, an
// absolute URL on this server's base, or another server's URL. The client
// cannot know the id the server assigns, so every reference to the entry
// would dangle otherwise. A PUT names its id, so only its urn: fullUrl is
// rewritten; its absolute fullUrl is a real address and stays. Relative
// references ("Patient/123") are never rewritten: they already name a
// resource on this server. A string equal to no fullUrl of the Bundle,
// including a urn:uuid: of no entry, is left as it is, as are fullUrls
// with a fragment or a version suffix and references inside request.url
// queries.
//
// # Batch: no rewriting between entries
//
// Batch entries must not depend on each other (FHIR R4 http.html: a
// reference from one batch entry to another is non-conformant). So a
// batch is not rewritten across entries: an entry whose resource names the
// urn: fullUrl of another entry fails with ErrInvalid ("send a
// transaction"), rather than being stored with a reference that can never
// resolve. A resource naming its own fullUrl is rewritten to its own
// Type/id. Absolute fullUrls of other entries are addresses and stay.
//
// # Output
//
// Entry.Resource is compact JSON built from the bytes as sent: numbers,
// escapes and key order are copied, never decoded through float64 (1.50
// stays 1.50); only rewritten strings are re-encoded (without escaping <,
// > and &, like fhir.Marshal).
package bundle
