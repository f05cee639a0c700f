// Package layout owns the object keys of docs/object-layout.md: it builds
// every key below a tenant base, parses the ones the code lists, encodes
// the key segments that carry caller-chosen values (%XX), and checks tenant
// ids, the one value that becomes a key prefix of its own. It is the only
// place a key string is built.
//
// It is a leaf: it knows the grammar of the keys, not FHIR. Builders take
// values that the caller has already checked (a resource type with
// fhir.IsResourceType, an id with fhir.ValidID, a version >= 1); parsers
// check the shape of a key and leave the meaning of a type or id segment to
// the caller. Keys are relative to the tenant base T; the tenant's
// storage.Bucket is rooted there.
package layout

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Resources.

// ResourcesPrefix is the listing prefix of every resource of every type.
const ResourcesPrefix = "resources/"

// TypePrefix is resources/{type}/: listed with delimiter "/" it yields one
// common prefix per id.
func TypePrefix(typ string) string { return ResourcesPrefix + typ + "/" }

// ResourcePrefix is resources/{type}/{id}/, every object of one resource.
func ResourcePrefix(typ, id string) string { return TypePrefix(typ) + id + "/" }

// CurrentKey is resources/{type}/{id}/current.json.
func CurrentKey(typ, id string) string { return ResourcePrefix(typ, id) + currentName }

// VersionsPrefix is resources/{type}/{id}/_history/, the version objects.
func VersionsPrefix(typ, id string) string { return ResourcePrefix(typ, id) + historyDir + "/" }

// VersionKey is resources/{type}/{id}/_history/{version}.json.
func VersionKey(typ, id string, version int) string {
	return VersionsPrefix(typ, id) + strconv.Itoa(version) + jsonExt
}

const (
	currentName = "current.json"
	historyDir  = "_history"
	jsonExt     = ".json"
)

// ParseVersion parses the name of a version object below VersionsPrefix,
// "{version}.json": a decimal >= 1 without leading zeros.
func ParseVersion(name string) (int, bool) {
	s, ok := strings.CutSuffix(name, jsonExt)
	if !ok {
		return 0, false
	}
	return parseCount(s)
}

// ResourceKey is a parsed key below ResourcesPrefix.
type ResourceKey struct {
	Type, ID string
	// Version is the version of a _history object, 0 for current.json.
	Version int
}

// ParseResourceKey parses resources/{type}/{id}/current.json and
// resources/{type}/{id}/_history/{version}.json. It checks that the type
// and id segments are non-empty, not what they name.
func ParseResourceKey(key string) (ResourceKey, bool) {
	parts := strings.Split(key, "/")
	if (len(parts) != 4 && len(parts) != 5) || parts[0]+"/" != ResourcesPrefix || parts[1] == "" || parts[2] == "" {
		return ResourceKey{}, false
	}
	k := ResourceKey{Type: parts[1], ID: parts[2]}
	if len(parts) == 4 {
		return k, parts[3] == currentName
	}
	v, ok := ParseVersion(parts[4])
	k.Version = v
	return k, ok && parts[3] == historyDir
}

// parseCount parses a decimal >= 1 in canonical form (no sign, no leading
// zeros).
func parseCount(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

// Transactions.

// TransactionsPrefix is where the transaction journals are.
const TransactionsPrefix = "transactions/"

// TransactionKey is transactions/{tx_id}.json, the journal of one
// transaction; tx_id is segment-encoded.
func TransactionKey(txID string) string { return TransactionsPrefix + EncodeSegment(txID) + jsonExt }

// ParseTransactionKey returns the tx_id of a key TransactionKey built.
func ParseTransactionKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, TransactionsPrefix)
	if !ok {
		return "", false
	}
	enc, ok := strings.CutSuffix(rest, jsonExt)
	if !ok || enc == "" {
		return "", false
	}
	id, err := DecodeSegment(enc)
	return id, err == nil
}

// Tenants.

var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var reservedTenants = map[string]bool{"resources": true, "history": true, "bulk": true, "tenants": true, "_system": true}

// ValidTenant checks a tenant id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}, and not
// one of the reserved words resources, history, bulk, tenants, _system.
// The rule keeps every tenant inside one key segment, so one tenant's
// prefix never contains another's. The error quotes the id and says which
// rule it breaks; callers wrap it with their own sentinel.
func ValidTenant(tenant string) error {
	if !tenantPattern.MatchString(tenant) {
		return fmt.Errorf("%q must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", tenant)
	}
	if reservedTenants[tenant] {
		return fmt.Errorf("%q is a reserved word", tenant)
	}
	return nil
}
