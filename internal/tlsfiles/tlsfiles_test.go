package tlsfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Errors name the flag of the file at fault and never quote the file's
// contents, which for a key is a secret.
func TestErrorsNameTheFlagNotTheContents(t *testing.T) {
	dir := t.TempDir()
	secret := "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    *Files
		want string
	}{
		{&Files{Flag: "--redis", CAFile: bad}, "--redis.tls-ca-file: no PEM certificate in"},
		{&Files{Flag: "--rabbitmq", CAFile: filepath.Join(dir, "missing")}, "--rabbitmq.tls-ca-file:"},
		{&Files{Flag: "--rabbitmq", CertFile: bad, KeyFile: bad}, "--rabbitmq.tls-cert-file/--rabbitmq.tls-key-file:"},
	} {
		_, _, err := tc.f.Load()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want prefix %q", tc.f.Flag, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("error quotes the file: %v", err)
		}
	}
}

// A bad CA file is never cached as good, and an unchanged configuration is
// served from the cache. (Rotation to a new certificate is tested through
// the Redis reader in test/topology.)
func TestCachesOnlyGoodFiles(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &Files{Flag: "--redis", CAFile: ca}
	if _, _, err := f.Load(); err == nil {
		t.Fatal("a CA file without a certificate was accepted")
	}
	// No CA file at all: the system roots, cached.
	f2 := &Files{Flag: "--redis"}
	r1, c1, err := f2.Load()
	if err != nil || c1 != nil {
		t.Fatal(err, c1)
	}
	if r2, _, _ := f2.Load(); r2 != r1 {
		t.Error("an unchanged configuration was parsed again")
	}
}
