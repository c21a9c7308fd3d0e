// Package deploy holds no code: its tests check the Dockerfile and the
// docker-compose stack against the code and against each other, because no
// Docker engine runs in CI. The Kubernetes manifests are the Helm chart
// rendered; test/kube checks them.
package deploy

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
)

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustExist(t *testing.T, path, why string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s: %v", why, err)
	}
}

// exporterPort is the port the exporter listens on by default.
func exporterPort(t *testing.T) string {
	_, port, err := net.SplitHostPort(config.DefaultListenAddress)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

const rulesFile = "alerts/dramatiq.rules.yml"

// rulesJob is the job the shipped rules select: every scrape config and
// ServiceMonitor must produce it.
// rulesJobs lists the jobs the shipped rules select, the exporter's first:
// the exporter's own, and the workers' (their Prometheus middleware).
func rulesJobs(t *testing.T, root string) []string {
	t.Helper()
	m := regexp.MustCompile(`job="([^"]+)"`).FindAllStringSubmatch(string(mustRead(t, filepath.Join(root, rulesFile))), -1)
	if len(m) == 0 {
		t.Fatalf("%s selects no job", rulesFile)
	}
	jobs := []string{m[0][1]}
	for _, x := range m {
		if !slices.Contains(jobs, x[1]) {
			jobs = append(jobs, x[1])
		}
	}
	if len(jobs) > 2 {
		t.Fatalf("%s selects more jobs than the exporter's and the workers': %q", rulesFile, jobs)
	}
	return jobs
}

// --- Dockerfile ---

type instruction struct {
	cmd  string // upper case
	args string
}

type stage struct {
	from, name string
	platform   string // FROM --platform=
	ins        []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions, joining
// continuation lines and dropping comments, as BuildKit does.
func parseDockerfile(t *testing.T, path string) (args map[string]string, stages []*stage) {
	t.Helper()
	args = map[string]string{}
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(string(mustRead(t, path)), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	for _, l := range logical {
		cmd, rest, _ := strings.Cut(l, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(rest)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			s := &stage{}
			if len(f) > 0 && strings.HasPrefix(f[0], "--platform=") {
				s.platform, f = strings.TrimPrefix(f[0], "--platform="), f[1:]
			}
			if len(f) == 0 {
				t.Fatalf("%s: FROM without an image", path)
			}
			s.from = f[0]
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
		case len(stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		case len(stages) == 0:
			t.Fatalf("%s: %s before FROM", path, in.cmd)
		default:
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		}
	}
	return args, stages
}

func (s *stage) all(cmd string) []string {
	var out []string
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func (s *stage) one(t *testing.T, cmd string) string {
	t.Helper()
	v := s.all(cmd)
	if len(v) != 1 {
		t.Fatalf("stage %s: want one %s, have %d", s.from, cmd, len(v))
	}
	return v[0]
}

// execForm decodes a JSON-array (exec form) instruction argument.
func execForm(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	if err := yaml.Unmarshal([]byte(s), &out); err != nil || !strings.HasPrefix(s, "[") {
		t.Fatalf("not exec form: %s", s)
	}
	return out
}

// goDirective reads "go 1.26.x" from go.mod.
func goDirective(t *testing.T, root string) string {
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(mustRead(t, filepath.Join(root, "go.mod"))))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return m[1]
}

// checkGoBuildStage checks a stage that builds the exporter: a Go image at
// least as new as go.mod, a static build of ./cmd/dramatiq_exporter, and
// COPY sources that exist in the build context.
func checkGoBuildStage(t *testing.T, root string, args map[string]string, s *stage) string {
	t.Helper()
	image := strings.ReplaceAll(s.from, "${GO_VERSION}", args["GO_VERSION"])
	if !strings.HasPrefix(image, "golang:"+goDirective(t, root)) {
		t.Errorf("build stage image %s does not match go.mod's go %s", image, goDirective(t, root))
	}
	for _, c := range s.all("COPY") {
		f := strings.Fields(c)
		for _, src := range f[:len(f)-1] {
			if src != "." {
				mustExist(t, filepath.Join(root, src), "COPY "+src)
			}
		}
	}
	var out string
	for _, run := range s.all("RUN") {
		switch {
		case strings.Contains(run, "go build"):
			if !strings.Contains(run, "CGO_ENABLED=0") || !strings.Contains(run, "./cmd/dramatiq_exporter") {
				t.Errorf("the build is not a static build of ./cmd/dramatiq_exporter: %s", run)
			}
			m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(run)
			if m == nil {
				t.Fatalf("go build without -o: %s", run)
			}
			out = m[1]
		case strings.Contains(run, "make build"):
			if recipe := makeBuildRecipe(t, root); !strings.Contains(recipe, "CGO_ENABLED=0") || !strings.Contains(recipe, "./cmd/dramatiq_exporter") {
				t.Errorf("make build is not a static build of ./cmd/dramatiq_exporter: %s", recipe)
			}
			m := regexp.MustCompile(`BIN=(\S+)`).FindStringSubmatch(run)
			if m == nil {
				t.Fatalf("make build without BIN=: %s", run)
			}
			out = m[1]
		}
	}
	if out == "" {
		t.Fatal("no go build or make build in the build stage")
	}
	// A bare go build leaves the version, revision and build date unknown
	// in --version and dramatiq_exporter_build_info; make build sets them.
	if !strings.Contains(strings.Join(s.all("RUN"), "\n"), "make build") {
		t.Error("the build stage runs go build, not make build: the binary would carry no version")
	}
	return out
}

// makeBuildRecipe is the recipe of the Makefile's build target.
func makeBuildRecipe(t *testing.T, root string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^build:.*\n((?:\t.*\n)+)`).FindStringSubmatch(string(mustRead(t, filepath.Join(root, "Makefile"))))
	if m == nil {
		t.Fatal("the Makefile has no build target")
	}
	return m[1]
}

func TestDockerfile(t *testing.T) {
	root := testserver.RepoRoot(t)
	args, stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, have %d stages", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	built := checkGoBuildStage(t, root, args, build)

	// The ldflags set the same version variables as the Makefile.
	mk := string(mustRead(t, filepath.Join(root, "Makefile")))
	vpkg := regexp.MustCompile(`VPKG\s*:=\s*(\S+)`).FindStringSubmatch(mk)
	runs := strings.Join(build.all("RUN"), " ")
	if vpkg == nil || !strings.Contains(runs, "make build") && !strings.Contains(runs, "-X "+vpkg[1]+".Version=") {
		t.Errorf("the build does not set %v.Version like the Makefile", vpkg)
	}

	if strings.HasPrefix(final.from, "golang") {
		t.Errorf("the final image is the Go toolchain image %s", final.from)
	}
	// COPY --from=build <built> <bin>
	var bin string
	for _, c := range final.all("COPY") {
		f := strings.Fields(c)
		if len(f) == 3 && f[0] == "--from="+build.name && f[1] == built {
			bin = f[2]
		}
	}
	if bin == "" {
		t.Fatalf("the final stage does not copy %s from stage %s", built, build.name)
	}

	user := final.one(t, "USER")
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 || user == "root" {
		t.Errorf("USER %q: want a numeric non-root uid (runAsNonRoot needs a number)", user)
	}
	if got := final.one(t, "EXPOSE"); got != exporterPort(t) {
		t.Errorf("EXPOSE %s, but the exporter listens on %s", got, config.DefaultListenAddress)
	}
	if ep := execForm(t, final.one(t, "ENTRYPOINT")); len(ep) != 1 || ep[0] != bin {
		t.Errorf("ENTRYPOINT %v, want [%s]", ep, bin)
	}

	// The image's own health check probes the process (/-/healthy), never
	// the broker: see TestHealthcheckCommandsRun.
	hc := final.one(t, "HEALTHCHECK")
	opts, cmd, ok := strings.Cut(hc, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK without CMD: %s", hc)
	}
	argv := execForm(t, strings.TrimSpace(cmd))
	if len(argv) < 2 || argv[0] != bin || argv[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK runs %v, want %s healthcheck", argv, bin)
	}
	// The probe must give up before Docker does, or a hung server reads
	// as "health check timed out" instead of the probe's own message.
	m := regexp.MustCompile(`--timeout=(\d+)s`).FindStringSubmatch(opts)
	if m == nil {
		t.Fatalf("HEALTHCHECK needs --timeout: %s", hc)
	}
	if a := time.Duration(atoi(m[1])) * time.Second; server.DefaultProbeTimeout >= a {
		t.Errorf("the probe's %s must be shorter than the HEALTHCHECK --timeout=%s", server.DefaultProbeTimeout, a)
	}
	mustExist(t, filepath.Join(root, ".dockerignore"), "the build context needs a .dockerignore")
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func TestWorkerDockerfile(t *testing.T) {
	root := testserver.RepoRoot(t)
	args, stages := parseDockerfile(t, filepath.Join(root, "deploy/worker/Dockerfile"))
	if len(stages) != 2 {
		t.Fatalf("want 2 stages, have %d", len(stages))
	}
	built := checkGoBuildStage(t, root, args, stages[0])
	final := stages[1]
	found := false
	for _, c := range final.all("COPY") {
		f := strings.Fields(c)
		if f[0] == "--from="+stages[0].name {
			found = f[1] == built && f[2] == "/usr/local/bin/dramatiq_exporter"
			continue
		}
		for _, src := range f[:len(f)-1] {
			mustExist(t, filepath.Join(root, src), "worker COPY "+src)
		}
	}
	if !found {
		t.Error("the worker image does not put dramatiq_exporter on PATH")
	}
	if u := final.one(t, "USER"); u == "root" || u == "0" {
		t.Errorf("the worker runs as %s", u)
	}
	cmd := execForm(t, final.one(t, "CMD"))
	if len(cmd) < 2 || cmd[0] != "dramatiq" || cmd[1] != "tasks" {
		t.Errorf("worker CMD %v", cmd)
	}
	// The example pins the Dramatiq release the conformance suite runs.
	if ref, err := os.ReadFile(filepath.Join(root, "test/dramatiq/requirements.txt")); err == nil {
		// The tests' pin carries more extras (rabbitmq) than a Redis worker
		// needs: the release is what must match.
		pin := regexp.MustCompile(`(?m)^dramatiq\[[a-z,]*redis[a-z,]*\]==(\S+)`)
		a := pin.FindStringSubmatch(string(ref))
		b := pin.FindStringSubmatch(string(mustRead(t, filepath.Join(root, "deploy/worker/requirements.txt"))))
		if a == nil || b == nil || a[1] != b[1] {
			t.Errorf("deploy/worker pins %q, the tests %q", b, a)
		}
	}
}

// --- docker-compose ---

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Command     any               `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   any               `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Profiles []string          `yaml:"profiles"`
	Labels   map[string]string `yaml:"labels"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

func loadCompose(t *testing.T, root string) composeFile {
	t.Helper()
	var c composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(mustRead(t, filepath.Join(root, "deploy/docker-compose.yml")))))
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// hostPath maps a container path to the host through a service's bind
// mounts (relative to deploy/, where the compose file lives).
func hostPath(t *testing.T, root string, svc composeService, inContainer string) string {
	t.Helper()
	best := ""
	var host string
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		src, dst := parts[0], parts[1]
		if (inContainer == dst || strings.HasPrefix(inContainer, dst+"/")) && len(dst) > len(best) {
			best = dst
			host = filepath.Join(root, "deploy", src, strings.TrimPrefix(inContainer, dst))
		}
	}
	if best == "" {
		t.Fatalf("%s is not mounted from the host", inContainer)
	}
	return host
}

func dependsOn(svc composeService) []string {
	var out []string
	switch d := svc.DependsOn.(type) {
	case []any:
		for _, x := range d {
			out = append(out, x.(string))
		}
	case map[string]any:
		for k := range d {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// containerPort returns the container side of a published port.
func containerPort(t *testing.T, svc composeService, name string) string {
	t.Helper()
	if len(svc.Ports) == 0 {
		t.Fatalf("service %s publishes no port", name)
	}
	p := strings.Split(svc.Ports[0], ":")
	return p[len(p)-1]
}

func TestCompose(t *testing.T) {
	root := testserver.RepoRoot(t)
	c := loadCompose(t, root)
	for _, name := range []string{"redis", "postgres", "worker", "exporter", "prometheus", "alertmanager", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %q", name)
		}
	}
	for name, svc := range c.Services {
		if svc.Image == "" && svc.Build == nil {
			t.Errorf("service %s has neither image nor build", name)
		}
		if svc.Build != nil {
			mustExist(t, filepath.Join(root, "deploy", svc.Build.Context, svc.Build.Dockerfile), name+": build dockerfile")
		}
		for _, v := range svc.Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, ".") {
				mustExist(t, filepath.Join(root, "deploy", src), name+": volume "+v)
			}
		}
		for _, d := range dependsOn(svc) {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("%s depends on unknown service %s", name, d)
			}
		}
	}

	exp, worker := c.Services["exporter"], c.Services["worker"]
	if exp.Build == nil || filepath.Clean(filepath.Join("deploy", exp.Build.Context, exp.Build.Dockerfile)) != "Dockerfile" {
		t.Errorf("the exporter is not built from the repository's Dockerfile: %+v", exp.Build)
	}
	if got := containerPort(t, exp, "exporter"); got != exporterPort(t) {
		t.Errorf("the exporter publishes container port %s, it listens on %s", got, exporterPort(t))
	}
	// The worker checks with the same variables the exporter reads.
	if argv := worker.Healthcheck.Test; len(argv) < 3 || argv[0] != "CMD" || argv[1] != "dramatiq_exporter" || argv[2] != "check" {
		t.Errorf("worker healthcheck %v, want [CMD dramatiq_exporter check ...]", argv)
	}
	for _, name := range []string{"exporter", "worker"} {
		env := c.Services[name].Environment
		checkURL(t, c, name, "REDIS_URL", env["REDIS_URL"], "redis", "6379")
		checkURL(t, c, name, "DATABASE_URL", env["DATABASE_URL"], "postgres", "5432")
	}
	if got := c.Services["autoheal"]; !slices.Contains(got.Profiles, "autoheal") || worker.Labels["autoheal"] != "true" {
		t.Error("the autoheal watcher must be opt-in (profile autoheal) and the worker labelled for it")
	}

	// Prometheus: scrapes the exporter, alerts to Alertmanager, loads the
	// shipped rules through its mount.
	prom := c.Services["prometheus"]
	var pcfg struct {
		RuleFiles []string `yaml:"rule_files"`
		Alerting  struct {
			Alertmanagers []struct {
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
			} `yaml:"alertmanagers"`
		} `yaml:"alerting"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	promConfig := hostPath(t, root, prom, "/etc/prometheus/prometheus.yml")
	if err := yaml.Unmarshal(mustRead(t, promConfig), &pcfg); err != nil {
		t.Fatal(err)
	}
	// The exporter under the rules' first job, the workers' middleware
	// (deploy/worker/Dockerfile) under the other.
	targets := []string{"exporter:" + exporterPort(t), "worker:9191"}
	jobs := rulesJobs(t, root)
	if len(jobs) != 2 {
		t.Fatalf("the rules select jobs %q: want the exporter's and the workers'", jobs)
	}
	for i, job := range jobs {
		scraped := false
		for _, sc := range pcfg.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				if sc.JobName == job && slices.Contains(st.Targets, targets[i]) {
					scraped = true
				}
			}
		}
		if !scraped {
			t.Errorf("no scrape config with job_name %q targets %s", job, targets[i])
		}
	}
	if wd := mustRead(t, filepath.Join(root, "deploy/worker/Dockerfile")); !strings.Contains(string(wd), "dramatiq_prom_port=9191") {
		t.Error("the worker image does not serve its middleware's metrics on :9191")
	}
	am := c.Services["alertmanager"]
	amTarget := "alertmanager:" + containerPort(t, am, "alertmanager")
	if len(pcfg.Alerting.Alertmanagers) != 1 || !slices.Contains(pcfg.Alerting.Alertmanagers[0].StaticConfigs[0].Targets, amTarget) {
		t.Errorf("Prometheus does not alert to %s", amTarget)
	}
	var rules []string
	for _, pattern := range pcfg.RuleFiles {
		matches, err := filepath.Glob(hostPath(t, root, prom, pattern))
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, matches...)
	}
	if !slices.Contains(rules, filepath.Join(root, rulesFile)) {
		t.Errorf("rule_files %v load %v, not %s", pcfg.RuleFiles, rules, rulesFile)
	}

	// Alertmanager reads the shipped config.
	amArgs := strings.Join(toStrings(am.Command), " ")
	amCfg := regexp.MustCompile(`--config\.file=(\S+)`).FindStringSubmatch(amArgs)
	if amCfg == nil || hostPath(t, root, am, amCfg[1]) != filepath.Join(root, "alerts/alertmanager.yml") {
		t.Errorf("Alertmanager does not load alerts/alertmanager.yml: %v", amArgs)
	}

	// Grafana: a Prometheus datasource pointing at the prometheus service,
	// and the shipped dashboards provisioned from their mount.
	graf := c.Services["grafana"]
	var ds struct {
		Datasources []struct {
			Type, URL string
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(mustRead(t, hostPath(t, root, graf, "/etc/grafana/provisioning/datasources/prometheus.yml")), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" ||
		ds.Datasources[0].URL != "http://prometheus:"+containerPort(t, prom, "prometheus") {
		t.Errorf("datasources = %+v", ds.Datasources)
	}
	var dash struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(mustRead(t, hostPath(t, root, graf, "/etc/grafana/provisioning/dashboards/dramatiq.yml")), &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Providers) != 1 {
		t.Fatalf("dashboard providers = %+v", dash.Providers)
	}
	dir := hostPath(t, root, graf, dash.Providers[0].Options.Path)
	if dir != filepath.Join(root, "dashboards") {
		t.Errorf("Grafana loads dashboards from %s, not dashboards/", dir)
	}
	if jsons, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(jsons) == 0 {
		t.Errorf("no dashboards in %s", dir)
	}
	if home := graf.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		mustExist(t, hostPath(t, root, graf, home), "Grafana home dashboard")
	}
}

func toStrings(v any) []string {
	var out []string
	switch x := v.(type) {
	case string:
		out = strings.Fields(x)
	case []any:
		for _, s := range x {
			out = append(out, s.(string))
		}
	}
	return out
}

// checkURL asserts that a service's URL points at a compose service.
func checkURL(t *testing.T, c composeFile, svc, name, raw, host, port string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() != host || u.Port() != port {
		t.Errorf("%s: %s=%q, want host %s port %s", svc, name, raw, host, port)
	}
	if _, ok := c.Services[host]; !ok {
		t.Errorf("%s: %s points at unknown service %s", svc, name, host)
	}
}

// promtool validates the demo's Prometheus config and, through it, the
// rule files it loads (mounted paths mapped back to the repository).
func TestComposePrometheusConfigWithPromtool(t *testing.T) {
	for _, rel := range testserver.PromReleases(t) {
		t.Run(rel.Name, func(t *testing.T) { checkComposePrometheusConfig(t, rel.Promtool) })
	}
}

func checkComposePrometheusConfig(t *testing.T, promtool string) {
	root := testserver.RepoRoot(t)
	c := loadCompose(t, root)
	prom := c.Services["prometheus"]
	cfg := string(mustRead(t, hostPath(t, root, prom, "/etc/prometheus/prometheus.yml")))
	cfg = strings.ReplaceAll(cfg, "/etc/prometheus/rules/", hostPath(t, root, prom, "/etc/prometheus/rules")+"/")
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") || !strings.Contains(string(out), "rules found") {
		t.Fatalf("promtool did not check any rules:\n%s", out)
	}
}

// The health checks in the Dockerfile and the compose file must be
// commands the binary accepts. The worker's `check` judges the broker:
// against a closed Redis port it answers "unhealthy" (1), not a usage
// error (2). The image's `healthcheck` judges the exporter process: it
// fails while nothing serves and passes once the exporter does, with
// Redis down. Its listen address comes from the config file, as the
// Dockerfile's comment tells users to set it.
func TestHealthcheckCommandsRun(t *testing.T) {
	root := testserver.RepoRoot(t)
	bin, err := testserver.BuildExporter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	closed := "redis://127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)) + "/0"

	worker := loadCompose(t, root).Services["worker"].Healthcheck.Test[2:]
	c := exec.Command(bin, worker...)
	c.Env = []string{"REDIS_URL=" + closed, "PATH=" + os.Getenv("PATH")}
	out, err := c.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), `"status":"unhealthy"`) {
		t.Errorf("compose worker healthcheck %v: %v, stdout %s", worker, err, out)
	}

	_, stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	_, cmd, _ := strings.Cut(stages[len(stages)-1].one(t, "HEALTHCHECK"), "CMD ")
	image := execForm(t, strings.TrimSpace(cmd))[1:]
	port := testserver.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfg, []byte("web:\n  listen_addresses: [\"127.0.0.1:"+strconv.Itoa(port)+"\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"REDIS_URL=" + closed, "DRAMATIQ_EXPORTER_CONFIG=" + cfg, "PATH=" + os.Getenv("PATH")}
	probe := func() (int, string) {
		c := exec.Command(bin, image...)
		c.Env = env
		out, err := c.CombinedOutput()
		if errors.As(err, &exit) {
			return exit.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := probe(); code != 1 {
		t.Errorf("Dockerfile HEALTHCHECK %v with nothing serving: exit %d, want 1: %s", image, code, out)
	}
	srv := exec.Command(bin)
	srv.Env = env
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out := probe()
		if code == 0 {
			break
		}
		if code != 1 || time.Now().After(deadline) {
			t.Fatalf("Dockerfile HEALTHCHECK %v against a serving exporter (Redis down): exit %d: %s", image, code, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dockerBuildRun returns the build stage's RUN that builds the binary for
// the target, checking that the stage runs on the builder's platform and
// takes the target from BuildKit's TARGET* arguments.
func dockerBuildRun(t *testing.T, root string) (run, out string) {
	t.Helper()
	args, stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	build := stages[0]
	// Without --platform=$BUILDPLATFORM, BuildKit runs an arm64 image's
	// build stage under QEMU emulation: minutes instead of seconds.
	if build.platform != "$BUILDPLATFORM" {
		t.Errorf("build stage FROM --platform=%q, want $BUILDPLATFORM", build.platform)
	}
	declared := map[string]bool{}
	for _, a := range build.all("ARG") {
		for _, f := range strings.Fields(a) {
			k, _, _ := strings.Cut(f, "=")
			declared[k] = true
		}
	}
	for _, a := range []string{"TARGETOS", "TARGETARCH", "TARGETVARIANT"} {
		if !declared[a] {
			t.Errorf("build stage does not declare ARG %s (BuildKit sets it only for a stage that does)", a)
		}
	}
	for _, r := range build.all("RUN") {
		if strings.Contains(r, "make build") {
			if run != "" {
				t.Fatal("two make build RUNs in the build stage")
			}
			run = r
		}
	}
	if run == "" {
		t.Fatal("no make build in the build stage")
	}
	return run, checkGoBuildStage(t, root, args, build)
}

// TestDockerfileTargetPlatforms runs the Dockerfile's build command as
// BuildKit would for each platform of a multi-arch image, with a make that
// only records its environment: TARGET* must become GOOS, GOARCH and GOARM.
func TestDockerfileTargetPlatforms(t *testing.T) {
	root := testserver.RepoRoot(t)
	run, _ := dockerBuildRun(t, root)
	bin := t.TempDir()
	fake := "#!/bin/sh\nprintf '%s %s %s|%s\\n' \"$GOOS\" \"$GOARCH\" \"$GOARM\" \"$*\"\n"
	if err := os.WriteFile(filepath.Join(bin, "make"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	for platform, want := range map[string]string{
		"linux/amd64":   "linux amd64 ",
		"linux/arm64":   "linux arm64 ",
		"linux/arm/v7":  "linux arm 7",
		"linux/arm/v6":  "linux arm 6",
		"windows/amd64": "windows amd64 ",
	} {
		p := strings.Split(platform, "/")
		variant := ""
		if len(p) == 3 {
			variant = p[2]
		}
		c := exec.Command("sh", "-c", run)
		c.Dir = root
		c.Env = []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
			"TARGETOS=" + p[0], "TARGETARCH=" + p[1], "TARGETVARIANT=" + variant,
			"GOARM=5"} // must not leak through for an arm64 target
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", platform, err, out)
		}
		env, args, _ := strings.Cut(strings.TrimSpace(string(out)), "|")
		if env != want {
			t.Errorf("%s: make build ran with GOOS GOARCH GOARM = %q, want %q", platform, env, want)
		}
		if !strings.HasPrefix(args, "build ") {
			t.Errorf("%s: make %s", platform, args)
		}
	}
}

// TestDockerfileBuildsArm64 runs the Dockerfile's build command for
// linux/arm64 for real (no Docker engine here, but the command is the
// same), and checks the binary is a static aarch64 ELF built the Makefile's
// way.
func TestDockerfileBuildsArm64(t *testing.T) {
	root := testserver.RepoRoot(t)
	run, built := dockerBuildRun(t, root)
	dir := t.TempDir()
	out := filepath.Join(dir, "dramatiq_exporter")
	run = strings.ReplaceAll(run, built, out)
	c := exec.Command("sh", "-c", run)
	c.Dir = root
	// An ARG given no value is an empty variable in RUN: the Makefile
	// must then use VERSION and git, not stamp empty strings.
	c.Env = append(os.Environ(), "TARGETOS=linux", "TARGETARCH=arm64", "TARGETVARIANT=",
		"VERSION=", "REVISION=", "BRANCH=", "GOFLAGS=", "GOOS=", "GOARCH=")
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", run, err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 {
		t.Errorf("machine %v %v, want EM_AARCH64 ELFCLASS64", f.Machine, f.Class)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader: not static, it would not start on distroless/static")
		}
	}
	bi, err := buildinfo.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["GOOS"] != "linux" || settings["GOARCH"] != "arm64" || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings %v", settings)
	}
	// -trimpath keeps -ldflags out of the build settings; the stamped
	// revision is in the binary's data.
	rev, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(mustRead(t, out), bytes.TrimSpace(rev)) {
		t.Errorf("the binary does not carry the revision %s", bytes.TrimSpace(rev))
	}
}
