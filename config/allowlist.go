package config

// The /probe allow-list. Entries are structural, not text globs: an
// address entry matches only addresses (the ones the exporter resolved and
// will dial), and a name pattern matches whole DNS labels, so that
// 10.1.2.3.evil.example is neither "an address in 10.1.2.*" nor "a name
// under *.example" unless the operator listed it so.

import (
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// AllowList is a parsed --probe.allowed-targets.
type AllowList struct {
	entries []allowEntry
}

type allowEntry struct {
	raw string
	// port 0 is any port.
	port int
	// Exactly one of the three kinds below is set.
	prefix netip.Prefix // an address (a /32 or /128) or a CIDR range
	octets *[4]int      // IPv4 octets, -1 for *: the old 10.1.2.*-style entry
	labels []string     // a host-name pattern, one element per DNS label
}

// ParseAllowList parses allow-list entries (see docs/probe-allow-list.md).
func ParseAllowList(entries []string) (*AllowList, error) {
	a := &AllowList{}
	for _, raw := range entries {
		e, err := parseAllowEntry(raw)
		if err != nil {
			return nil, fieldErr("probe.allowed-targets", "%q: %v", raw, err)
		}
		a.entries = append(a.entries, e)
	}
	return a, nil
}

// Empty says /probe is off.
func (a *AllowList) Empty() bool { return a == nil || len(a.entries) == 0 }

func parseAllowEntry(raw string) (allowEntry, error) {
	e := allowEntry{raw: raw}
	s := strings.ToLower(strings.TrimSpace(raw))
	var host, port string
	switch {
	case strings.HasPrefix(s, "["), strings.HasPrefix(s, `\[`):
		// IPv6, bracketed; `\[...\]` is how the glob syntax spelled it.
		s = strings.Replace(strings.Replace(s, `\[`, "[", 1), `\]`, "]", 1)
		end := strings.Index(s, "]")
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return e, fmt.Errorf("an IPv6 entry is [address]:port or [address/bits]:port")
		}
		host, port = s[1:end], s[end+2:]
		p, err := parsePrefix(host)
		if err != nil || !strings.Contains(host, ":") {
			return e, fmt.Errorf("%q is not an IPv6 address or range", host)
		}
		e.prefix = p
	default:
		i := strings.LastIndex(s, ":")
		if i < 0 {
			return e, fmt.Errorf("not host:port (the port may be *)")
		}
		host, port = s[:i], s[i+1:]
		if strings.Contains(host, ":") {
			return e, fmt.Errorf("an IPv6 entry needs brackets: [fd00::1]:6379 or [fd00::/64]:6379")
		}
		if err := e.parseHost(host); err != nil {
			return e, err
		}
	}
	if port != "*" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return e, fmt.Errorf("the port must be 1-65535 or * (globs within a port are no longer accepted)")
		}
		e.port = n
	}
	return e, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p.Addr().Zone() != "" {
			return p, fmt.Errorf("zones are not accepted")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zones are not accepted")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (e *allowEntry) parseHost(host string) error {
	if host == "" {
		return fmt.Errorf("no host")
	}
	if p, err := parsePrefix(host); err == nil {
		e.prefix = p
		return nil
	} else if strings.Contains(host, "/") {
		return fmt.Errorf("%q is not a CIDR range: %v", host, err)
	}
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	numeric, digit := true, false
	for _, l := range labels {
		if strings.Trim(l, "0123456789*") != "" {
			numeric = false
		}
		digit = digit || strings.ContainsAny(l, "0123456789")
	}
	numeric = numeric && digit
	if numeric {
		// An address pattern: four octets, each a number or *. It matches
		// addresses only, never a name that begins with them.
		if len(labels) != 4 {
			return fmt.Errorf("%q is neither an IPv4 address, a range (10.1.2.0/24) nor four octets with * (10.1.2.*)", host)
		}
		var o [4]int
		for i, l := range labels {
			if l == "*" {
				o[i] = -1
				continue
			}
			n, err := strconv.Atoi(l)
			if err != nil || n > 255 || strconv.Itoa(n) != l {
				return fmt.Errorf("%q: octet %q must be 0-255 or a whole *; for other ranges write CIDR (10.1.2.0/25)", host, l)
			}
			o[i] = n
		}
		e.octets = &o
		return nil
	}
	literal := false
	for _, l := range labels {
		if l == "" {
			return fmt.Errorf("%q has an empty DNS label", host)
		}
		if len(l) > 63 {
			return fmt.Errorf("%q has a DNS label longer than 63 bytes", host)
		}
		if strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-_*") != "" {
			return fmt.Errorf("%q: a host-name pattern has letters, digits, - and _ in each label, and * (globs such as ? and [] are no longer accepted)", host)
		}
		if strings.Trim(l, "*") != "" {
			literal = true
		}
	}
	if !literal {
		return fmt.Errorf("%q matches any name: list the names or the addresses (0.0.0.0/0 and [::/0] match any address)", host)
	}
	e.labels = labels
	return nil
}

// Special addresses are never dialled for a name that only a name pattern
// admits: a name is the operator's, but what it resolves to may be written
// by whoever can write to that zone (a tenant's DNS record, a Kubernetes
// Endpoints object). Such an address is reachable only through an address
// entry that covers it.
func specialAddr(a netip.Addr) bool {
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified() || !a.IsValid()
}

// AllowsAddr says whether an address entry admits addr on port.
func (a *AllowList) AllowsAddr(addr netip.Addr, port int) bool {
	addr = addr.Unmap().WithZone("")
	for _, e := range a.entries {
		if e.port != 0 && e.port != port {
			continue
		}
		switch {
		case e.prefix.IsValid():
			if e.prefix.Contains(addr) {
				return true
			}
		case e.octets != nil:
			if addr.Is4() && octetsMatch(e.octets, addr.As4()) {
				return true
			}
		}
	}
	return false
}

func octetsMatch(p *[4]int, b [4]byte) bool {
	for i, o := range p {
		if o >= 0 && o != int(b[i]) {
			return false
		}
	}
	return true
}

// AllowsAddrByName says whether addr, resolved from a name that a name
// pattern admits, may be dialled: any address but the special ones, which
// need an address entry.
func (a *AllowList) AllowsAddrByName(addr netip.Addr, port int) bool {
	return !specialAddr(addr.Unmap()) || a.AllowsAddr(addr, port)
}

// MatchesName says whether a host-name pattern admits name on port. name
// is lowercase; a final dot is ignored. * in a label matches within that
// label only: *.redis.example matches a.redis.example, not a.b.redis.example.
func (a *AllowList) MatchesName(name string, port int) bool {
	labels := strings.Split(strings.TrimSuffix(name, "."), ".")
	for _, e := range a.entries {
		if e.labels == nil || (e.port != 0 && e.port != port) || len(e.labels) != len(labels) {
			continue
		}
		ok := true
		for i, p := range e.labels {
			if labels[i] == "" {
				ok = false
				break
			}
			// Neither side holds '/', '?', '[' or '\', so path.Match's *
			// is a glob within the label, nothing more.
			if m, _ := path.Match(p, labels[i]); !m {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// AnyAddrEntry says whether some address entry could admit an address on
// port, so that a name no pattern admits is worth resolving at all.
func (a *AllowList) AnyAddrEntry(port int) bool {
	for _, e := range a.entries {
		if e.labels == nil && (e.port == 0 || e.port == port) {
			return true
		}
	}
	return false
}
