package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"fhirbucket/auth"
	"fhirbucket/auth/smart"
	"fhirbucket/auth/smartclient"
	"fhirbucket/bulk/export"
	"fhirbucket/fhirstore"
	"fhirbucket/metrics"
	"fhirbucket/server"
)

const serveSummary = `Serve the FHIR R4 REST API. The FHIR base is the server root (or --base-path);
/healthz, /readyz and /metrics (Prometheus) stay at the root.`

// serve runs the HTTP server until ctx ends (SIGINT/SIGTERM), then shuts
// down gracefully: the listener closes and in-flight requests finish
// within the shutdown timeout.
func serve(ctx context.Context, args, environ []string, stderr io.Writer) error {
	fs, v := newFlagSet("serve", serveSummary, stderr, serveSettings, storeSettings)
	if err := v.parse(fs, args, environ); err != nil {
		return err
	}
	log, err := newLogger(v, stderr)
	if err != nil {
		return err
	}
	cfg, replay, err := serverConfig(v, log)
	if err != nil {
		return err
	}
	addr := v.str("addr")
	certs, err := tlsSettings(v, addr, authModeOf(cfg.Auth), log)
	if err != nil {
		return err
	}
	readHeader, err := v.duration("read-header-timeout")
	if err != nil {
		return err
	}
	readTimeout, err := v.duration("read-timeout")
	if err != nil {
		return err
	}
	shutdownTimeout, err := v.duration("shutdown-timeout")
	if err != nil {
		return err
	}
	m := metrics.New(metrics.Options{ProcessCollectors: true})
	be, err := openInstrumentedBackend(ctx, v, log, cfg.MaxBodyBytes, m)
	if err != nil {
		return err
	}
	defer be.Close()
	cfg.Store, cfg.Ready, cfg.Logger, cfg.SoftwareVersion = be.store, be.ready, log, softwareVersion()
	tr, bcfg, recoverEvery, err := bundleSetup(v, be, log)
	if err != nil {
		return err
	}
	cfg.Bundles = bcfg
	claimTTL, err := v.duration("claim-ttl")
	if err != nil {
		return err
	}
	if claimTTL < time.Second {
		return fmt.Errorf("%s must be at least 1s, got %s", v.label("claim-ttl"), claimTTL)
	}
	ix, err := be.newIndex(log, claimTTL)
	if err != nil {
		return err
	}
	cfg.Index = ix
	rctx, stopRecovery := context.WithCancel(ctx)
	recoveryDone := make(chan struct{})
	go func() { defer close(recoveryDone); runRecovery(rctx, be.store, tr, recoverEvery, log) }()
	defer func() { stopRecovery(); <-recoveryDone }()
	// Bulk export: jobs run in every serve process, which claims them by
	// their leases and resumes those of replicas that stopped.
	ecfg, err := exportConfig(v)
	if err != nil {
		return err
	}
	ecfg.Store, ecfg.Logger, ecfg.Owner = be.store, log, processOwner()
	ecfg.Hooks = export.Hooks{
		JobStarted: func() func(error) {
			stopped := m.BulkJobStarted(metrics.BulkExport)
			return func(err error) {
				if errors.Is(err, export.ErrHandedOver) {
					err = fmt.Errorf("%w: %w", metrics.ErrJobHandedOver, err)
				}
				stopped(err)
			}
		},
		Exported: func(n int, _ int64) { m.BulkResources(metrics.BulkExport, n, 0) },
	}
	exp, err := export.New(ecfg)
	if err != nil {
		return err
	}
	if err := exp.Open(ctx); err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := exp.Close(cctx); err != nil {
			log.Warn("stopping the export jobs", "error", err)
		}
	}()
	cfg.Export = exp
	if replay != nil {
		if err := bindReplay(v, replay, cfg.Auth, be.store, log); err != nil {
			return err
		}
	}
	fh, err := server.New(cfg)
	if err != nil {
		return err
	}
	// /metrics is served at the root next to /healthz; requests are
	// labelled by the FHIR interaction of the route the server matched,
	// never by tenant or id.
	h := m.WithEndpoint(m.Middleware(fh))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", v.label("addr"), err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeader,
		ReadTimeout:       readTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	scheme := "http"
	if certs != nil {
		scheme = "https"
		srv.TLSConfig = certs.tlsConfig()
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		certs.watch(wctx)
	}
	log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "storage", be.desc,
		"tenant_routing", cfg.TenantRouting.String(), "base_path", cfg.BasePath, "version", softwareVersion(),
		"auth", authModeOf(cfg.Auth))

	errc := make(chan error, 1)
	go func() {
		if certs != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: in-flight requests did not finish within %s: %w", shutdownTimeout, err)
	}
	// Commits detached from their requests finish before the store closes.
	if err := tr.Close(sctx); err != nil {
		return fmt.Errorf("shutdown: transactions did not finish within %s: %w", shutdownTimeout, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

func authModeOf(a server.Authenticator) auth.Mode {
	switch a.(type) {
	case nil:
		return auth.ModeNone
	case server.TokenEndpoint:
		return auth.ModeSMART
	}
	return auth.ModeToken
}

// serverConfig reads the HTTP settings into a server.Config (without the
// store). In auth mode smart the returned replay record keeper still
// needs the store's tenant buckets (bindReplay).
func serverConfig(v *values, log *slog.Logger) (server.Config, *smart.BucketReplay, error) {
	var cfg server.Config
	routing, err := v.oneOf("tenant-routing", "header", "path", "both")
	if err != nil {
		return cfg, nil, err
	}
	cfg.TenantRouting, _ = server.ParseTenantRouting(routing)
	if cfg.MaxBodyBytes, err = v.positiveInt("max-body-bytes"); err != nil {
		return cfg, nil, err
	}
	cfg.BaseURL, cfg.BasePath = v.str("base-url"), v.str("base-path")
	if _, err := server.ParseBaseURL(cfg.BaseURL); err != nil {
		return cfg, nil, fmt.Errorf("%s: %w", v.label("base-url"), err)
	}
	if _, err := server.CleanBasePath(cfg.BasePath); err != nil {
		return cfg, nil, fmt.Errorf("%s: %w", v.label("base-path"), err)
	}
	a, replay, err := authConfig(v, log)
	if err != nil {
		return cfg, nil, err
	}
	if a != nil {
		cfg.Auth = a
	}
	return cfg, replay, nil
}

// authConfig reads the access-control settings: nil for auth none, the
// loaded token file for auth token, the SMART service for auth smart. A
// setting of another mode is a contradiction, not a silent no-op.
func authConfig(v *values, log *slog.Logger) (server.Authenticator, *smart.BucketReplay, error) {
	mode, err := v.oneOf("auth", string(auth.ModeNone), string(auth.ModeToken), string(auth.ModeSMART))
	if err != nil {
		return nil, nil, err
	}
	modeEnv := v.defs["auth"].env
	byMode := map[auth.Mode][]string{
		auth.ModeToken: {"auth-token-file"},
		auth.ModeSMART: {"auth-smart-clients", "auth-smart-signing-key", "auth-smart-token-lifetime", "auth-smart-jwks-timeout"},
	}
	for m, names := range byMode {
		if m == auth.Mode(mode) {
			continue
		}
		for _, n := range names {
			if v.given(n) {
				return nil, nil, fmt.Errorf("%s is set but %s is %s: set %s=%s to use it", v.label(n), v.label("auth"), mode, modeEnv, m)
			}
		}
	}
	switch auth.Mode(mode) {
	case auth.ModeToken:
		file := v.str("auth-token-file")
		if file == "" {
			return nil, nil, fmt.Errorf("%s=token needs %s", v.label("auth"), v.label("auth-token-file"))
		}
		a, err := auth.LoadFile(file)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", v.label("auth-token-file"), err)
		}
		return a, nil, nil
	case auth.ModeSMART:
		return smartConfig(v, log)
	}
	return nil, nil, nil
}

// smartConfig builds the SMART Backend Services authorization of auth
// mode smart.
func smartConfig(v *values, log *slog.Logger) (*smart.Service, *smart.BucketReplay, error) {
	file := v.str("auth-smart-clients")
	if file == "" {
		return nil, nil, fmt.Errorf("%s=smart needs %s", v.label("auth"), v.label("auth-smart-clients"))
	}
	reg, err := smart.LoadRegistry(file)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", v.label("auth-smart-clients"), err)
	}
	var key crypto.Signer
	if v.given("auth-smart-signing-key") {
		if key, _, err = smartclient.LoadPrivateKey(v.str("auth-smart-signing-key")); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", v.label("auth-smart-signing-key"), err)
		}
		if _, err := smart.SigningAlgorithm(key); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", v.label("auth-smart-signing-key"), err)
		}
	}
	lifetime, err := v.duration("auth-smart-token-lifetime")
	if err != nil {
		return nil, nil, err
	}
	if lifetime < time.Second || lifetime > smart.MaxTokenLifetime {
		return nil, nil, fmt.Errorf("%s: %s is not between 1s and %s (SMART Backend Services: access tokens live at most five minutes)", v.label("auth-smart-token-lifetime"), lifetime, smart.MaxTokenLifetime)
	}
	jwksTimeout, err := v.duration("auth-smart-jwks-timeout")
	if err != nil {
		return nil, nil, err
	}
	replay := &smart.BucketReplay{AnyTenantBase: fhirstore.DefaultTenant}
	svc, err := smart.New(smart.Config{Clients: reg, Replay: replay, SigningKey: key, TokenLifetime: lifetime, JWKSTimeout: jwksTimeout, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return svc, replay, nil
}

// bindReplay points the replay records at the store's tenant buckets and
// checks that every client's tenant has one (an unmapped tenant in bucket
// tenancy mode would fail every token request of that client).
func bindReplay(v *values, replay *smart.BucketReplay, svc server.Authenticator, st *fhirstore.Store, log *slog.Logger) error {
	replay.Bucket = st.TenantBucket
	s, ok := svc.(*smart.Service)
	if !ok {
		return nil
	}
	for _, c := range s.Clients() {
		tenant := c.Tenant
		if tenant == auth.AnyTenant {
			tenant = replay.AnyTenantBase
		}
		if _, err := st.TenantBucket(tenant); err != nil {
			return fmt.Errorf("%s: client %q: its assertion ids are kept in the base of tenant %q: %w", v.label("auth-smart-clients"), c.ID, tenant, err)
		}
	}
	if !v.given("auth-smart-signing-key") {
		log.Warn("auth smart without a signing key: access tokens are signed by a key made at start-up and are valid at this process only; give every replica the same key with " + v.defs["auth-smart-signing-key"].env)
	}
	if !v.given("base-url") {
		log.Warn("auth smart without a base URL: the token endpoint URL (the audience of client assertions) is taken from each request's Host header; set " + v.defs["base-url"].env + " to the public URL")
	}
	return nil
}
