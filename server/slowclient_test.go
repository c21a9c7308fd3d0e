package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// Sizes as shipped: main's defaults for --web.max-requests and
// --web.max-connections.
const (
	maxRequests    = 40
	maxConnections = 64
)

// guarded is the exporter's HTTP stack wired as main wires it: Route,
// MetricsHandler, the status API, NewHTTPServer with its Limiter, served
// by exporter-toolkit's ServeMultiple (with webConfig, TLS and basic auth
// apply).
type guarded struct {
	addr   string
	scheme string
	tls    *tls.Config
	user   string
	pass   string
	srv    *http.Server
	// cancel is the cancel of srv.BaseContext, for server.Shutdown.
	cancel context.CancelCauseFunc
}

// bigQueues names n queues of 200 bytes each: the answer of /metrics then
// grows by about 1.9 KB a queue, several megabytes at a few thousand
// queues, for far fewer Redis commands than that many short names.
func bigQueues(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("q%05d_%s", i, strings.Repeat("x", 193))
	}
	return out
}

func startGuarded(t *testing.T, r *testserver.Redis, queues []string, webConfig string, scrapeTimeout time.Duration) *guarded {
	t.Helper()
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: scrapeTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, broker.Options{Namespace: "dramatiq", Queues: queues, SkipDiscovery: true})
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "ci", Namespace: "dramatiq"}, collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	metrics := server.MetricsHandler(exp, prometheus.NewRegistry(), server.MetricsOptions{
		Timeout: scrapeTimeout, TimeoutOffset: 500 * time.Millisecond, MaxRequests: maxRequests, Logger: discard(),
	})
	src := server.NewStatusSource(server.StatusOptions{
		Exporter: exp, Thresholds: status.DefaultThresholds(), Timeout: scrapeTimeout, MaxRequests: maxRequests, Logger: discard(),
	})
	health := &server.Health{}
	health.SetReady(true)
	mux := http.NewServeMux()
	health.Register(mux)
	mux.Handle("/api/v1/status", src.APIHandler())
	mux.Handle("/", src.PageHandler())
	srv, lim := server.NewHTTPServer(server.Route("/metrics", metrics, mux), server.HTTPOptions{
		HandlerTimeout: scrapeTimeout, IdleTimeout: time.Minute, MaxConnections: maxConnections,
	})
	base, cancel := context.WithCancelCause(context.Background())
	srv.BaseContext = func(net.Listener) context.Context { return base }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	systemd := false
	flags := &web.FlagConfig{WebListenAddresses: &[]string{}, WebSystemdSocket: &systemd, WebConfigFile: &webConfig}
	errc := make(chan error, 1)
	go func() { errc <- web.ServeMultiple([]net.Listener{lim.Listener(l)}, srv, flags, discard()) }()
	t.Cleanup(func() {
		srv.Close()
		cancel(nil)
		<-errc
	})
	return &guarded{addr: l.Addr().String(), scheme: "http", srv: srv, cancel: cancel}
}

