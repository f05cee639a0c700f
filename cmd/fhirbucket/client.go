package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"fhirbucket/auth/smart"
	"fhirbucket/auth/smartclient"
)

const clientRegisterSummary = `Register a SMART Backend Services client: make a key pair, write the private key
to --key-out (mode 0600; an existing file is never overwritten), and print the
client's entry for the registry file (FHIRBUCKET_AUTH_SMART_CLIENTS) with its
public key as an inline JWKS, kid = the key's RFC 7638 thumbprint. Add the entry
to the registry's "clients" list and restart the server. The client then signs
its assertions with the key: fhirbucket load --client-id ID --private-key FILE.`

// clientRegisterSettings are flags only.
var clientRegisterSettings = []setting{
	{flag: "id", usage: "the client_id (required)"},
	{flag: "tenant", usage: "the one tenant the client may use, or * for every tenant (required)"},
	{flag: "scopes", def: "system/*.rs", usage: "space-separated SMART system scopes the client may be granted"},
	{flag: "alg", def: "ES384", usage: "key algorithm: ES384 (EC P-384) or RS384 (RSA 3072)"},
	{flag: "key-out", usage: "file to write the private key to, PEM PKCS #8 (required)"},
}

// clientCmd runs `fhirbucket client register`.
func clientCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "register" {
		fmt.Fprint(stderr, "usage: fhirbucket client register --id ID --tenant T --key-out FILE [--scopes S] [--alg ES384|RS384]\n")
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
			return nil
		}
		return errors.New("want the subcommand register")
	}
	fs, v := newFlagSet("client register", clientRegisterSummary, stderr, clientRegisterSettings)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: fhirbucket client register [flags]\n\n%s\n\nflags (no environment variables):\n\n", clientRegisterSummary)
		for _, s := range clientRegisterSettings {
			def := s.def
			if def == "" {
				def = "none"
			}
			fmt.Fprintf(stderr, "  --%s\n        %s (default: %s)\n", s.flag, s.usage, def)
		}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, name := range []string{"id", "tenant", "key-out"} {
		if !v.given(name) {
			return fmt.Errorf("--%s is required (see --help)", name)
		}
	}
	key, err := smartclient.GenerateKey(v.str("alg"))
	if err != nil {
		return fmt.Errorf("--alg: %w", err)
	}
	set, err := smartclient.PublicJWKS(key)
	if err != nil {
		return err
	}
	entry := smart.ClientEntry{ClientID: v.str("id"), Tenant: v.str("tenant"), Scopes: strings.Fields(v.str("scopes")), JWKS: &set}
	// The entry must be one the server accepts.
	doc, _ := json.Marshal(smart.RegistryFile{Clients: []smart.ClientEntry{entry}})
	if _, err := smart.ParseRegistry(strings.NewReader(string(doc))); err != nil {
		return err
	}
	pemKey, err := smartclient.MarshalPrivateKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(v.str("key-out"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("--key-out: %w", err)
	}
	if _, err := f.Write(pemKey); err != nil {
		f.Close()
		return fmt.Errorf("--key-out: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--key-out: %w", err)
	}
	out, _ := json.MarshalIndent(entry, "", "  ")
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	fmt.Fprintf(stderr, "private key written to %s; add the entry above to the registry's \"clients\" list\n", v.str("key-out"))
	return err
}
