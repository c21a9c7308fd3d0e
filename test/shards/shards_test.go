// Package shards_test runs what the Helm chart's `shards` value deploys,
// without Kubernetes: two exporter processes, and the real Prometheus 3
// scraping many Redis brokers through /probe with the hashmod relabeling
// of the chart's rendered Probes. Each target's per-target state
// (dead-letter watermarks and counters) lives in one process, so each
// target must always be read by the same one.
package shards_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// binary is the exporter, built once for the package.
var exporterBin string

func TestMain(m *testing.M) { testserver.RunWithExporter(m, &exporterBin) }

const (
	shards  = 2
	release = "dx"
	ns      = "monitoring"
	queue   = "default"
	// The chart's job (values.yaml), which the Probes give every target.
	job = "dramatiq"
)

// replica is one exporter process: shard i of the StatefulSet.
type replica struct {
	addr string
	conf string
	cmd  *exec.Cmd
	logs *testserver.LogBuffer
	done chan struct{}
}

func startReplica(t *testing.T, addr, conf string) *replica {
	t.Helper()
	r := &replica{addr: addr, conf: conf, logs: &testserver.LogBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(exporterBin, "--config.file", conf, "--web.listen-address", addr)
	r.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("exporter %s (pid %d) log:\n%s", addr, r.cmd.Process.Pid, r.logs.String())
		}
	})
	waitHTTP(t, "http://"+addr+"/-/healthy", r.done, r.logs)
	return r
}

func (r *replica) stop() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

func waitHTTP(t *testing.T, u string, exited chan struct{}, logs *testserver.LogBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("%s: the process exited:\n%s", u, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after 60s:\n%s", u, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probeObject is the part of a prometheus-operator Probe the chart
// renders. Unknown fields fail the decoding, so the chart cannot grow a
// field that operatorScrapeConfig would silently leave out (test/kube
// decodes the full type strictly).
type probeObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		JobName string `yaml:"jobName"`
		Prober  struct {
			URL  string `yaml:"url"`
			Path string `yaml:"path"`
		} `yaml:"prober"`
		Module        string `yaml:"module"`
		Interval      string `yaml:"interval"`
		ScrapeTimeout string `yaml:"scrapeTimeout"`
		Targets       struct {
			StaticConfig struct {
				Static            []string      `yaml:"static"`
				RelabelingConfigs []relabelling `yaml:"relabelingConfigs"`
			} `yaml:"staticConfig"`
		} `yaml:"targets"`
	} `yaml:"spec"`
}

type relabelling struct {
	Action       string   `yaml:"action"`
	SourceLabels []string `yaml:"sourceLabels"`
	TargetLabel  string   `yaml:"targetLabel"`
	Modulus      int      `yaml:"modulus"`
	Regex        string   `yaml:"regex"`
}

// renderProbes renders the chart's Probes for the targets with the
// shards value, as `helm template` does for a release.
func renderProbes(t *testing.T, targets []string) []probeObject {
	t.Helper()
	tj, _ := json.Marshal(targets)
	home := t.TempDir()
	cmd := exec.Command(testserver.Tool(t, "helm").Path, "template", release, "charts/dramatiq-exporter", "--namespace", ns,
		"--show-only", "templates/probe.yaml",
		"--set", "shards="+strconv.Itoa(shards), "--set", "probes.enabled=true",
		"--set", "probes.interval=1s", "--set", "probes.scrapeTimeout=1s",
		"--set-json", "probes.targets="+string(tj),
		"--set-json", `config.probe.allowed_targets=["127.0.0.1:*"]`)
	cmd.Dir = testserver.RepoRoot(t)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	var probes []probeObject
	for {
		var p probeObject
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("chart's Probe: %v\n%s", err, out)
		}
		if p.Kind == "" {
			continue // a document holding only comments
		}
		if p.APIVersion != "monitoring.coreos.com/v1" || p.Kind != "Probe" {
			t.Fatalf("templates/probe.yaml renders %s %s", p.APIVersion, p.Kind)
		}
		probes = append(probes, p)
	}
	if len(probes) != shards {
		t.Fatalf("%d Probes for %d shards:\n%s", len(probes), shards, out)
	}
	return probes
}

