package probe

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// trap is a listener that records every connection and byte it gets: the
// host a refused probe must never reach.
type trap struct {
	l     net.Listener
	mu    sync.Mutex
	conns int
	got   bytes.Buffer
}

func startTrap(t *testing.T, addr string) *trap {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("trap on %s: %v", addr, err)
	}
	tr := &trap{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tr.mu.Lock()
			tr.conns++
			tr.mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
					n, err := c.Read(buf)
					tr.mu.Lock()
					tr.got.Write(buf[:n])
					tr.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return tr
}

func (tr *trap) seen() (int, string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.conns, tr.got.String()
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// The allow-list against DNS the requester controls. The module has a
// password; a trap stands where a hostile name points, on the port the
// allow-list names, and must never see a byte (no HELLO, no AUTH), while
// a name that resolves to the allowed server is read through that very
// address.
func TestAllowListDNS(t *testing.T) {
	const password = "probe-dns-secret-7"
	r := testserver.StartRedis(t, "--requirepass", password)
	b := r.NewBroker(t, "app")
	b.Enqueue("q", 4, time.Now())
	port := strconv.Itoa(r.Port)
	// 127.0.0.66 plays the requester's host, on the Redis port and on the
	// port of the old-glob entry.
	evil := startTrap(t, "127.0.0.66:"+port)
	globPort := testserver.FreePort(t)
	evilGlob := startTrap(t, "127.0.0.66:"+strconv.Itoa(globPort))

	dns := testserver.StartDNS(t)
	dns.Set("127.0.1.5.evil.example", addrs("127.0.0.66"))
	dns.Set("good.internal.test", addrs("127.0.0.1"))
	dns.Set("bad.internal.test", addrs("127.0.0.66"))
	dns.Set("mixed.internal.test", addrs("127.0.0.1", "127.0.0.66"))
	// Rebinding: the check's query gets the allowed address, every later
	// query the requester's.
	dns.Set("rebind.internal.test", addrs("127.0.0.1"), addrs("127.0.0.66"))

	m := module("default", "app")
	m.RedisPassword = password
	base := &config.Config{ScrapeTimeout: 5 * time.Second, Environment: "test", Collectors: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(ctx, Options{
		// The README's old example shape: an address glob; and the one
		// allowed server.
		Allow:   allowList(t, "127.0.1.*:"+strconv.Itoa(globPort), "127.0.0.1:"+port),
		Modules: map[string]*config.Module{"default": m}, IdleTimeout: time.Minute, MaxTargets: 10,
		Build: build(base), Logger: testLogger(), Resolver: dns.Resolver(),
	})
	srv := httptest.NewServer(p)
	defer srv.Close()
	probeURL := func(host string, port string) string {
		return srv.URL + "/probe?" + url.Values{"target": {"redis://" + net.JoinHostPort(host, port) + "/0"}}.Encode()
	}
	ready := func(t *testing.T, u string) {
		t.Helper()
		fams, code, err := scrape(u)
		if err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d %v", u, code, err)
		}
		got := testserver.Samples(fams["dramatiq_queue_ready_messages"], map[string]string{"queue": "q"})
		if len(got) != 1 || got[0] != 4 {
			t.Errorf("%s: ready = %v, want [4]", u, got)
		}
	}
	refused := func(t *testing.T, u, why string) {
		t.Helper()
		code, body := testserver.Get(t, u)
		if code != http.StatusBadRequest || !strings.Contains(body, why) {
			t.Errorf("%s: %d %q, want 400 naming %q", u, code, body, why)
		}
		if strings.Contains(body, password) || strings.Contains(body, "127.0.0.66") {
			t.Errorf("%s: the answer holds the password or a resolved address: %q", u, body)
		}
	}

	t.Run("a name that begins like an allowed address", func(t *testing.T) {
		refused(t, probeURL("127.0.1.5.evil.example", strconv.Itoa(globPort)), "not allowed")
	})
	t.Run("a name resolving to the allowed address", func(t *testing.T) {
		ready(t, probeURL("good.internal.test", port))
	})
	t.Run("a name resolving to a disallowed address", func(t *testing.T) {
		refused(t, probeURL("bad.internal.test", port), "not allowed")
		refused(t, probeURL("mixed.internal.test", port), "not allowed")
	})
	t.Run("rebinding", func(t *testing.T) {
		// The check saw 127.0.0.1; any lookup at dial time would now get
		// the trap's address, so a probe served with the queue's numbers
		// and a silent trap mean the dial used the checked address.
		ready(t, probeURL("rebind.internal.test", port))
		if n := dns.Queries("rebind.internal.test"); n != 1 {
			t.Errorf("rebind.internal.test asked %d times, want 1 (the check only)", n)
		}
		// The next probe's check sees the new answer and refuses; the
		// target's client keeps dialling only what was admitted.
		refused(t, probeURL("rebind.internal.test", port), "not allowed")
	})
	t.Run("nothing reached the requester's host", func(t *testing.T) {
		for _, tr := range []*trap{evil, evilGlob} {
			if n, got := tr.seen(); n != 0 || got != "" {
				t.Errorf("trap %s: %d connections, %q", tr.l.Addr(), n, got)
			}
		}
	})
	t.Run("control: the trap would have seen the password", func(t *testing.T) {
		// The same module, with the trap's address allowed: the trap gets
		// the handshake with the password. This is what the cases above
		// would have sent.
		p2 := New(ctx, Options{
			Allow: allowList(t, "127.0.0.66:"+port), Modules: map[string]*config.Module{"default": m},
			IdleTimeout: time.Minute, MaxTargets: 10, Build: build(base), Logger: testLogger(), Resolver: dns.Resolver(),
		})
		rec := httptest.NewRecorder()
		p2.ServeHTTP(rec, httptest.NewRequest("GET", "/probe?"+url.Values{"target": {"redis://bad.internal.test:" + port + "/0"}}.Encode(), nil).
			WithContext(withTimeout(t, 3*time.Second)))
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, got := evil.seen(); strings.Contains(got, password) {
				break
			}
			if time.Now().After(deadline) {
				n, got := evil.seen()
				t.Fatalf("the trap saw %d connections, %q: the test could not see a leak", n, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Name patterns: whole labels, and no loopback or link-local address
// through a name (an address entry still allows one). Names no entry can
// admit are not even looked up.
func TestNamePatternDNS(t *testing.T) {
	dns := testserver.StartDNS(t)
	dns.Set("r1.redis.test", addrs("10.0.0.9", "fd00::9"))
	dns.Set("lo.redis.test", addrs("127.0.0.1"))
	dns.Set("meta.redis.test", addrs("169.254.169.254"))
	dns.Set("r1.x.redis.test", addrs("10.0.0.9"))
	p := New(context.Background(), Options{
		Allow: allowList(t, "*.redis.test:6379"), Modules: map[string]*config.Module{"default": module("default", "x")},
		IdleTimeout: time.Minute, MaxTargets: 1, Logger: testLogger(), Resolver: dns.Resolver(),
	})
	target := func(host string) config.ProbeTarget {
		pt, err := config.ParseTarget("redis://" + host + ":6379/0")
		if err != nil {
			t.Fatal(err)
		}
		return pt
	}
	got, err := p.admit(context.Background(), target("r1.redis.test"))
	if err != nil || len(got) != 2 || got[0] != netip.MustParseAddr("10.0.0.9") {
		t.Errorf("r1.redis.test: %v %v", got, err)
	}
	for _, host := range []string{"lo.redis.test", "meta.redis.test", "r1.x.redis.test", "nxdomain.redis.test"} {
		if got, err := p.admit(context.Background(), target(host)); err == nil {
			t.Errorf("%s admitted: %v", host, got)
		}
	}
	if n := dns.Queries("r1.x.redis.test"); n != 0 {
		t.Errorf("r1.x.redis.test, which no entry can admit, was looked up %d times", n)
	}
	// An address entry makes loopback reachable through the name.
	p.opts.Allow = allowList(t, "*.redis.test:6379", "127.0.0.0/8:6379")
	if got, err := p.admit(context.Background(), target("lo.redis.test")); err != nil || len(got) != 1 {
		t.Errorf("lo.redis.test with 127.0.0.0/8 listed: %v %v", got, err)
	}
}

// TLS to a name: the connection goes to the checked address, and the
// server's certificate is verified against the name: other.internal.test
// resolves to the same address, which the certificate names, and is
// still refused because the certificate does not name it.
func TestAllowListDNSTLS(t *testing.T) {
	ca := testserver.NewCA(t, "probe")
	r := testserver.StartRedisTLS(t, testserver.RedisTLS{CA: ca, Server: ca.Server("redis", "tls.internal.test", "127.0.0.1")})
	r.NewBroker(t, "app").Enqueue("q", 2, time.Now())
	dns := testserver.StartDNS(t)
	dns.Set("tls.internal.test", addrs("127.0.0.1"))
	dns.Set("other.internal.test", addrs("127.0.0.1"))

	m := module("default", "app")
	m.RedisTLS = config.RedisTLS{CAFile: ca.File}
	base := &config.Config{ScrapeTimeout: 5 * time.Second, Environment: "test", Collectors: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(ctx, Options{
		Allow: allowList(t, "127.0.0.1:*"), Modules: map[string]*config.Module{"default": m}, IdleTimeout: time.Minute, MaxTargets: 10,
		Build: build(base), Logger: testLogger(), Resolver: dns.Resolver(),
	})
	srv := httptest.NewServer(p)
	defer srv.Close()
	u := func(host string, port int) string {
		return srv.URL + "/probe?" + url.Values{"target": {"rediss://" + host + ":" + strconv.Itoa(port) + "/0"}}.Encode()
	}
	fams, code, err := scrape(u("tls.internal.test", r.Port))
	if err != nil || code != 200 {
		t.Fatalf("%d %v", code, err)
	}
	if got := testserver.Samples(fams["dramatiq_queue_ready_messages"], map[string]string{"queue": "q"}); len(got) != 1 || got[0] != 2 {
		t.Errorf("ready = %v, want [2]", got)
	}
	up := func(host string) float64 {
		fams, _, err := scrape(u(host, r.Port))
		if err != nil {
			t.Fatal(err)
		}
		return testserver.Samples(fams["dramatiq_redis_up"], nil)[0]
	}
	if v := up("tls.internal.test"); v != 1 {
		t.Errorf("by name: dramatiq_redis_up %v, want 1", v)
	}
	if v := up("other.internal.test"); v != 0 {
		t.Errorf("a name the certificate does not carry: dramatiq_redis_up %v, want 0", v)
	}
}
