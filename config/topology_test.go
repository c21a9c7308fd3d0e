package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSentinelAndTLSSettings(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "sentinel-pw")
	if err := os.WriteFile(pw, []byte("s3ntinel-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "c.yml")
	yml := "redis:\n  url: rediss://redis.internal:6380/2\n  sentinel_addrs: [10.0.0.1:26379, '10.0.0.2:26379']\n  sentinel_master: mymaster\n" +
		"  sentinel_password_file: " + pw + "\n  sentinel_replica: true\n  tls_ca_file: /ca.pem\n  tls_cert_file: /c.pem\n  tls_key_file: /k.pem\n" +
		"  tls_server_name: redis.internal\n  tls_insecure_skip_verify: false\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load(t, nil, "--config.file", file)
	if err != nil {
		t.Fatal(err)
	}
	want := Sentinel{Addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"}, Master: "mymaster", Password: "s3ntinel-secret", Replica: true}
	if !reflect.DeepEqual(c.Sentinel, want) {
		t.Errorf("from the file: %+v", c.Sentinel)
	}
	if c.RedisTLS != (RedisTLS{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", ServerName: "redis.internal"}) {
		t.Errorf("TLS from the file: %+v", c.RedisTLS)
	}

	// The environment and flags win over the file.
	c, err = load(t, map[string]string{"REDIS_SENTINEL_ADDRS": "a:1,b:2", "REDIS_SENTINEL_MASTER": "other", "REDIS_SENTINEL_PASSWORD": "from-env"},
		"--config.file", file, "--redis.sentinel-addrs", "c:3")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Sentinel.Addrs, []string{"c:3"}) || c.Sentinel.Master != "other" || c.Sentinel.Password != "s3ntinel-secret" {
		t.Errorf("precedence: %+v", c.Sentinel)
	}
	c, err = load(t, map[string]string{"REDIS_SENTINEL_ADDRS": "a:1,b:2", "REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_PASSWORD": "from-env"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Sentinel.Addrs, []string{"a:1", "b:2"}) || c.Sentinel.Password != "from-env" {
		t.Errorf("environment: %+v", c.Sentinel)
	}
}

func TestSentinelAndTLSErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis.sentinel-addrs", "a:1"}, "--redis.sentinel-master: required"},
		{[]string{"--redis.sentinel-master", "m"}, "--redis.sentinel-addrs: required"},
		{[]string{"--redis.sentinel-replica"}, "needs --redis.sentinel-addrs"},
		{[]string{"--redis.sentinel-addrs", "a:1,nocolon", "--redis.sentinel-master", "m"}, `"nocolon" is not host:port`},
		{[]string{"--redis.sentinel-addrs", "a:99999", "--redis.sentinel-master", "m"}, "port must be 1-65535"},
		{[]string{"--redis.sentinel-addrs", "a:1", "--redis.sentinel-master", "m", "--redis.url", "unix:///s.sock"}, "Sentinel needs redis://"},
		{[]string{"--redis.tls-ca-file", "/ca.pem"}, "need a rediss://"},
		{[]string{"--redis.url", "rediss://h:1/0", "--redis.tls-cert-file", "/c.pem"}, "--redis.tls-key-file: required with --redis.tls-cert-file"},
		{[]string{"--redis.sentinel-password-file", "/nonexistent"}, "--redis.sentinel-password-file"},
	} {
		_, err := load(t, nil, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