// operatorScrapeConfig is the scrape config prometheus-operator generates
// from a Probe with static targets: the job label from jobName, each
// target into the target parameter and instance, the prober as the
// address, then the Probe's own relabelings. proberAddr stands in for the
// cluster's DNS: it maps the shard pod's name to that replica's address.
func operatorScrapeConfig(t *testing.T, p probeObject, proberAddr string) map[string]any {
	t.Helper()
	relabel := []map[string]any{
		{"target_label": "job", "replacement": p.Spec.JobName},
		{"source_labels": []string{"__address__"}, "target_label": "__param_target"},
		{"source_labels": []string{"__param_target"}, "target_label": "instance"},
		{"target_label": "__address__", "replacement": proberAddr},
	}
	for _, rc := range p.Spec.Targets.StaticConfig.RelabelingConfigs {
		m := map[string]any{"action": rc.Action, "source_labels": rc.SourceLabels}
		if rc.TargetLabel != "" {
			m["target_label"] = rc.TargetLabel
		}
		if rc.Modulus != 0 {
			m["modulus"] = rc.Modulus
		}
		if rc.Regex != "" {
			m["regex"] = rc.Regex
		}
		relabel = append(relabel, m)
	}
	sc := map[string]any{
		"job_name":        "probe/" + p.Metadata.Namespace + "/" + p.Metadata.Name,
		"metrics_path":    p.Spec.Prober.Path,
		"scrape_interval": p.Spec.Interval,
		"scrape_timeout":  p.Spec.ScrapeTimeout,
		"static_configs":  []map[string]any{{"targets": p.Spec.Targets.StaticConfig.Static}},
		"relabel_configs": relabel,
	}
	if p.Spec.Module != "" {
		sc["params"] = map[string][]string{"module": {p.Spec.Module}}
	}
	return sc
}

// hashmod is Prometheus's (model/relabel): the last 8 bytes of the MD5 of
// the value, big-endian, modulo the modulus. The test predicts each
// target's shard with it, and Prometheus must agree.
func hashmod(val string, modulus uint64) int {
	sum := md5.Sum([]byte(val))
	return int(binary.BigEndian.Uint64(sum[8:]) % modulus)
}

type prom struct {
	base string
	cmd  *exec.Cmd
}

