package topology_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// scraper scrapes an exporter every interval until stopped, keeping every
// result, as Prometheus would.
type scraper struct {
	mu      sync.Mutex
	results []scrapeResult
	stop    chan struct{}
	done    chan struct{}
}

func startScraper(e *exporter, interval, timeout time.Duration) *scraper {
	s := &scraper{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			r := e.scrape("/metrics", timeout)
			s.mu.Lock()
			s.results = append(s.results, r)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *scraper) halt() []scrapeResult {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]scrapeResult(nil), s.results...)
}

// firstUp returns the first scrape that began after t and said up 1.
func (s *scraper) firstUp(after time.Time) (scrapeResult, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.results {
		if r.begin.After(after) && r.up() == 1 {
			return r, true
		}
	}
	return scrapeResult{}, false
}

// TestSentinelFailover kills the master under a real Dramatiq app and two
// exporters (one reading the master, one a replica) that are scraped every
// second, and checks that no scrape overruns its deadline, that up returns
// within the failover time plus one interval, that the numbers match
// Dramatiq's afterwards, and that `check` behaves the same.
func TestSentinelFailover(t *testing.T) {
	g := testserver.StartSentinelGroup(t, "dramatiq-main")
	const ns = "sentinelapp"
	sentinels := joinAddrs(g.Addrs())
	common := []string{"--redis.sentinel-addrs", sentinels, "--redis.sentinel-master", g.Name,
		"--dramatiq.namespace", ns, "--dramatiq.discovery-interval", "1s", "--dramatiq.heartbeat-timeout", "10s"}
	onMaster := startExporter(t, common...)
	onReplica := startExporter(t, append(common, "--redis.sentinel-replica")...)
	checkArgs := append(append([]string(nil), common[:6]...), "--dramatiq.queues", "backlog,work", "--check.timeout", "3s")

	app := startApp(t, script(t, "sentinel_app.py"), "--sentinels", sentinels, "--master", g.Name, "--namespace", ns)
	want := counts(app.wait(t, "ready", 60*time.Second), "backlog")
	onMaster.waitMatch(t, "/metrics", want, 30*time.Second)
	onReplica.waitMatch(t, "/metrics", want, 30*time.Second)
	// work's keys exist only between a send and its ack: a discovery
	// pass, once a second, sees them only now and then (docs/discovery.md;
	// it took about 5 s on average here). Once found, a queue stays
	// reported through the failover, which is what is checked after it;
	// without this wait, the few passes before the drain all missed work
	// in about one run in seven.
	onMaster.waitQueue(t, "work", 60*time.Second)
	onReplica.waitQueue(t, "work", 60*time.Second)

	// The replica reader reads the replica: the master reader never dials it.
	ctx := context.Background()
	if list, err := g.Replica.Admin.ClientList(ctx).Result(); err != nil || !strings.Contains(list, "name=dramatiq_exporter") {
		t.Fatalf("no exporter connection on the replica (%v): %s", err, list)
	}
	// Everything sent so far is on the replica, so the kill loses none of it.
	if n, err := g.Master.Admin.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d %v", n, err)
	}

	const interval, timeout = time.Second, 2 * time.Second
	sm := startScraper(onMaster, interval, timeout)
	sr := startScraper(onReplica, interval, timeout)
	time.Sleep(2 * interval)

	oldMaster := g.Master.Addr
	killed := time.Now()
	g.Master.Stop()

	// `check` during the failover answers within its timeout, whatever it finds.
	code, took, _, stderr := runCheck(t, checkArgs...)
	if took > 4*time.Second || (code != 0 && code != 1) {
		t.Errorf("check during the failover: exit %d after %s (timeout 3s): %s", code, took, stderr)
	}

	newMaster := g.WaitFailover(t, oldMaster, 60*time.Second)
	failedOver := time.Now()
	if newMaster != g.Replica.Addr {
		t.Fatalf("sentinels promoted %s, not the replica %s", newMaster, g.Replica.Addr)
	}
	deadline := failedOver.Add(30 * time.Second)
	var upM, upR scrapeResult
	for {
		var okM, okR bool
		upM, okM = sm.firstUp(killed)
		upR, okR = sr.firstUp(killed)
		if okM && okR {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dramatiq_redis_up did not return to 1 (master reader %v, replica reader %v)", okM, okR)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * interval)
	resM, resR := sm.halt(), sr.halt()

	blind := map[string]time.Duration{}
	for name, results := range map[string][]scrapeResult{"master reader": resM, "replica reader": resR} {
		down := 0
		var lastDown time.Time
		for _, r := range results {
			if r.took > timeout {
				t.Errorf("%s: a scrape at %s took %s, over its %s deadline", name, r.begin.Sub(killed).Round(time.Millisecond), r.took, timeout)
			}
			if r.err != nil {
				t.Errorf("%s: scrape failed: %v", name, r.err)
			} else if r.up() != 1 {
				down++
				lastDown = r.begin
			}
		}
		// Blind: from the kill to the end of the first scrape with up 1
		// after the last one with up 0; none when up never dropped.
		if down > 0 {
			for _, r := range results {
				if r.begin.After(lastDown) && r.up() == 1 {
					blind[name] = r.begin.Add(r.took).Sub(killed)
					break
				}
			}
		}
		t.Logf("%s: %d scrapes, %d with dramatiq_redis_up 0, blind for %s", name, len(results), down, blind[name].Round(10*time.Millisecond))
	}
	// A scrape that began before the sentinels switched may still fail; the
	// next one, one interval later, must not. The second of slack covers
	// this test's own polling of the sentinels.
	if limit := failedOver.Add(interval + time.Second); upM.begin.After(limit) {
		t.Errorf("master reader: up returned %s after the failover, more than one interval", upM.begin.Sub(failedOver))
	}
	if upR.begin.After(failedOver.Add(interval + time.Second)) {
		t.Errorf("replica reader: up returned %s after the failover, more than one interval", upR.begin.Sub(failedOver))
	}
	t.Logf("failover: the sentinels agreed on the new master %s after the kill (scrape interval %s)",
		failedOver.Sub(killed).Round(10*time.Millisecond), interval)

	// Dramatiq followed the failover, and so do the numbers.
	app.say(t, "more")
	ev := app.wait(t, "expect", 120*time.Second)
	if n, _ := ev["processed_after_failover"].(float64); n < 1 {
		t.Errorf("the worker processed nothing after the failover: %v", ev)
	}
	want = counts(ev, "backlog", "work")
	onMaster.waitMatch(t, "/metrics", want, 30*time.Second)
	onReplica.waitMatch(t, "/metrics", want, 30*time.Second)

	code, _, st, stderr := runCheck(t, checkArgs...)
	if code != 0 {
		t.Fatalf("check after the failover: exit %d: %v %s", code, st, stderr)
	}
	if q := checkQueue(st, "backlog"); q == nil || q["ready"] != 12.0 || q["delayed"] != 3.0 {
		t.Errorf("check after the failover: backlog = %v", q)
	}
	code, _, st, stderr = runCheck(t, append(checkArgs, "--redis.sentinel-replica")...)
	if q := checkQueue(st, "backlog"); code != 0 || q == nil || q["ready"] != 12.0 {
		t.Errorf("check --redis.sentinel-replica after the failover: exit %d, backlog = %v %s", code, q, stderr)
	}
}

// Sentinels that require a password: the exporter gives it from
// --redis.sentinel-password-file and never logs it; without it, up 0 and a
// log line that says why.
func TestSentinelPassword(t *testing.T) {
	const password = "sentinel-Pass-77"
	g := testserver.StartSentinelGroupAuth(t, "authed", password)
	g.Master.NewBroker(t, "dramatiq").Enqueue("emails", 2, time.Now())
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--redis.sentinel-addrs", joinAddrs(g.Addrs()), "--redis.sentinel-master", g.Name}
	ok := startExporter(t, append(args, "--redis.sentinel-password-file", pw)...)
	ok.waitMatch(t, "/metrics", map[string]map[string]float64{"emails": {"ready": 2}}, 20*time.Second)

	bad := startExporter(t, args...)
	s := bad.scrape("/metrics", 5*time.Second)
	if s.err != nil || s.up() != 0 {
		t.Errorf("without the sentinel password: up %v, %v", s.up(), s.err)
	}
	time.Sleep(300 * time.Millisecond)
	if !strings.Contains(bad.logs.String(), "all sentinels specified in configuration are unreachable: NOAUTH") {
		t.Errorf("the log does not say why:\n%s", bad.logs.String())
	}
	for _, e := range []*exporter{ok, bad} {
		if strings.Contains(e.logs.String(), password) {
			t.Error("the sentinel password is in the log")
		}
	}
}
