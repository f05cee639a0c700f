package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"fhirbucket/auth"
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
	cfg, err := serverConfig(v)
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
	fh, err := server.New(cfg)
	if err != nil {
		return err
	}
	// /metrics is served at the root next to /healthz; requests are
	// labelled by the FHIR interaction of the route the server matched,
	// never by tenant or id.
	h := m.WithEndpoint(m.Middleware(fh))

	addr := v.str("addr")
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
	log.Info("listening", "addr", ln.Addr().String(), "storage", be.desc,
		"tenant_routing", cfg.TenantRouting.String(), "base_path", cfg.BasePath, "version", softwareVersion(),
		"auth", authModeOf(cfg.Auth))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
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

func authModeOf(a *auth.Authenticator) auth.Mode {
	if a == nil {
		return auth.ModeNone
	}
	return auth.ModeToken
}

// serverConfig reads the HTTP settings into a server.Config (without the
// store).
func serverConfig(v *values) (server.Config, error) {
	var cfg server.Config
	routing, err := v.oneOf("tenant-routing", "header", "path", "both")
	if err != nil {
		return cfg, err
	}
	cfg.TenantRouting, _ = server.ParseTenantRouting(routing)
	if cfg.MaxBodyBytes, err = v.positiveInt("max-body-bytes"); err != nil {
		return cfg, err
	}
	cfg.BaseURL, cfg.BasePath = v.str("base-url"), v.str("base-path")
	if _, err := server.ParseBaseURL(cfg.BaseURL); err != nil {
		return cfg, fmt.Errorf("%s: %w", v.label("base-url"), err)
	}
	if _, err := server.CleanBasePath(cfg.BasePath); err != nil {
		return cfg, fmt.Errorf("%s: %w", v.label("base-path"), err)
	}
	if cfg.Auth, err = authConfig(v); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// authConfig reads the access-control settings: nil for auth none, the
// loaded token file for auth token. A token file with auth none is a
// contradiction, not a silent no-op.
func authConfig(v *values) (*auth.Authenticator, error) {
	mode, err := v.oneOf("auth", string(auth.ModeNone), string(auth.ModeToken))
	if err != nil {
		return nil, err
	}
	file := v.str("auth-token-file")
	if auth.Mode(mode) == auth.ModeNone {
		if file != "" {
			return nil, fmt.Errorf("%s is set but %s is none: set %s=token to use it", v.label("auth-token-file"), v.label("auth"), v.defs["auth"].env)
		}
		return nil, nil
	}
	if file == "" {
		return nil, fmt.Errorf("%s=token needs %s", v.label("auth"), v.label("auth-token-file"))
	}
	a, err := auth.LoadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v.label("auth-token-file"), err)
	}
	return a, nil
}
