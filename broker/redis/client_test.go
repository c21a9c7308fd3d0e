package redis

import (
	"strings"
	"testing"
)

func TestNewClientErrorsHideThePassword(t *testing.T) {
	for _, u := range []string{
		"redis://user:hunter2@host:notaport/0",
		"redis://user:hunter2@host:6379/notadb",
		"http://user:hunter2@host:6379/0",
	} {
		_, err := NewClient(ClientOptions{URL: u})
		if err == nil {
			t.Fatalf("%s: no error", RedactURL(u))
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error leaks the password: %v", err)
		}
	}
	for _, u := range []string{"redis://user:hunter2@host:6379/0", "unix:///run/redis.sock?db=1&password=hunter2"} {
		if got := RedactURL(u); strings.Contains(got, "hunter2") || !strings.Contains(got, "xxxxx") {
			t.Fatalf("RedactURL = %q", got)
		}
	}
}

func TestNewClientOptions(t *testing.T) {
	c, err := NewClient(ClientOptions{URL: "rediss://u:p@example:6380/3", Password: "override"})
	if err != nil {
		t.Fatal(err)
	}
	o := c.Options()
	// TLS is done by the exporter's own dialer (context-bound, files
	// reloaded), so go-redis's TLSConfig stays unset.
	if o.Password != "override" || o.DB != 3 || o.TLSConfig != nil || o.Dialer == nil || o.MaxRetries != 0 /* -1 normalised: no retries */ || o.DialerRetries != 1 || !o.ContextTimeoutEnabled {
		t.Fatalf("options: db=%d tls=%v dialer=%v retries=%d dialer=%d ctx=%v", o.DB, o.TLSConfig != nil, o.Dialer != nil, o.MaxRetries, o.DialerRetries, o.ContextTimeoutEnabled)
	}
}
