package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"fhirbucket/auth/smartclient"
	"fhirbucket/internal/clientkit"
)

// backendServicesSettings are the flags of the client commands (load,
// export) that authenticate with SMART Backend Services and trust a CA:
// scope is the default --scope and why says what needs it.
func backendServicesSettings(scope, why string) []setting {
	return []setting{
		{flag: "client-id", usage: "SMART Backend Services: the registered client id (with --private-key; instead of --token)"},
		{flag: "private-key", usage: "SMART Backend Services: PEM or JWK private key file that signs the client's assertions"},
		{flag: "scope", def: scope, usage: "SMART Backend Services: scopes to ask for (" + why + ")"},
		{flag: "token-url", usage: "SMART Backend Services: the token endpoint (default: from {url}/.well-known/smart-configuration)"},
		{flag: "ca-cert", usage: "PEM file of CA certificates to trust for https:// URLs, besides the system's"},
	}
}

// clientAuth reads the flags of backendServicesSettings: the HTTP client
// (nil: the default one) and the token source (nil without --client-id).
func clientAuth(v *values, baseURL, tenant string) (*http.Client, clientkit.TokenSource, error) {
	hc, err := clientHTTP(v)
	if err != nil {
		return nil, nil, err
	}
	tokens, err := backendServices(v, baseURL, tenant, hc)
	if err != nil {
		return nil, nil, err
	}
	if tokens != nil && (v.given("token") || v.given("token-file")) {
		return nil, nil, fmt.Errorf("--client-id and --token/--token-file: authenticate one way, not both")
	}
	return hc, tokens, nil
}

// clientHTTP is the HTTP client of a CLI: the default transport, trusting
// --ca-cert's CAs as well as the system's.
func clientHTTP(v *values) (*http.Client, error) {
	if !v.given("ca-cert") {
		return nil, nil
	}
	data, err := os.ReadFile(v.str("ca-cert"))
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("--ca-cert %s: no PEM certificate in it", v.str("ca-cert"))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// backendServices is the token source of --client-id and --private-key,
// or nil without them.
func backendServices(v *values, baseURL, tenant string, hc *http.Client) (clientkit.TokenSource, error) {
	id, keyFile := v.given("client-id"), v.given("private-key")
	switch {
	case !id && !keyFile:
		if v.given("token-url") {
			return nil, fmt.Errorf("--token-url needs --client-id and --private-key")
		}
		return nil, nil
	case !id:
		return nil, fmt.Errorf("--private-key needs --client-id")
	case !keyFile:
		return nil, fmt.Errorf("--client-id needs --private-key")
	}
	key, kid, err := smartclient.LoadPrivateKey(v.str("private-key"))
	if err != nil {
		return nil, fmt.Errorf("--private-key: %w", err)
	}
	h := http.Header{}
	if tenant != "" {
		h.Set("X-Tenant-ID", tenant)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	src, err := smartclient.New(smartclient.Config{
		BaseURL: baseURL, TokenURL: v.str("token-url"), Header: h, ClientID: v.str("client-id"),
		Key: key, KeyID: kid, Scope: v.str("scope"), HTTPClient: hc,
	})
	if err != nil {
		return nil, err
	}
	return src, nil
}