// dial opens a raw connection, over TLS when the server has it.
func (g *guarded) dial() (net.Conn, error) {
	c, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
	if err != nil || g.tls == nil {
		return c, err
	}
	tc := tls.Client(c, g.tls)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

func (g *guarded) auth() string {
	if g.user == "" {
		return ""
	}
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(g.user, g.pass)
	return "Authorization: " + req.Header.Get("Authorization") + "\r\n"
}

// scrapes is what a Prometheus-like scraper saw.
type scrapes struct {
	mu       sync.Mutex
	ok, fail int
	codes    map[string]int
	slowest  time.Duration
}

func (s *scrapes) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k, n := range s.codes {
		keys = append(keys, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(keys)
	return fmt.Sprintf("%d of %d succeeded (%s), slowest %s", s.ok, s.ok+s.fail, strings.Join(keys, ", "), s.slowest.Round(time.Millisecond))
}

// scrapeLike scrapes /metrics as Prometheus does, every interval until
// stop (one at a time: a late scrape delays the next), each with its
// timeout in X-Prometheus-Scrape-Timeout-Seconds and a client that gives
// up then. A scrape succeeds when it answers 200 with the whole
// exposition (its last family included).
func (g *guarded) scrapeLike(stop <-chan struct{}, interval, timeout time.Duration, last string) *scrapes {
	tr := &http.Transport{TLSClientConfig: g.tls, MaxIdleConnsPerHost: 4, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: timeout}
	s := &scrapes{codes: map[string]int{}}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			tr.CloseIdleConnections()
			return s
		case <-tick.C:
		}
		func() {
			req, _ := http.NewRequest("GET", g.scheme+"://"+g.addr+"/metrics", nil)
			req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", fmt.Sprint(timeout.Seconds()))
			if g.user != "" {
				req.SetBasicAuth(g.user, g.pass)
			}
			begin := time.Now()
			code, ok := "error", false
			resp, err := client.Do(req)
			if err == nil {
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				code = fmt.Sprint(resp.StatusCode)
				if err != nil {
					code += " cut"
				}
				ok = err == nil && resp.StatusCode == 200 && strings.Contains(string(body), last)
			}
			took := time.Since(begin)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.codes[code]++
			if ok {
				s.ok++
			} else {
				s.fail++
			}
			s.slowest = max(s.slowest, took)
		}()
	}
}

// attack runs n copies of one hostile client until stop; unless once,
// each copy opens a new connection whenever the server closes its last. It returns
// how long the server took, at most, to close an attacker's connection.
func (g *guarded) attack(t *testing.T, n int, once bool, stop <-chan struct{}, client func(c net.Conn, stop <-chan struct{})) (longest func() time.Duration, conns func() int64) {
	var mu sync.Mutex
	var worst time.Duration
	var opened atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := g.dial()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				opened.Add(1)
				begin := time.Now()
				client(c, stop)
				c.Close()
				// Still open at stop counts too: it was held at least that long.
				mu.Lock()
				worst = max(worst, time.Since(begin))
				mu.Unlock()
				if once {
					<-stop
					return
				}
				select {
				case <-stop:
				default:
					// Enough to keep the pressure on; without a pause, POSTs
					// answered at once (and TLS handshakes, both ends in this
					// process under -race) would only load the machine.
					time.Sleep(250 * time.Millisecond)
				}
			}
		}()
	}
	t.Cleanup(wg.Wait)
	return func() time.Duration { wg.Wait(); mu.Lock(); defer mu.Unlock(); return worst }, opened.Load
}

// closedByServer waits until the server closes c, reading nothing of it:
// a write fails once the server has closed the connection. It returns
// false at stop.
func closedByServer(c net.Conn, stop <-chan struct{}, every time.Duration) bool {
	for {
		select {
		case <-stop:
			return false
		case <-time.After(every):
		}
		// A blank line before a request is allowed (RFC 9112 2.2); after
		// the server closed, the write fails with a reset.
		c.SetWriteDeadline(time.Now().Add(every))
		if _, err := c.Write([]byte("\r\n")); err != nil && !os.IsTimeout(err) {
			return true
		}
	}
}

// smallReadBuffer makes a client's kernel take as little of an answer as
// it can, so that not reading blocks the server's writes early.
func smallReadBuffer(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
}

