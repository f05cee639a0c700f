package s3store

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"fhirbucket/storage"
)

// DefaultEndpointRegion is the signing region used in endpoint mode when
// neither Config.Region nor AWS_REGION is set. S3-compatible servers such as
// MinIO and versitygw accept it unless configured otherwise.
const DefaultEndpointRegion = "us-east-1"

// DefaultMaxAttempts is the number of attempts (first try plus retries) per
// request when Config.MaxAttempts is 0.
const DefaultMaxAttempts = 5

// DefaultMaxIdleConnsPerHost is the size of the keep-alive pool when
// Config.MaxIdleConnsPerHost is 0. It is large because the server and the
// bulk jobs issue many small requests in parallel to a single host, and a
// small pool (Go's default is 2) turns every burst into TCP+TLS handshakes.
const DefaultMaxIdleConnsPerHost = 256

// Config selects and tunes the S3 connection. The zero value is AWS mode
// with the region taken from AWS_REGION.
//
// There are two modes:
//
//   - AWS mode (EndpointURL empty): the SDK's default endpoint resolution,
//     HTTPS only, virtual-hosted-style addressing. Region comes from Region,
//     else the AWS_REGION environment variable, else New fails.
//   - Endpoint mode (EndpointURL set): an S3-compatible server at that URL.
//     Path-style addressing unless ForcePathStyle says otherwise, plain
//     HTTP only with AllowHTTP, region defaulting to DefaultEndpointRegion.
//
// Credentials always come from the SDK's standard provider chain
// (environment, shared config files, web identity, container and instance
// roles) unless Credentials is set by code (tests do).
type Config struct {
	// Region is the signing region ("eu-west-1"). Default: AWS_REGION; in
	// endpoint mode then DefaultEndpointRegion.
	Region string
	// EndpointURL is the base URL of an S3-compatible server
	// ("http://127.0.0.1:9000"). Empty selects AWS mode.
	EndpointURL string
	// ForcePathStyle selects path-style addressing (http://host/bucket/key)
	// instead of virtual-hosted style (http://bucket.host/key). nil means
	// true in endpoint mode and false in AWS mode.
	ForcePathStyle *bool
	// AllowHTTP permits an http:// EndpointURL. Without it only https:// is
	// accepted, so credentials are never sent in clear text by accident.
	AllowHTTP bool
	// MaxAttempts is the number of attempts per request, retries included.
	// 0 means DefaultMaxAttempts; 1 disables retries.
	MaxAttempts int
	// MaxBackoff caps the delay between two attempts. 0 means the SDK's
	// default (20s); retries start at 50ms (1s after throttling) and double.
	MaxBackoff time.Duration
	// MaxIdleConnsPerHost sizes the keep-alive connection pool. 0 means
	// DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
	// Credentials overrides the standard provider chain. nil (the default,
	// and the only value the command line can produce) uses the chain.
	Credentials aws.CredentialsProvider
	// Observe, when set, is called after every wire request (each retry
	// attempt counts) with its operation, outcome (see Outcome* constants)
	// and duration. It must be cheap and safe for concurrent use; it is the
	// hook for request metrics.
	Observe func(op storage.Op, outcome string, d time.Duration)
}

// ErrInvalidConfig matches every configuration error (errors.Is); the
// error is a *ConfigError naming the setting at fault.
var ErrInvalidConfig = errors.New("s3store: invalid configuration")

// ConfigError reports an unusable Config. Field is the name of the Config
// field at fault ("EndpointURL", "Region", ...), so that a caller filling
// Config from its own settings can name its setting (errors.As) without
// reading the message. It matches ErrInvalidConfig with errors.Is.
type ConfigError struct {
	// Field is the Config field at fault: the one whose value is wrong, or
	// the one to set when a combination of fields is refused.
	Field string
	// Err says what is wrong with it.
	Err error
}