func startPrometheus(t *testing.T, scrapeConfigs []map[string]any) *prom {
	t.Helper()
	dir := t.TempDir()
	cfg, err := yaml.Marshal(map[string]any{
		"global":         map[string]any{"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
		"scrape_configs": scrapeConfigs,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	port := testserver.FreePort(t)
	logs := &testserver.LogBuffer{}
	p := &prom{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	p.cmd = exec.Command(testserver.Tool(t, "prometheus").Path, "--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:"+strconv.Itoa(port), "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = logs, logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("prometheus config:\n%s\nlog:\n%s", cfg, logs.String())
		}
	})
	waitHTTP(t, p.base+"/-/ready", done, logs)
	return p
}

func (p *prom) api(path string, params url.Values, out any) error {
	resp, err := http.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return err
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

type series struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
}

func sampleValue(v [2]any) float64 {
	s, _ := v[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

func (p *prom) query(t *testing.T, expr string) []series {
	t.Helper()
	var data struct {
		Result []series `json:"result"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return data.Result
}

// activeTargets is Prometheus's view: each kept target's instance and the
// replica address it is scraped from.
func (p *prom) activeTargets(t *testing.T) map[string][]string {
	t.Helper()
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			ScrapeURL string            `json:"scrapeUrl"`
			Health    string            `json:"health"`
		} `json:"activeTargets"`
	}
	if err := p.api("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, a := range data.ActiveTargets {
		u, err := url.Parse(a.ScrapeURL)
		if err != nil {
			t.Fatal(err)
		}
		if u.Path != "/probe" || u.Query().Get("target") != a.Labels["instance"] || a.Labels["job"] != job {
			t.Errorf("active target %v scraped at %s", a.Labels, a.ScrapeURL)
		}
		out[a.Labels["instance"]] = append(out[a.Labels["instance"]], u.Host)
	}
	return out
}

// exporterConns maps each exporter connection a Redis server lists
// (CLIENT LIST, name=dramatiq_exporter) to the pid of the replica whose
// socket it is, found through /proc: the servers' own view of who reads
// them, independent of what the exporters or Prometheus report.
func exporterConns(t *testing.T, r *testserver.Redis, replicas []*replica) []int {
	t.Helper()
	list, err := r.Admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	portOwner := map[int]int{}
	for _, rep := range replicas {
		for port := range localPorts(t, rep.cmd.Process.Pid) {
			portOwner[port] = rep.cmd.Process.Pid
		}
	}
	var pids []int
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " name=dramatiq_exporter ") {
			continue
		}
		m := regexp.MustCompile(`\baddr=127\.0\.0\.1:(\d+)\b`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("CLIENT LIST line without a loopback addr: %s", line)
		}
		port, _ := strconv.Atoi(m[1])
		pid, ok := portOwner[port]
		if !ok {
			pid = -port // no replica holds it (closing, or a stray process)
		}
		if !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// localPorts is the set of local TCP ports of pid's sockets on 127.0.0.1.
func localPorts(t *testing.T, pid int) map[int]bool {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return ports // exited
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || !inodes[fields[9]] {
			continue
		}
		if host, port, ok := strings.Cut(fields[1], ":"); ok && host == "0100007F" {
			if n, err := strconv.ParseInt(port, 16, 32); err == nil {
				ports[int(n)] = true
			}
		}
	}
	return ports
}

// probeTargets is a replica's own count of the targets it holds state for.
func probeTargets(t *testing.T, r *replica) float64 {
	t.Helper()
	code, body := testserver.Get(t, "http://"+r.addr+"/metrics")
	m := regexp.MustCompile(`(?m)^dramatiq_exporter_probe_targets (\S+)$`).FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("%s/metrics: %d, no dramatiq_exporter_probe_targets", r.addr, code)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestShardedProbes: two replicas share at least six brokers through the
// chart's hashmod Probes and a real Prometheus 3 scraping every second
// while dead letters arrive. Each target is read by exactly one replica,
// always the one its hash names; every counter is monotonic over at least
// 20 scrapes; restarting one replica resets only its own targets' counters.
func TestShardedProbes(t *testing.T) {
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Logf("%5.1fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}

	// At least six brokers, and at least two on each shard, so that a
	// restart has targets to reset and targets to leave alone.
	var brokers []*testserver.Redis
	var targets []string
	shardOf := map[string]int{}
	perShard := make([]int, shards)
	for len(brokers) < 6 || slices.Min(perShard) < 2 {
		if len(brokers) == 16 {
			t.Fatalf("16 brokers, shards hold %v", perShard)
		}
		r := testserver.StartRedis(t)
		b := r.NewBroker(t, "dramatiq")
		b.Enqueue(queue, 3, time.Now())
		b.DeadLetter(queue, time.Now().Add(-time.Hour), nil) // before any exporter started: never counted
		target := "redis://" + r.Addr + "/0"
		brokers, targets = append(brokers, r), append(targets, target)
		shardOf[target] = hashmod(target, shards)
		perShard[shardOf[target]]++
	}
	logf("%d brokers, %v per shard", len(brokers), perShard)

	// The replicas: the StatefulSet's pods, each with the chart's config
	// (the same for every shard).
	own := testserver.StartRedis(t) // what each replica's /metrics reads
	conf := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(conf, []byte(`redis:
  url: `+own.URL()+`
probe:
  allowed_targets: ["127.0.0.1:*"]
  idle_timeout: 10m
  max_targets: 20
modules:
  default:
    dramatiq: {namespace: dramatiq}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	replicas := make([]*replica, shards)
	for i := range replicas {
		replicas[i] = startReplica(t, fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t)), conf)
	}

	// Prometheus with the chart's Probes, as the operator turns them into
	// scrape configs; shard i's pod is replica i.
	probes := renderProbes(t, targets)
	var scrapeConfigs []map[string]any
	for i, p := range probes {
		pod, _, _ := strings.Cut(p.Spec.Prober.URL, ".")
		if want := fmt.Sprintf("%s-dramatiq-exporter-%d", release, i); pod != want || p.Spec.JobName != job {
			t.Fatalf("Probe %s: prober %s (job %q), want pod %s", p.Metadata.Name, p.Spec.Prober.URL, p.Spec.JobName, want)
		}
		scrapeConfigs = append(scrapeConfigs, operatorScrapeConfig(t, p, replicas[i].addr))
	}
	pr := startPrometheus(t, scrapeConfigs)
	logf("prometheus %s, replicas %s and %s", pr.base, replicas[0].addr, replicas[1].addr)

	// Dead letters keep arriving on every broker, so every counter moves.
	stopWriting := make(chan struct{})
	var writing sync.WaitGroup
	writing.Add(1)
	go func() {
		defer writing.Done()
		for {
			select {
			case <-stopWriting:
				return
			case <-time.After(300 * time.Millisecond):
			}
			for _, r := range brokers {
				// As Dramatiq's nack does (testserver.Broker.DeadLetter,
				// which may not fail the test from this goroutine).
				ctx, id, now := context.Background(), testserver.UUID(), time.Now()
				r.Admin.ZAdd(ctx, "dramatiq:"+queue+".XQ", goredis.Z{Score: float64(now.UnixMilli()), Member: id})
				r.Admin.HSet(ctx, "dramatiq:"+queue+".XQ.msgs", id, testserver.Body(queue, id, now.Add(-time.Minute), nil))
			}
		}
	}()
	t.Cleanup(func() { close(stopWriting); writing.Wait() })

	// checkOwners: Prometheus sends each target to the replica its hash
	// names and to no other; that replica alone is connected to the
	// broker and holds the target's state.
	checkOwners := func(phase string) {
		t.Helper()
		active := pr.activeTargets(t)
		for _, target := range targets {
			want := replicas[shardOf[target]]
			if got := active[target]; !slices.Equal(got, []string{want.addr}) {
				t.Errorf("%s: Prometheus scrapes %s through %v, want only shard %d's %s", phase, target, got, shardOf[target], want.addr)
			}
		}
		if len(active) != len(targets) {
			t.Errorf("%s: %d active targets, want %d", phase, len(active), len(targets))
		}
		for i, b := range brokers {
			if got, want := exporterConns(t, b, replicas), []int{replicas[shardOf[targets[i]]].cmd.Process.Pid}; !slices.Equal(got, want) {
				t.Errorf("%s: %s is read by exporter pids %v, want only shard %d's %v", phase, targets[i], got, shardOf[targets[i]], want)
			}
		}
		for i, r := range replicas {
			if got := probeTargets(t, r); got != float64(perShard[i]) {
				t.Errorf("%s: replica %d holds %v targets, want its %d", phase, i, got, perShard[i])
			}
		}
	}

	// waitScrapes waits until every target's counter has n samples since
	// from, all of them scrapes that answered.
	counter := fmt.Sprintf(`dramatiq_queue_dead_lettered_total{job=%q,queue=%q}`, job, queue)
	waitScrapes := func(from time.Time, n int) {
		t.Helper()
		deadline := time.Now().Add(time.Duration(n)*time.Second + 90*time.Second)
		for {
			window := time.Since(from).Truncate(time.Second) + time.Second
			counts := map[string]int{}
			for _, s := range pr.query(t, fmt.Sprintf("count_over_time(%s[%s])", counter, model(window))) {
				counts[s.Metric["instance"]] = int(sampleValue(s.Value))
			}
			least := n
			for _, target := range targets {
				least = min(least, counts[target])
			}
			if least >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s, the fewest samples of one target is %d, want %d: %v", window, least, n, counts)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	phase1 := time.Now()
	waitScrapes(phase1, 3)
	logf("every target scraped")
	checkOwners("running")
	waitScrapes(phase1, 21)
	logf("21 scrapes of every target")
	checkOwners("after 21 scrapes")

	// Every counter series of every target, raw samples over the phase:
	// monotonic, and the dead-letter counter moved.
	before := rawSamples(t, pr, fmt.Sprintf(`{job=%q,__name__=~".+_total"}`, job), phase1)
	checkMonotonic(t, before, targets, 20)
	var names []string
	for key := range before {
		if !slices.Contains(names, key.name) {
			names = append(names, key.name)
		}
	}
	slices.Sort(names)
	logf("%d counter series, monotonic: %v", len(before), names)
	lastBefore := map[string]float64{}
	for key, vals := range before {
		if key.name == "dramatiq_queue_dead_lettered_total" {
			if vals[len(vals)-1] <= vals[0] {
				t.Errorf("%s: dead-letter counter did not move over %d scrapes: %v", key.instance, len(vals), vals)
			}
			lastBefore[key.instance] = vals[len(vals)-1]
			logf("%s (shard %d): %d scrapes, dead-lettered %v -> %v", key.instance, shardOf[key.instance], len(vals), vals[0], vals[len(vals)-1])
		}
	}
	if len(lastBefore) != len(targets) {
		t.Fatalf("dead-letter counters of %d targets, want %d", len(lastBefore), len(targets))
	}
	if t.Failed() {
		return
	}

	// Restart shard 0's replica on the same address, as Kubernetes
	// replaces a pod of the StatefulSet under the same name.
	restart := time.Now()
	replicas[0].stop()
	replicas[0] = startReplica(t, replicas[0].addr, conf)
	logf("replica 0 restarted (pid %d)", replicas[0].cmd.Process.Pid)
	waitScrapes(restart, 6)
	checkOwners("after the restart")

	all := rawSamples(t, pr, counter, phase1)
	for _, target := range targets {
		vals := all[seriesKey{"dramatiq_queue_dead_lettered_total", target, queue}]
		resets := 0
		for i := 1; i < len(vals); i++ {
			if vals[i] < vals[i-1] {
				resets++
			}
		}
		logf("%s (shard %d): %v before the restart, %v now, %d resets", target, shardOf[target], lastBefore[target], vals[len(vals)-1], resets)
		if shardOf[target] == 0 {
			// The new process counts from its own start: one step down.
			if resets != 1 {
				t.Errorf("%s (restarted shard 0): %d resets, %v now against %v before: want one reset to a new count", target, resets, vals[len(vals)-1], lastBefore[target])
			}
		} else if resets != 0 || vals[len(vals)-1] <= lastBefore[target] {
			t.Errorf("%s (shard 1, not restarted): %d resets, %v now against %v before", target, resets, vals[len(vals)-1], lastBefore[target])
		}
	}
	// Prometheus's own reading agrees.
	for _, s := range pr.query(t, fmt.Sprintf("resets(%s[%s])", counter, model(time.Since(phase1).Truncate(time.Second)+time.Second))) {
		target := s.Metric["instance"]
		if want := map[bool]float64{true: 1, false: 0}[shardOf[target] == 0]; sampleValue(s.Value) != want {
			t.Errorf("resets() of %s (shard %d) = %v, want %v", target, shardOf[target], sampleValue(s.Value), want)
		}
	}
	// Every counter of the shard that kept running stayed monotonic.
	var kept []string
	for _, target := range targets {
		if shardOf[target] == 1 {
			kept = append(kept, target)
		}
	}
	checkMonotonic(t, rawSamples(t, pr, fmt.Sprintf(`{job=%q,__name__=~".+_total"}`, job), phase1), kept, 25)
	logf("done")
}

type seriesKey struct{ name, instance, queue string }

// rawSamples returns each series' scraped samples since from, in order.
func rawSamples(t *testing.T, pr *prom, selector string, from time.Time) map[seriesKey][]float64 {
	t.Helper()
	window := time.Since(from).Truncate(time.Second) + time.Second
	out := map[seriesKey][]float64{}
	for _, s := range pr.query(t, fmt.Sprintf("%s[%s]", selector, model(window))) {
		if len(s.Metric) > 0 && s.Metric["job"] != job {
			continue
		}
		key := seriesKey{s.Metric["__name__"], s.Metric["instance"], s.Metric["queue"]}
		for _, v := range s.Values {
			out[key] = append(out[key], sampleValue(v))
		}
	}
	return out
}

// checkMonotonic: every counter series of the targets has at least n
// samples and never decreases.
func checkMonotonic(t *testing.T, samples map[seriesKey][]float64, targets []string, n int) {
	t.Helper()
	perTarget := map[string]int{}
	for key, vals := range samples {
		if !slices.Contains(targets, key.instance) {
			continue
		}
		perTarget[key.instance]++
		if len(vals) < n {
			t.Errorf("%v: %d samples, want at least %d", key, len(vals), n)
		}
		for i := 1; i < len(vals); i++ {
			if vals[i] < vals[i-1] || math.IsNaN(vals[i]) {
				t.Errorf("%v: counter went from %v to %v at sample %d of %d", key, vals[i-1], vals[i], i, len(vals))
				break
			}
		}
	}
	for _, target := range targets {
		if perTarget[target] == 0 {
			t.Errorf("%s: no counter series", target)
		}
	}
}

// model writes a duration as PromQL reads it: whole seconds.
func model(d time.Duration) string { return strconv.Itoa(int(d.Seconds())) + "s" }
