package config

import (
	"net/netip"
	"testing"
)

// Any entry and any target: no panic; a canonical target parses to
// itself, so that every spelling of a target is one key; and an address
// literal is never matched by a name pattern.
func FuzzAllowList(f *testing.F) {
	for _, s := range []string{"10.1.2.*:6379", "[fd00::/64]:*", `\[fd00::1\]:1`, "*.a.b:1", "redis-*.x:2", "10.0.0.0/8:*", "[:1"} {
		f.Add(s, "redis://10.1.2.3:6379/0")
	}
	f.Add("*.redis.example:6379", "rediss://A.Redis.Example.:6379/15")
	f.Add("x:1", "redis://[::ffff:10.0.0.1]:1/0")
	f.Fuzz(func(t *testing.T, entry, target string) {
		a, err := ParseAllowList([]string{entry})
		pt, terr := ParseTarget(target)
		if terr == nil {
			again, err := ParseTarget(pt.Canonical)
			if err != nil || again != pt {
				t.Fatalf("%q -> %q -> %+v %v", target, pt.Canonical, again, err)
			}
		}
		if err != nil || terr != nil {
			return
		}
		if pt.Addr.IsValid() {
			_ = a.AllowsAddr(pt.Addr, pt.Port)
			if a.MatchesName(pt.Host, pt.Port) {
				t.Fatalf("name pattern %q matched address %s", entry, pt.Host)
			}
			return
		}
		_ = a.MatchesName(pt.Host, pt.Port)
		_ = a.AllowsAddrByName(netip.MustParseAddr("10.0.0.1"), pt.Port)
	})
}