// While each kind of slow client runs against the real stack (a real
// Redis, answers of several megabytes), Prometheus-like scrapes every
// 200 ms keep succeeding, and the server lets each slow connection go
// within its deadlines. Run against the server before the guard, the POSTs
// made 40 of 40 scrapes answer 503, the non-readers 40 of 40, and the
// header tricklers delayed scrapes by 8.9 s.
func TestSlowClientsDoNotStarveScrapes(t *testing.T) {
	r := testserver.StartRedis(t)
	// Non-readers need an answer larger than the socket buffers Linux
	// grows (4 MiB) to block the server; the others a quick scrape, so
	// that a delay they cause stands out on a slow machine.
	big, small := bigQueues(2600), bigQueues(20)
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plain", false}, {"tls+basic-auth", true}} {
		t.Run(tc.name, func(t *testing.T) {
			webConfig := ""
			if tc.tls {
				webConfig = tlsWebConfig(t)
			}
			start := func(queues []string) *guarded {
				g := startGuarded(t, r, queues, webConfig, 10*time.Second)
				if tc.tls {
					g.scheme, g.tls, g.user, g.pass = "https", &tls.Config{InsecureSkipVerify: true}, "prometheus", "scrape-pass"
				}
				return g
			}

			t.Run("POST trickling a body", func(t *testing.T) {
				g := start(small)
				var statuses sync.Map
				run(t, g, 40, false, small[len(small)-1], time.Second, server.ReadTimeout+5*time.Second, 5*time.Second, func(c net.Conn, stop <-chan struct{}) {
					fmt.Fprintf(c, "POST /metrics HTTP/1.1\r\nHost: x\r\n%sContent-Length: 100000\r\n\r\n", g.auth())
					got := make(chan string, 1)
					go func() {
						resp, err := http.ReadResponse(bufio.NewReader(c), nil)
						if err != nil {
							got <- err.Error()
							return
						}
						io.Copy(io.Discard, resp.Body)
						// Then the connection ends: closed, not drained (a
						// reset, when the server closed with bytes unread).
						_, err = c.Read(make([]byte, 1))
						end := "closed"
						if err == nil {
							end = "open"
						} else if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
							end = err.Error()
						}
						got <- fmt.Sprintf("%d %s, then %s", resp.StatusCode, resp.Header.Get("Allow"), end)
					}()
					for {
						select {
						case s := <-got:
							statuses.Store(s, true)
							return
						case <-stop:
							return
						case <-time.After(100 * time.Millisecond):
							c.Write([]byte("a"))
						}
					}
				})
				statuses.Range(func(k, _ any) bool {
					if s := k.(string); s != "405 GET, HEAD, then closed" {
						t.Errorf("a trickling POST got %q, want 405 with Allow, then the connection closed", s)
					}
					return true
				})
			})

			// Over TLS, encrypting forty answers of megabytes at once (both
			// ends under -race) would measure the CPU and nothing the plain
			// run does not.
			nonReaders := t.Run
			if tc.tls {
				nonReaders = func(string, func(*testing.T)) bool { return true }
			}
			nonReaders("never reading a multi-MB answer", func(t *testing.T) {
				g := start(big)
				size := answerSize(t, g)
				t.Logf("/metrics answer: %.1f MB", float64(size)/1e6)
				if size < 4<<20 {
					t.Fatalf("/metrics is %d bytes: too small to fill the socket buffers of a client that does not read", size)
				}
				// Each asks once, as in the review, and the scrapes start
				// once their forty renders of megabytes are done: those are
				// the machine's CPU under -race, not the slots this is about
				// (before, a client that did not read held its slot for
				// 40 s). Held for a scrape's deadline (10 s) and WriteStall
				// at most, with room for a slow machine. Scrapes of
				// megabytes under -race are slow, so only their deadline
				// bounds them.
				run(t, g, 40, true, big[len(big)-1], 5*time.Second, 10*time.Second+server.WriteStall+10*time.Second, 10*time.Second, func(c net.Conn, stop <-chan struct{}) {
					smallReadBuffer(c)
					fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n%s\r\n", g.auth())
					closedByServer(c, stop, 200*time.Millisecond)
				})
			})

			t.Run("trickling headers", func(t *testing.T) {
				g := start(small)
				// Before, scrapes waited up to 9 s for a connection.
				run(t, g, 64, false, small[len(small)-1], time.Second, server.ReadHeaderTimeout+5*time.Second, 5*time.Second, func(c net.Conn, stop <-chan struct{}) {
					req := "GET /metrics HTTP/1.1\r\nHost: x\r\n" + g.auth() + "X-Slow: " + strings.Repeat("a", 200) + "\r\n\r\n"
					for i := range len(req) {
						select {
						case <-stop:
							return
						case <-time.After(100 * time.Millisecond):
						}
						c.SetWriteDeadline(time.Now().Add(time.Second))
						if _, err := c.Write([]byte{req[i]}); err != nil {
							return
						}
					}
				})
			})
		})
	}
}

