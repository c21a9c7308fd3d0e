package testserver

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// DNS is a tiny authoritative DNS server on loopback UDP that answers A
// and AAAA queries from a table the test sets, so that a test can make a
// name resolve to an address of its choice, or to a different one on each
// query (DNS rebinding). Names not in the table get NXDOMAIN.
type DNS struct {
	Addr string
	conn net.PacketConn

	mu      sync.Mutex
	answers map[string][][]netip.Addr
	queries map[string]int
}

// StartDNS starts the server; it stops with the test.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: c.LocalAddr().String(), conn: c, answers: map[string][][]netip.Addr{}, queries: map[string]int{}}
	go d.serve()
	t.Cleanup(func() { c.Close() })
	return d
}

// Set makes name answer each list in turn, one per A query (the AAAA
// query of the same lookup answers from the same list); the last list is
// repeated. Addresses of the other family are left out of each answer.
func (d *DNS) Set(name string, answers ...[]netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answers[strings.ToLower(strings.TrimSuffix(name, "."))] = answers
}

// Queries is how many A queries name has had.
func (d *DNS) Queries(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[strings.ToLower(strings.TrimSuffix(name, "."))]
}

// Resolver is a net.Resolver that asks only this server.
func (d *DNS) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "udp", d.Addr)
	}}
}

func (d *DNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := d.answer(buf[:n]); resp != nil {
			_, _ = d.conn.WriteTo(resp, from)
		}
	}
}

// answer builds the reply to one query: the header and question copied,
// then the addresses as answers with a TTL of 0, so nothing caches them.
func (d *DNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if l > 63 || i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	question := q[12 : i+5]
	name := strings.ToLower(strings.Join(labels, "."))

	d.mu.Lock()
	lists, ok := d.answers[name]
	var addrs []netip.Addr
	if ok {
		k := d.queries[name]
		if qtype == 1 {
			d.queries[name]++
		} else if k > 0 {
			k-- // the AAAA query of a lookup whose A query came first
		}
		addrs = lists[min(k, len(lists)-1)]
	}
	d.mu.Unlock()

	var ans []byte
	count := 0
	for _, a := range addrs {
		if (qtype == 1 && a.Is4()) || (qtype == 28 && a.Is6()) {
			rr := []byte{0xc0, 12, 0, byte(qtype), 0, 1, 0, 0, 0, 0}
			b := a.AsSlice()
			rr = binary.BigEndian.AppendUint16(rr, uint16(len(b)))
			ans = append(append(ans, rr...), b...)
			count++
		}
	}
	flags := uint16(0x8580) // response, authoritative, recursion desired and available
	if !ok {
		flags |= 3 // NXDOMAIN
	}
	out := make([]byte, 12, 12+len(question)+len(ans))
	copy(out, q[:2])
	binary.BigEndian.PutUint16(out[2:], flags)
	binary.BigEndian.PutUint16(out[4:], 1)
	binary.BigEndian.PutUint16(out[6:], uint16(count))
	return append(append(out, question...), ans...)
}
