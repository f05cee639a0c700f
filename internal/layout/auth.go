package layout

import (
	"crypto/sha256"
	"encoding/hex"
)

// Authorization state. The SMART token endpoint records every client
// assertion id (jti) it accepted, so that a replayed assertion is refused
// by every replica on the bucket. {client} is the segment-encoded client
// id; {jti_hash} is the hex SHA-256 of the jti, so that any jti (however
// long, whatever its bytes) fills one fixed-size segment.

// JTIsPrefix holds the recorded assertion ids of every client.
const JTIsPrefix = "auth/jti/"

// ClientJTIPrefix is auth/jti/{client}/, the recorded assertion ids of one
// client.
func ClientJTIPrefix(clientID string) string { return JTIsPrefix + EncodeSegment(clientID) + "/" }

// JTIKey is auth/jti/{client}/{jti_hash}.json, the record of one accepted
// client assertion.
func JTIKey(clientID, jti string) string {
	sum := sha256.Sum256([]byte(jti))
	return ClientJTIPrefix(clientID) + hex.EncodeToString(sum[:]) + jsonExt
}