// run lets n attackers loose, scrapes alongside for a while, and checks
// that the scrapes kept succeeding, none waited longer than slowest, and
// the server let every attacker's connection go within hold.
func run(t *testing.T, g *guarded, n int, once bool, last string, warmUp, hold, slowest time.Duration, client func(net.Conn, <-chan struct{})) {
	t.Helper()
	stop := make(chan struct{})
	longest, opened := g.attack(t, n, once, stop, client)
	// Let them take what they can before the scrapes start.
	time.Sleep(warmUp)
	const timeout = 10 * time.Second
	scrapeStop := make(chan struct{})
	done := make(chan *scrapes)
	go func() { done <- g.scrapeLike(scrapeStop, 200*time.Millisecond, timeout, last) }()
	time.Sleep(8 * time.Second)
	close(scrapeStop)
	s := <-done
	close(stop)
	worst := longest()
	t.Logf("%d attackers (%d connections): scrapes %s; the server held an attacker's connection %s at most", n, opened(), s, worst.Round(time.Millisecond))
	if s.ok+s.fail < 4 {
		t.Errorf("only %d scrapes ran in 8 s", s.ok+s.fail)
	}
	if s.fail*10 > s.ok+s.fail {
		t.Errorf("scrapes failed under attack: %s", s)
	}
	if s.slowest > slowest {
		t.Errorf("a scrape waited %s, want at most %s (its deadline: %s)", s.slowest, slowest, timeout)
	}
	if worst > hold {
		t.Errorf("the server held an attacker's connection for %s, want at most %s", worst, hold)
	}
}

// answerSize is the size of /metrics in the text format.
func answerSize(t *testing.T, g *guarded) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: g.tls, DisableCompression: true}, Timeout: time.Minute}
	req, _ := http.NewRequest("GET", g.scheme+"://"+g.addr+"/metrics", nil)
	if g.user != "" {
		req.SetBasicAuth(g.user, g.pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	return int(n)
}

// tlsWebConfig writes an exporter-toolkit web config with TLS and one
// basic-auth user, prometheus:scrape-pass.
func tlsWebConfig(t *testing.T) string {
	t.Helper()
	ca := testserver.NewCA(t, "web")
	kp := ca.Server("exporter", "127.0.0.1")
	// The cheapest cost: the toolkit checks a password once per request
	// it has not cached, one at a time.
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "web.yml")
	cfg := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n", kp.CertFile, kp.KeyFile, hash)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A scrape still running when the shutdown's grace period ends is
// answered 503 at once (its read cut short would report the broker down),
// and the shutdown then ends; one that ends within the grace period gets
// its answer (the binary's TestSIGTERMLetsARunningScrapeAnswer).
func TestShutdownAnswersARunningScrape(t *testing.T) {
	r := testserver.StartRedis(t)
	g := startGuarded(t, r, []string{"default"}, "", 10*time.Second)
	if code, body := testserver.Get(t, "http://"+g.addr+"/metrics"); code != 200 || !strings.Contains(body, "dramatiq_redis_up 1") {
		t.Fatalf("before: %d %.200s", code, body)
	}
	r.Freeze()
	t.Cleanup(r.Thaw)
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// No deadline header: the read waits up to the 10 s cap.
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + g.addr + "/metrics")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	time.Sleep(time.Second)
	begin := time.Now()
	const grace = 500 * time.Millisecond
	server.Shutdown(g.srv, g.cancel, grace)
	took := time.Since(begin)
	res := <-done
	if res.err != nil || res.code != http.StatusServiceUnavailable || !strings.Contains(res.body, server.ErrShuttingDown.Error()) {
		t.Errorf("the running scrape: %d %q %v, want 503 saying the exporter is shutting down", res.code, res.body, res.err)
	}
	// The grace, then at most WriteStall for the answers, with room for a
	// slow machine; the scrape's own deadline was 9 s away.
	if took > grace+server.WriteStall+3*time.Second {
		t.Errorf("Shutdown took %s", took)
	}
	if _, err := net.DialTimeout("tcp", g.addr, time.Second); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
}
