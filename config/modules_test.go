package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct{ in, canonical, hostport, err string }{
		{"redis://Redis-1.Internal:6379/0", "redis://redis-1.internal:6379/0", "redis-1.internal:6379", ""},
		{"redis://redis-1.internal.:6379/0", "redis://redis-1.internal:6379/0", "redis-1.internal:6379", ""},
		{"rediss://10.0.0.1:6380/15", "rediss://10.0.0.1:6380/15", "10.0.0.1:6380", ""},
		{"redis://10.0.0.1.:6380/15", "redis://10.0.0.1:6380/15", "10.0.0.1:6380", ""},
		{"redis://[::1]:6379/2", "redis://[::1]:6379/2", "[::1]:6379", ""},
		{"redis://[FD00:0:0::1]:6379/2", "redis://[fd00::1]:6379/2", "[fd00::1]:6379", ""},
		{"redis://[::ffff:10.0.0.1]:6379/2", "redis://10.0.0.1:6379/2", "10.0.0.1:6379", ""},
		{"redis://u:p@h:1/0", "", "", "credentials"},
		{"redis://h:1/0?password=p", "", "", "no query"},
		{"redis://h/0", "", "", "host and a port"},
		{"redis://h:0/0", "", "", "port must be"},
		{"redis://h:1", "", "", "database number"},
		{"redis://h:1/x", "", "", "database number"},
		{"redis://h:1/01", "", "", "database number"},
		{"redis://a..b:1/0", "", "", "DNS name"},
		{"redis://a%2Fb:1/0", "", "", ""},
		{"redis://[fe80::1%25eth0]:1/0", "", "", "zone"},
		{"unix:///s.sock", "", "", "redis://"},
		{"", "", "", "redis://"},
	} {
		pt, err := ParseTarget(tc.in)
		if tc.err != "" || tc.canonical == "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "p@") {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || pt.Canonical != tc.canonical || pt.HostPort() != tc.hostport {
			t.Errorf("%q: %q %q %v", tc.in, pt.Canonical, pt.HostPort(), err)
		}
	}
}

// An address with a root dot is that address, under the address rules:
// a name pattern never matches it.
func TestTargetAddressWithRootDot(t *testing.T) {
	pt, err := ParseTarget("redis://10.1.2.3.:6379/0")
	if err != nil || !pt.Addr.IsValid() || pt.Addr.String() != "10.1.2.3" {
		t.Fatalf("%+v %v", pt, err)
	}
	a, err := ParseAllowList([]string{"*.1.2.3:6379"})
	if err != nil {
		t.Fatal(err)
	}
	if a.MatchesName(pt.Host, pt.Port) {
		t.Errorf("a name pattern matched the address %s", pt.Host)
	}
}

func TestModules(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("mod-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(yml string) string {
		p := filepath.Join(dir, "c.yml")
		if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := load(t, nil, "--config.file", write(`
dramatiq: {namespace: top}
redis: {password_file: `+pw+`}
probe: {allowed_targets: ["10.0.0.*:6379"], idle_timeout: 1m, max_targets: 5}
modules:
  app1:
    redis: {password_file: `+pw+`, tls_ca_file: /ca.pem, databases: [3, 3, 40]}
    dramatiq: {namespace: app1, heartbeat_timeout: 30s, queues: [b, a]}
    database: {url: "postgres://u@db/app"}
  default: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Modules["app1"]
	if m == nil || m.Namespace != "app1" || m.HeartbeatTimeout != 30*time.Second || strings.Join(m.Queues, ",") != "a,b" ||
		m.RedisPassword != "mod-secret" || m.RedisTLS.CAFile != "/ca.pem" || m.DatabaseURL != "postgres://u@db/app" {
		t.Errorf("app1 = %+v", m)
	}
	// A module does not inherit the top-level broker's settings.
	d := c.Modules["default"]
	if d == nil || d.Namespace != DefaultNamespace || d.RedisPassword != "" || d.DiscoveryInterval != DefaultDiscoveryInterval {
		t.Errorf("default = %+v", d)
	}
	if !m.AllowsDB(40) || !m.AllowsDB(3) || m.AllowsDB(0) || !d.AllowsDB(0) || !d.AllowsDB(15) || d.AllowsDB(16) {
		t.Errorf("databases: %v %v", m.Databases, d.Databases)
	}
	if c.ProbeIdleTimeout != time.Minute || c.ProbeMaxTargets != 5 || len(c.ProbeAllowedTargets) != 1 {
		t.Errorf("probe settings: %v %v %v", c.ProbeIdleTimeout, c.ProbeMaxTargets, c.ProbeAllowedTargets)
	}
	p := c.ForProbe(m, "rediss://10.0.0.1:6379/0")
	if p.RedisURL != "rediss://10.0.0.1:6379/0" || p.Namespace != "app1" || p.RedisPassword != "mod-secret" || len(p.Sentinel.Addrs) != 0 {
		t.Errorf("ForProbe: %+v", p)
	}

	for yml, want := range map[string]string{
		"modules: {m: {redis: {url: 'redis://x:1/0'}}}":        "field url not found",
		"modules: {m: {redis: {sentinel_master: x}}}":          "field sentinel_master not found",
		"modules: {m: {dramatiq: {namespace: ''}}}":            "",
		"modules: {m: {dramatiq: {heartbeat_timeout: soon}}}":  "modules.m: dramatiq.heartbeat_timeout",
		"modules: {m: {dramatiq: {queues: ['not ok']}}}":       "modules.m: dramatiq.queues",
		"modules: {m: {redis: {password_file: /nonexistent}}}": "modules.m: redis.password_file",
		"modules: {m: {redis: {tls_cert_file: /c.pem}}}":       "modules.m: redis.tls_key_file",
		"probe: {allowed_targets: ['nocolon']}":                "probe.allowed_targets",
		"probe: {allowed_targets: ['[:1']}":                    "probe.allowed_targets",
		"probe: {max_targets: 0}":                              "probe.max_targets",
		"probe: {allowed_targets: ['redis-?.internal:6379']}":  "no longer accepted",
		"probe: {allowed_targets: ['10.0.0.1:63*']}":           "no longer accepted",
		"modules: {m: {redis: {databases: [-1]}}}":             "modules.m: redis.databases",
	} {
		_, err := load(t, nil, "--config.file", write(yml))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", yml, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", yml, err, want)
		}
	}
}
