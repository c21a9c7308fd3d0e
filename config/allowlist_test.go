package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAllowListSyntax(t *testing.T) {
	for raw, want := range map[string]string{
		"10.1.2.3:6379": "", "10.1.2.0/24:6379": "", "10.1.2.*:6379": "", "10.*.*.*:*": "",
		"[fd00::1]:6379": "", "[fd00::/64]:6379": "", `\[fd00::1\]:6379`: "", "[::ffff:10.0.0.1]:1": "",
		"*.redis.example.com:6379": "", "redis-*.apps.internal:6379": "", "redis.example.com.:*": "",
		"nocolon":           "not host:port",
		"fd00::1:6379":      "brackets",
		"[fd00::1:6379":     "IPv6 entry",
		"[10.0.0.1]:6379":   "not an IPv6",
		"10.1.2.1*:6379":    "octet",
		"10.1.2:6379":       "four octets",
		"10.1.2.300:6379":   "octet",
		"10.1.2.0/33:6379":  "CIDR",
		"redis-?.a:6379":    "no longer accepted",
		"redis-[12].a:6379": "no longer accepted",
		"a..b:6379":         "empty DNS label",
		"*:6379":            "matches any name",
		"*.*:6379":          "matches any name",
		"10.0.0.1:63*":      "port",
		"10.0.0.1:0":        "port",
		"10.0.0.1:":         "port",
		":6379":             "no host",
	} {
		_, err := ParseAllowList([]string{raw})
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", raw, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "probe.allowed-targets") {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}

// The old glob entries keep their meaning for addresses, and lose it for
// names that merely begin like an address or cross a label.
func TestAllowListMatch(t *testing.T) {
	a, err := ParseAllowList([]string{"10.1.2.*:6379", "10.9.0.0/16:*", "[fd00::/64]:6380", "*.redis.example.com:6379",
		"redis-*.apps.internal:6379", "127.0.0.5:6379"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		port int
		want bool
	}{
		{"10.1.2.3", 6379, true}, {"10.1.2.3", 6380, false}, {"10.1.3.3", 6379, false},
		{"10.9.200.1", 1, true}, {"10.10.0.1", 1, false},
		{"fd00::5", 6380, true}, {"fd00:0:0:1::5", 6380, false}, {"fd00::5", 6379, false},
		{"::ffff:10.1.2.3", 6379, true},
		{"127.0.0.5", 6379, true}, {"127.0.0.6", 6379, false},
	} {
		if got := a.AllowsAddr(netip.MustParseAddr(tc.addr), tc.port); got != tc.want {
			t.Errorf("AllowsAddr(%s, %d) = %v", tc.addr, tc.port, got)
		}
	}
	for _, tc := range []struct {
		name string
		port int
		want bool
	}{
		{"a.redis.example.com", 6379, true}, {"a.redis.example.com.", 6379, true}, {"a.redis.example.com", 6380, false},
		{"a.b.redis.example.com", 6379, false}, {"redis.example.com", 6379, false},
		{"a.redis.example.com.evil.example", 6379, false},
		{"redis-1.apps.internal", 6379, true}, {"redis-1.x.apps.internal", 6379, false}, {"redis.apps.internal", 6379, false},
		// The review's case: a name that begins like an allowed address.
		{"10.1.2.3.evil.example", 6379, false}, {"10.1.2.3", 6379, false},
	} {
		if got := a.MatchesName(tc.name, tc.port); got != tc.want {
			t.Errorf("MatchesName(%s, %d) = %v", tc.name, tc.port, got)
		}
	}
	// A name a pattern admits still never reaches loopback or link-local
	// (cloud metadata) through it; an address entry can still allow one.
	for addr, want := range map[string]bool{"10.200.0.1": true, "127.0.0.1": false, "169.254.169.254": false, "::1": false,
		"fe80::1": false, "0.0.0.0": false, "224.0.0.1": false, "::ffff:127.0.0.1": false, "127.0.0.5": true} {
		if got := a.AllowsAddrByName(netip.MustParseAddr(addr), 6379); got != want {
			t.Errorf("AllowsAddrByName(%s) = %v", addr, got)
		}
	}
	if !a.AnyAddrEntry(1) || (&AllowList{}).AnyAddrEntry(1) {
		t.Error("AnyAddrEntry")
	}
	names, _ := ParseAllowList([]string{"*.x.example:6379"})
	if names.AnyAddrEntry(6379) {
		t.Error("a name pattern is no address entry")
	}
}
