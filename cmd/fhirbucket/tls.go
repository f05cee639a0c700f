package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"fhirbucket/auth"
)

// certPollInterval is how often serve looks whether the certificate or
// key file changed (a variable so that tests can shorten it).
var certPollInterval = 10 * time.Second

// tlsSettings reads --tls-cert and --tls-key: nil for plain HTTP, else
// the loaded certificate. With an access-control mode, plain HTTP on an
// address other programs or hosts can reach would carry tokens in clear:
// it needs --allow-plain-http (a TLS-terminating proxy in front).
func tlsSettings(v *values, addr string, mode auth.Mode, log *slog.Logger) (*certReloader, error) {
	certFile, keyFile := v.str("tls-cert"), v.str("tls-key")
	allow, err := v.boolean("allow-plain-http")
	if err != nil {
		return nil, err
	}
	switch {
	case certFile != "" && keyFile == "":
		return nil, fmt.Errorf("%s is set without %s", v.label("tls-cert"), v.label("tls-key"))
	case keyFile != "" && certFile == "":
		return nil, fmt.Errorf("%s is set without %s", v.label("tls-key"), v.label("tls-cert"))
	case certFile != "" && allow != nil && *allow:
		return nil, fmt.Errorf("%s and %s contradict each other: the server serves HTTPS", v.label("allow-plain-http"), v.label("tls-cert"))
	case certFile != "":
		return newCertReloader(certFile, keyFile, v.label("tls-cert"), log)
	}
	if mode != auth.ModeNone && !isLoopback(addr) && (allow == nil || !*allow) {
		return nil, fmt.Errorf("%s=%s on plain HTTP at %q, an address other hosts can reach, would send tokens in clear: "+
			"set %s and %s to serve HTTPS, listen on a loopback address, or set %s=true when a TLS-terminating reverse proxy is in front",
			v.defs["auth"].env, mode, addr, v.defs["tls-cert"].env, v.defs["tls-key"].env, v.defs["allow-plain-http"].env)
	}
	return nil, nil
}

// isLoopback reports whether a listen address binds only the loopback
// interface: localhost or a loopback IP ("" and 0.0.0.0 bind every
// interface; other host names are not trusted to resolve to loopback).
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// certReloader serves the certificate of a cert and key file pair and
// loads it again on SIGHUP and when either file changes, without touching
// the listener: connections already open keep going, new handshakes get
// the new certificate. A reload that fails keeps the old certificate.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cert atomic.Pointer[tls.Certificate]

	mu    sync.Mutex
	stamp string // the files' size and modification times when last loaded
}

func newCertReloader(certFile, keyFile, label string, log *slog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.reload(); err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return c, nil
}

func (c *certReloader) fileStamp() string {
	var s string
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "missing"
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s
}

// reload loads the pair; on failure the current certificate stays.
func (c *certReloader) reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp := c.fileStamp()
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("loading the TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert.Store(&cert)
	c.stamp = stamp
	return nil
}

// changed reports whether the files differ from those last loaded.
func (c *certReloader) changed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fileStamp() != c.stamp
}

func (c *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// tlsConfig is the server's TLS configuration: TLS 1.2 and later, Go's
// default (modern, AEAD-only for TLS 1.2) cipher suites, and the current
// certificate at every handshake.
func (c *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.getCertificate}
}

// watch reloads on SIGHUP and when the files change, until ctx ends. It
// takes over SIGHUP before it returns, so a SIGHUP sent once serve logs
// "listening" never stops the process.
func (c *certReloader) watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go c.loop(ctx, hup)
}

func (c *certReloader) loop(ctx context.Context, hup chan os.Signal) {
	defer signal.Stop(hup)
	tick := time.NewTicker(certPollInterval)
	defer tick.Stop()
	for {
		why := ""
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case <-tick.C:
			if !c.changed() {
				continue
			}
			why = "file changed"
		}
		if err := c.reload(); err != nil {
			c.log.Error("TLS certificate not reloaded; the previous one stays in use", "reason", why, "error", err)
			continue
		}
		c.log.Info("TLS certificate reloaded", "reason", why, "cert", c.certFile)
	}
}
