package layout

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// The identifier index (docs/object-layout.md, "The identifier index").
//
// System and value are hashed, never spelled in a key: any Unicode, any
// length and any "|" or "/" then yields a key of fixed shape, and an
// identifier such as a national id number is not readable in a bucket
// listing. The value hash is a folder of its own, so a search by value
// alone (any system) lists one prefix, and a search by system and value a
// narrower one inside it.

// IdentifierPrefix is where the identifier index of a tenant lives.
const IdentifierPrefix = "index/identifier/"

// IdentifierCompleteKey is the marker that says the tenant's identifier
// index covers every resource (written by reindex, or on first use of a
// tenant that has no resources yet).
const IdentifierCompleteKey = IdentifierPrefix + "_complete.json"

// IdentifierReindexKey records how far a reindex of the tenant got, so
// that an interrupted one resumes.
const IdentifierReindexKey = IdentifierPrefix + "_reindex.json"

// claimName is the claim object of one value folder; "_" is not allowed
// in an id, so it never collides with an entry.
const claimName = "_claim.json"

// IdentifierValueHash is the {vhash} segment: SHA-256 of the value, 64
// lowercase hex digits.
func IdentifierValueHash(value string) string {
	h := sha256.Sum256([]byte(value))
	return hex.EncodeToString(h[:])
}

// IdentifierSystemHash is the {shash} segment: the first 64 bits of
// SHA-256 of the system, 16 lowercase hex digits. No system (or an empty
// one) hashes the empty string. A collision only adds a candidate that
// the lookup's verification drops.
func IdentifierSystemHash(system string) string {
	h := sha256.Sum256([]byte(system))
	return hex.EncodeToString(h[:8])
}

// IdentifierTypePrefix is index/identifier/{type}/.
func IdentifierTypePrefix(typ string) string { return IdentifierPrefix + typ + "/" }

// IdentifierValuePrefix is index/identifier/{type}/{vhash}/: every entry
// of one value, whatever its system, and the value's claim.
func IdentifierValuePrefix(typ, vhash string) string { return IdentifierTypePrefix(typ) + vhash + "/" }

// IdentifierSystemPrefix is index/identifier/{type}/{vhash}/{shash}_: the
// entries of one system and value.
func IdentifierSystemPrefix(typ, vhash, shash string) string {
	return IdentifierValuePrefix(typ, vhash) + shash + "_"
}

// IdentifierEntryKey is index/identifier/{type}/{vhash}/{shash}_{id}_{version}:
// version {version} of {type}/{id} carries the identifier. A new version
// writes new keys, so a writer never overwrites or deletes an entry
// another writer may still need.
func IdentifierEntryKey(typ, vhash, shash, id string, version int) string {
	return IdentifierSystemPrefix(typ, vhash, shash) + id + "_" + strconv.Itoa(version)
}

// IdentifierClaimKey is index/identifier/{type}/{vhash}/_claim.json, the
// lease document conditional creates of the value take.
func IdentifierClaimKey(typ, vhash string) string {
	return IdentifierValuePrefix(typ, vhash) + claimName
}

// IdentifierEntry is a parsed entry key.
type IdentifierEntry struct {
	Type, ValueHash, SystemHash, ID string
	Version                         int
}

// Key rebuilds the entry's key.
func (e IdentifierEntry) Key() string {
	return IdentifierEntryKey(e.Type, e.ValueHash, e.SystemHash, e.ID, e.Version)
}

// ParseIdentifierEntry parses a key IdentifierEntryKey built. Claims and
// markers do not parse.
func ParseIdentifierEntry(key string) (IdentifierEntry, bool) {
	rest, ok := strings.CutPrefix(key, IdentifierPrefix)
	if !ok {
		return IdentifierEntry{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || !isHex(parts[1], 64) {
		return IdentifierEntry{}, false
	}
	sh, tail, ok := strings.Cut(parts[2], "_")
	if !ok || !isHex(sh, 16) {
		return IdentifierEntry{}, false
	}
	i := strings.LastIndexByte(tail, '_')
	if i <= 0 {
		return IdentifierEntry{}, false
	}
	v, ok := parseCount(tail[i+1:])
	if !ok {
		return IdentifierEntry{}, false
	}
	return IdentifierEntry{Type: parts[0], ValueHash: parts[1], SystemHash: sh, ID: tail[:i], Version: v}, true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
