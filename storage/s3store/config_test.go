package s3store

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestConfigResolve(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name      string
		cfg       Config
		awsRegion string // AWS_REGION
		wantErr   string // ConfigError.Field; "" means valid
		want      resolved
	}{
		{"aws with region", Config{Region: "eu-west-1"}, "", "",
			resolved{region: "eu-west-1", pathStyle: false}},
		{"aws region from env", Config{}, "ap-south-1", "",
			resolved{region: "ap-south-1"}},
		{"aws explicit region wins over env", Config{Region: "eu-west-1"}, "ap-south-1", "",
			resolved{region: "eu-west-1"}},
		{"aws without region", Config{}, "", "Region", resolved{}},
		{"aws path style on request", Config{Region: "eu-west-1", ForcePathStyle: &yes}, "", "",
			resolved{region: "eu-west-1", pathStyle: true}},
		{"aws rejects allow_http", Config{Region: "eu-west-1", AllowHTTP: true}, "", "AllowHTTP", resolved{}},
		{"endpoint https defaults", Config{EndpointURL: "https://s3.example.com"}, "", "",
			resolved{region: "us-east-1", endpoint: "https://s3.example.com", pathStyle: true}},
		{"endpoint region from env", Config{EndpointURL: "https://s3.example.com:9000/"}, "eu-central-1", "",
			resolved{region: "eu-central-1", endpoint: "https://s3.example.com:9000", pathStyle: true}},
		{"endpoint virtual host on request", Config{EndpointURL: "https://s3.example.com", ForcePathStyle: &no}, "", "",
			resolved{region: "us-east-1", endpoint: "https://s3.example.com", pathStyle: false}},
		{"endpoint http allowed", Config{EndpointURL: "http://127.0.0.1:9000", AllowHTTP: true}, "", "",
			resolved{region: "us-east-1", endpoint: "http://127.0.0.1:9000", pathStyle: true}},
		{"endpoint http refused", Config{EndpointURL: "http://127.0.0.1:9000"}, "", "AllowHTTP", resolved{}},
		{"endpoint blank", Config{EndpointURL: "   "}, "", "EndpointURL", resolved{}},
		{"endpoint no scheme", Config{EndpointURL: "127.0.0.1:9000"}, "", "EndpointURL", resolved{}},
		{"endpoint host only", Config{EndpointURL: "minio.local"}, "", "EndpointURL", resolved{}},
		{"endpoint ftp", Config{EndpointURL: "ftp://minio.local"}, "", "EndpointURL", resolved{}},
		{"endpoint without host", Config{EndpointURL: "https://"}, "", "EndpointURL", resolved{}},
		{"endpoint port only", Config{EndpointURL: "https://:9000"}, "", "EndpointURL", resolved{}},
		{"endpoint garbage", Config{EndpointURL: "ht!tp://%zz"}, "", "EndpointURL", resolved{}},
		{"endpoint bad port", Config{EndpointURL: "https://minio.local:99999"}, "", "EndpointURL", resolved{}},
		{"endpoint with credentials", Config{EndpointURL: "https://user:pw@minio.local"}, "", "EndpointURL", resolved{}},
		{"endpoint with query", Config{EndpointURL: "https://minio.local/?x=1"}, "", "EndpointURL", resolved{}},
		{"negative attempts", Config{Region: "eu-west-1", MaxAttempts: -1}, "", "MaxAttempts", resolved{}},
		{"negative pool", Config{Region: "eu-west-1", MaxIdleConnsPerHost: -1}, "", "MaxIdleConnsPerHost", resolved{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.resolve(func(k string) string {
				if k == "AWS_REGION" {
					return tc.awsRegion
				}
				return ""
			})
			if tc.wantErr != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Field != tc.wantErr || !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("error %v, want a *ConfigError for %s matching ErrInvalidConfig", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %q does not name %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.region != tc.want.region || got.endpoint != tc.want.endpoint || got.pathStyle != tc.want.pathStyle {
				t.Errorf("resolved %+v, want region %q endpoint %q pathStyle %v", got, tc.want.region, tc.want.endpoint, tc.want.pathStyle)
			}
			if got.maxAttempts != DefaultMaxAttempts || got.maxIdle != DefaultMaxIdleConnsPerHost {
				t.Errorf("defaults not applied: %+v", got)
			}
		})
	}
}

// FuzzEndpointURL checks that any EndpointURL either fails with a
// *ConfigError or resolves to an absolute http(s) URL with a host.
func FuzzEndpointURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:9000", "https://s3.example.com/", "minio:9000", "https://", "http://[::1]:9000", "https://a:b@c", "HTTP://X", "http://x:0", "%", ""} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, endpoint string, allowHTTP bool) {
		r, err := Config{EndpointURL: endpoint, AllowHTTP: allowHTTP}.resolve(func(string) string { return "" })
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not a *ConfigError matching ErrInvalidConfig", err)
			}
			return
		}
		if endpoint == "" {
			t.Fatal("an empty endpoint with no region must be rejected")
		}
		u, perr := url.Parse(r.endpoint)
		if perr != nil || (u.Scheme != "https" && !(allowHTTP && u.Scheme == "http")) || u.Hostname() == "" {
			t.Fatalf("accepted %q as %q", endpoint, r.endpoint)
		}
		if r.region != DefaultEndpointRegion || !r.pathStyle {
			t.Fatalf("endpoint defaults not applied: %+v", r)
		}
	})
}
