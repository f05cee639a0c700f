package smartclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// TestParsePrivateKey: the key forms openssl and JWK tools write all
// load, keep their kid, and public keys are refused.
func TestParsePrivateKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8, _ := MarshalPrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: ec, KeyID: "k1"})
	pub, _ := json.Marshal(jose.JSONWebKey{Key: &ec.PublicKey, KeyID: "k1"})
	for _, c := range []struct {
		name, kid string
		data      []byte
		ok        bool
	}{
		{"pkcs8", "", pkcs8, true},
		{"sec1", "", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), true},
		{"pkcs1", "", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), true},
		{"jwk", "k1", jwk, true},
		{"public jwk", "", pub, false},
		{"certificate", "", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), false},
		{"garbage", "", []byte("nope"), false},
	} {
		k, kid, err := ParsePrivateKey(c.data)
		if (err == nil) != c.ok || kid != c.kid || (c.ok && k == nil) {
			t.Errorf("%s: %v %q %v", c.name, k != nil, kid, err)
		}
	}
	a, _ := Algorithm(ec)
	b, _ := Algorithm(rk)
	if a != jose.ES384 || b != jose.RS384 {
		t.Errorf("algorithms %s %s", a, b)
	}
}