func (e *ConfigError) Error() string { return "s3store: invalid " + e.Field + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *ConfigError) Unwrap() error { return e.Err }

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// configErr returns a *ConfigError for field with a formatted reason.
func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// resolved is the validated, defaulted form of Config that New uses.
type resolved struct {
	region      string
	endpoint    string // "" in AWS mode
	pathStyle   bool
	maxAttempts int
	maxIdle     int
	maxBackoff  time.Duration
}

// Validate reports whether c is usable, without any network access. The
// error is a *ConfigError.
func (c Config) Validate() error {
	_, err := c.resolve(os.Getenv)
	return err
}

// resolve validates c and fills in defaults. getenv is os.Getenv outside
// tests.
func (c Config) resolve(getenv func(string) string) (resolved, error) {
	r := resolved{region: strings.TrimSpace(c.Region)}
	if r.region == "" {
		r.region = strings.TrimSpace(getenv("AWS_REGION"))
	}
	if c.MaxAttempts < 0 {
		return r, configErr("MaxAttempts", "must be >= 0, got %d", c.MaxAttempts)
	}
	r.maxAttempts = c.MaxAttempts
	if r.maxAttempts == 0 {
		r.maxAttempts = DefaultMaxAttempts
	}
	if c.MaxIdleConnsPerHost < 0 {
		return r, configErr("MaxIdleConnsPerHost", "must be >= 0, got %d", c.MaxIdleConnsPerHost)
	}
	if c.MaxBackoff < 0 {
		return r, configErr("MaxBackoff", "must be >= 0, got %s", c.MaxBackoff)
	}
	r.maxBackoff = c.MaxBackoff
	r.maxIdle = c.MaxIdleConnsPerHost
	if r.maxIdle == 0 {
		r.maxIdle = DefaultMaxIdleConnsPerHost
	}

	if c.EndpointURL == "" {
		// AWS mode.
		if c.AllowHTTP {
			return r, configErr("AllowHTTP", "only applies with an endpoint URL; AWS S3 is reached over https only")
		}
		if r.region == "" {
			return r, configErr("Region", "required in AWS mode (or the AWS_REGION environment variable); an endpoint URL selects an S3-compatible server instead")
		}
		if c.ForcePathStyle != nil {
			r.pathStyle = *c.ForcePathStyle
		}
		return r, nil
	}

	u, err := url.Parse(c.EndpointURL)
	if err != nil {
		return r, configErr("EndpointURL", "%q is not a URL: %w", c.EndpointURL, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return r, configErr("EndpointURL", "%q must start with http:// or https://", c.EndpointURL)
	case u.Host == "" || u.Hostname() == "":
		return r, configErr("EndpointURL", "%q has no host", c.EndpointURL)
	case u.User != nil:
		return r, configErr("EndpointURL", "must not contain credentials; use the standard AWS credential settings")
	case u.RawQuery != "" || u.Fragment != "":
		return r, configErr("EndpointURL", "%q must not have a query or fragment", c.EndpointURL)
	case u.Scheme == "http" && !c.AllowHTTP:
		return r, configErr("AllowHTTP", "not set, and the endpoint URL %q uses plain http: set it to permit that", c.EndpointURL)
	}
	if p := u.Port(); p != "" {
		if n, err := parsePort(p); err != nil || n == 0 {
			return r, configErr("EndpointURL", "%q has an invalid port", c.EndpointURL)
		}
	}
	r.endpoint = strings.TrimSuffix(u.String(), "/")
	if r.region == "" {
		r.region = DefaultEndpointRegion
	}
	r.pathStyle = true
	if c.ForcePathStyle != nil {
		r.pathStyle = *c.ForcePathStyle
	}
	return r, nil
}

func parsePort(p string) (int, error) {
	n := 0
	for _, ch := range p {
		if ch < '0' || ch > '9' {
			return 0, fmt.Errorf("bad port %q", p)
		}
		n = n*10 + int(ch-'0')
		if n > 65535 {
			return 0, fmt.Errorf("port %q out of range", p)
		}
	}
	return n, nil
}
