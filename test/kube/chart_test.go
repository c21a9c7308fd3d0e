package kube

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imageUID is the numeric USER of the exporter's image.
func imageUID(t *testing.T) int64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^USER (\d+)`).FindAllSubmatch(mustRead(t, filepath.Join(testserver.RepoRoot(t), "Dockerfile")), -1)
	if len(m) == 0 {
		t.Fatal("Dockerfile: no numeric USER")
	}
	uid, _ := strconv.ParseInt(string(m[len(m)-1][1]), 10, 64)
	return uid
}

func exporterContainer(t *testing.T, dep *appsv1.Deployment) *corev1.Container {
	t.Helper()
	if len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(dep.Spec.Template.Spec.Containers))
	}
	return &dep.Spec.Template.Spec.Containers[0]
}

// checkDeployment checks what the chart promises of every Deployment it
// renders, whatever the values: a locked-down pod, resources, probes on
// the exporter's own health endpoints, and a Service that reaches it.
func checkDeployment(t *testing.T, r *rendered) {
	t.Helper()
	dep := one(t, "Deployment", r.deployments)
	pod := dep.Spec.Template.Spec
	c := exporterContainer(t, dep)

	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != imageUID(t) {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and the image's uid %d", psc, imageUID(t))
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile: want RuntimeDefault")
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container without securityContext")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities %+v: want drop [ALL]", sc.Capabilities)
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("privileged")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the exporter talks to no Kubernetes API; do not mount a token")
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("no %s request", res)
		}
	}
	if lim, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	} else {
		checkGoMemLimit(t, c, lim.Value())
	}

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if listen := flagValue(c.Args, "web.listen-address"); listen != ":"+strconv.Itoa(int(ports["http-metrics"])) {
		t.Errorf("--web.listen-address=%s, but the container port http-metrics is %d", listen, ports["http-metrics"])
	}
	for name, want := range map[string]*struct {
		p    *corev1.Probe
		path string
	}{"liveness": {c.LivenessProbe, "/-/healthy"}, "readiness": {c.ReadinessProbe, "/-/ready"}} {
		if want.p == nil || want.p.HTTPGet == nil {
			t.Errorf("%s probe %+v: want an HTTP GET of the exporter", name, want.p)
			continue
		}
		g := want.p.HTTPGet
		if g.Path != want.path {
			t.Errorf("%s probe path %s, want %s", name, g.Path, want.path)
		}
		if _, ok := ports[g.Port.String()]; !ok {
			t.Errorf("%s probe port %s is not a container port %v", name, g.Port.String(), ports)
		}
	}
	if sum := dep.Spec.Template.Annotations["checksum/config"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
		t.Errorf("checksum/config annotation %q", sum)
	}

	svc := one(t, "Service", r.services)
	if !subset(svc.Spec.Selector, dep.Spec.Template.Labels) || !subset(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels) {
		t.Error("the Service's or the Deployment's selector does not match the pod's labels")
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name == "" || ports[svc.Spec.Ports[0].TargetPort.String()] == 0 {
		t.Errorf("Service ports %+v: want one named port targeting a container port %v", svc.Spec.Ports, ports)
	}

	// Every volume mounted exists, and the config file the args name is in
	// the chart's ConfigMap.
	cm := configMapNamed(t, r, "")
	if _, ok := cm.Data[filepath.Base(flagValue(c.Args, "config.file"))]; !ok {
		t.Errorf("--config.file=%s is not in ConfigMap %s", flagValue(c.Args, "config.file"), cm.Name)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("volumeMount %s has no volume", m.Name)
			continue
		}
		if v.ConfigMap != nil && v.ConfigMap.Name != cm.Name {
			t.Errorf("volume %s mounts ConfigMap %s, the chart renders %s", v.Name, v.ConfigMap.Name, cm.Name)
		}
		if v.ConfigMap != nil && !strings.HasPrefix(flagValue(c.Args, "config.file"), m.MountPath+"/") {
			t.Errorf("--config.file=%s is not under the ConfigMap's mount %s", flagValue(c.Args, "config.file"), m.MountPath)
		}
	}
}

// configMapNamed is the chart's config ConfigMap (suffix "") or a
// dashboard's.
func configMapNamed(t *testing.T, r *rendered, suffix string) *corev1.ConfigMap {
	t.Helper()
	dep := one(t, "Deployment", r.deployments)
	for _, cm := range r.configMaps {
		if cm.Name == dep.Name+suffix {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s%s", dep.Name, suffix)
	return nil
}

func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// By default the chart deploys the exporter alone: credentials come from a
// Secret the user made, and the monitoring objects need CRDs that may not
// be installed.
func TestDefaultValues(t *testing.T) {
	r := render(t, nil)
	checkDeployment(t, r)
	if port := exporterContainer(t, r.deployments[0]).Ports[0].ContainerPort; ":"+strconv.Itoa(int(port)) != config.DefaultListenAddress {
		t.Errorf("containerPort %d, the exporter's default is %s", port, config.DefaultListenAddress)
	}
	if len(r.secrets)+len(r.serviceMonitor)+len(r.rules) != 0 || len(r.configMaps) != 1 {
		t.Errorf("default values render %d Secrets, %d ServiceMonitors, %d PrometheusRules, %d ConfigMaps; want the config ConfigMap only",
			len(r.secrets), len(r.serviceMonitor), len(r.rules), len(r.configMaps))
	}
	// GOMEMLIMIT (goMemLimit: auto) is the only variable without a Secret.
	if env := exporterContainer(t, r.deployments[0]).Env; len(env) != 1 || env[0].Name != "GOMEMLIMIT" || env[0].Value != "115MiB" {
		t.Errorf("env %+v without a Secret, want GOMEMLIMIT=115MiB only", env)
	}
	// The default image is the release the chart belongs to.
	version := strings.TrimSpace(string(mustRead(t, filepath.Join(testserver.RepoRoot(t), "VERSION"))))
	if img := exporterContainer(t, r.deployments[0]).Image; !strings.HasSuffix(img, ":"+version) {
		t.Errorf("default image %s, the exporter's VERSION is %s (Chart.yaml appVersion)", img, version)
	}
}

// With existingSecret, every credential comes from that Secret, each key
// optional so the config file fills what the Secret lacks.
func TestExistingSecret(t *testing.T) {
	r := render(t, nil, "credentials.existingSecret=broker-creds")
	checkDeployment(t, r)
	if len(r.secrets) != 0 {
		t.Error("the chart created a Secret although one exists")
	}
	want := map[string]string{"REDIS_URL": "redis-url", "REDIS_PASSWORD": "redis-password", "REDIS_SENTINEL_PASSWORD": "redis-sentinel-password", "RABBITMQ_PASSWORD": "rabbitmq-password", "DATABASE_URL": "database-url", "DATABASE_PASSWORD": "database-password"}
	got := map[string]string{}
	for _, e := range exporterContainer(t, r.deployments[0]).Env {
		if e.Name == "GOMEMLIMIT" {
			continue // from the memory limit, not a credential
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref == nil || ref.Name != "broker-creds" || ref.Optional == nil || !*ref.Optional {
			t.Errorf("env %s: %+v", e.Name, e.ValueFrom)
			continue
		}
		got[e.Name] = ref.Key
	}
	if !equalJSON(t, got, want) {
		t.Errorf("env from the Secret %v, want %v", got, want)
	}
	// Each is the environment variable of one of the exporter's flags.
	app := kingpin.New("test", "")
	config.AddFlags(app, nil)
	envars := map[string]bool{}
	for _, f := range app.Model().Flags {
		envars[f.Envar] = true
	}
	for name := range got {
		if !envars[name] {
			t.Errorf("env %s: the exporter reads no such variable", name)
		}
	}
}

// Values the chart refuses rather than render something broken.
func TestRefusedValues(t *testing.T) {
	for _, c := range []struct {
		set  []string
		says string
	}{
		{[]string{"credentials.existingSecret=x", "credentials.create=true"}, "either existingSecret or create"},
		{[]string{"config.web.listen_addresses={:9999}"}, "set containerPort instead"},
		// values.schema.json: a misspelt switch must not silently do nothing.
		{[]string{"serviceMonitor.enable=true"}, "'enable' not allowed"},
		{[]string{"containerPort=0"}, "containerPort"},
	} {
		if _, err := renderRaw(t, nil, c.set...); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("--set %v: %v, want an error saying %q", c.set, err, c.says)
		}
	}
}

// A change of the config file changes the pod template, so Kubernetes
// rolls the pods; the same config does not.
func TestConfigChecksumRolls(t *testing.T) {
	sum := func(set ...string) string {
		return render(t, nil, set...).deployments[0].Spec.Template.Annotations["checksum/config"]
	}
	a, b, c := sum(), sum(), sum("config.dramatiq.namespace=other")
	if a != b || a == c {
		t.Errorf("checksums %s, %s (same config) and %s (other namespace)", a, b, c)
	}
}

// Every option turned on: every object decodes, and the monitoring objects
// carry the labels kube-prometheus-stack selects on.
func TestAllValues(t *testing.T) {
	root := testserver.RepoRoot(t)
	r := render(t, []string{allValues})
	checkDeployment(t, r)
	dep := r.deployments[0]
	c := exporterContainer(t, dep)

	// The created Secret holds every key the env reads.
	sec := one(t, "Secret", r.secrets)
	for _, e := range c.Env {
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			if ref.SecretKeyRef.Name != sec.Name {
				t.Errorf("env %s reads Secret %s, the chart created %s", e.Name, ref.SecretKeyRef.Name, sec.Name)
			} else if _, ok := sec.StringData[ref.SecretKeyRef.Key]; !ok {
				t.Errorf("env %s reads key %s, not in the Secret", e.Name, ref.SecretKeyRef.Key)
			}
		}
	}
	if len(sec.StringData) != 6 {
		t.Errorf("Secret keys %v, want the 6 credentials", keys(sec.StringData))
	}
	if dep.Spec.Template.Annotations["checksum/secret"] == "" {
		t.Error("no checksum/secret annotation: a changed password would not roll the pods")
	}
	if flagValue(c.Args, "web.config.file") == "" {
		t.Error("webConfig.existingSecret does not set --web.config.file")
	}

	sm := one(t, "ServiceMonitor", r.serviceMonitor)
	svc := r.services[0]
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v", sm.Labels)
	}
	if !subset(sm.Spec.Selector.MatchLabels, svc.Labels) || !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Error("the ServiceMonitor does not select the Service")
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor endpoints %+v, Service port %s", sm.Spec.Endpoints, svc.Spec.Ports[0].Name)
	}
	if ep := sm.Spec.Endpoints[0]; ep.Scheme == nil || *ep.Scheme != "https" || ep.TLSConfig == nil || len(ep.MetricRelabelConfigs) != 1 {
		t.Errorf("ServiceMonitor endpoint %+v: scheme, tlsConfig or metricRelabelings lost", ep)
	}
	if rule := one(t, "PrometheusRule", r.rules); rule.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule labels %v", rule.Labels)
	}

	// One ConfigMap per dashboard, labelled and foldered for the sidecar,
	// holding the shipped dashboard unchanged.
	files, _ := filepath.Glob(filepath.Join(root, "dashboards/*.json"))
	if len(files) == 0 || len(r.configMaps) != 1+len(files) {
		t.Fatalf("%d ConfigMaps for %d dashboards", len(r.configMaps), len(files))
	}
	for _, f := range files {
		cm := configMapNamed(t, r, "-"+strings.TrimPrefix(strings.TrimSuffix(filepath.Base(f), ".json"), "dramatiq-"))
		if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Dramatiq" || cm.Namespace != "grafana" {
			t.Errorf("%s: labels %v, annotations %v, namespace %s", cm.Name, cm.Labels, cm.Annotations, cm.Namespace)
		}
		if got := cm.Data[filepath.Base(f)]; got != strings.TrimRight(string(mustRead(t, f)), "\n") {
			t.Errorf("%s does not hold %s unchanged", cm.Name, f)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// The job the ServiceMonitor gives the scraped series is the job every
// rule of the PrometheusRule selects, for the default job and for another;
// and the rules are exactly what alerts/mixin generates for that job (for
// the default, the shipped alerts/dramatiq.rules.yml).
func TestJobAgrees(t *testing.T) {
	root := testserver.RepoRoot(t)
	for _, job := range []string{"", "dramatiq-prod"} {
		set := []string{"serviceMonitor.enabled=true", "prometheusRule.enabled=true"}
		if job != "" {
			set = append(set, "job="+job)
		}
		r := render(t, nil, set...)
		produced := scrapedJob(t, one(t, "ServiceMonitor", r.serviceMonitor))

		cfg := mixin.DefaultConfig()
		if job != "" {
			cfg.Selector = `job="` + job + `"`
		}
		want := ruleGroups(t, cfg.RulesYAML())
		if job == "" {
			if shipped := ruleGroups(t, mustRead(t, filepath.Join(root, "alerts/dramatiq.rules.yml"))); !equalJSON(t, shipped, want) {
				t.Fatal("alerts/dramatiq.rules.yml is not what alerts/mixin generates: go run ./alerts/gen")
			}
		}
		got := one(t, "PrometheusRule", r.rules).Spec.Groups
		if !equalJSON(t, got, want) {
			t.Errorf("job %q: the PrometheusRule's groups differ from the rules generated for %s", produced, cfg.Selector)
		}
		selected := map[string]bool{}
		for _, g := range got {
			for _, rule := range g.Rules {
				for _, m := range regexp.MustCompile(`\bjob\s*(=~|!=|!~|=)\s*"([^"]*)"`).FindAllStringSubmatch(rule.Expr.String(), -1) {
					selected[m[1]+m[2]] = true
				}
			}
		}
		// The per-actor rules select the workers' own scrape job (their
		// Prometheus middleware), which the application's own PodMonitor
		// produces, not this chart.
		for _, m := range regexp.MustCompile(`\bjob\s*(=~|!=|!~|=)\s*"([^"]*)"`).FindAllStringSubmatch(cfg.WorkersSelector, -1) {
			delete(selected, m[1]+m[2])
		}
		if len(selected) != 1 || !selected["="+produced] {
			t.Errorf("the ServiceMonitor produces job=%q; the rules select %v", produced, keys(selected))
		}
	}

	// The dashboards select the job through their $job variable, whose
	// values are every job that runs the exporter: they show what any
	// ServiceMonitor produces.
	files, _ := filepath.Glob(filepath.Join(root, chartDir, "files/dashboards/*.json"))
	for _, f := range files {
		var d struct {
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		b := mustRead(t, f)
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		found := false
		for _, v := range d.Templating.List {
			if v.Name == "job" {
				q, _ := json.Marshal(v.Query)
				found = strings.Contains(string(q), "label_values(") && !strings.Contains(string(q), "job=")
			}
		}
		if !found {
			t.Errorf("%s: no job variable listing every job", f)
		}
		if m := regexp.MustCompile(`job\s*(=|=~|!=|!~)\s*\\"([^$\\][^\\]*)\\"`).FindAllString(string(b), -1); len(m) > 0 {
			t.Errorf("%s: fixed job selectors %v", f, m)
		}
	}
}

// scrapedJob is the job label the ServiceMonitor's relabelings give every
// target: one replace into job with a fixed replacement, and no metric
// relabeling that changes it afterwards.
func scrapedJob(t *testing.T, sm *monitoringv1.ServiceMonitor) string {
	t.Helper()
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	job := ""
	for _, rc := range ep.RelabelConfigs {
		if rc.TargetLabel == "job" {
			if job != "" || (rc.Action != "" && rc.Action != "replace") || len(rc.SourceLabels) > 0 || rc.Replacement == nil {
				t.Fatalf("job relabeling %+v: want one fixed replacement", rc)
			}
			job = *rc.Replacement
		}
	}
	for _, rc := range ep.MetricRelabelConfigs {
		if rc.TargetLabel == "job" {
			t.Fatalf("a metric relabeling changes the job: %+v", rc)
		}
	}
	if job == "" {
		t.Fatal("the ServiceMonitor leaves the job to the operator (the Service's name)")
	}
	return job
}

// ruleGroups decodes a Prometheus rule file's groups strictly into the
// operator's type, as a PrometheusRule's spec would hold them.
func ruleGroups(t *testing.T, rules []byte) []monitoringv1.RuleGroup {
	t.Helper()
	var f struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := strictYAML(rules, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	return f.Groups
}

// The chart's copies of the rules and dashboards are the files the
// generator writes (also checked by alerts/mixin's TestCommittedFilesUpToDate).
func TestChartFilesUpToDate(t *testing.T) {
	root := testserver.RepoRoot(t)
	files, err := mixin.DefaultConfig().Files()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rel, want := range files {
		if strings.HasPrefix(rel, mixin.ChartFiles+"/") {
			n++
			if got, err := os.ReadFile(filepath.Join(root, rel)); err != nil || string(got) != string(want) {
				t.Errorf("%s is out of date (%v): go run ./alerts/gen", rel, err)
			}
		}
	}
	if n == 0 {
		t.Fatal("the generator writes nothing into the chart")
	}
	// Nothing stale is left behind in files/ either.
	var extra []string
	_ = filepath.Walk(filepath.Join(root, mixin.ChartFiles), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(root, p)
			if _, ok := files[filepath.ToSlash(rel)]; !ok {
				extra = append(extra, rel)
			}
		}
		return nil
	})
	if len(extra) > 0 {
		t.Errorf("files the generator does not write: %v", extra)
	}
}

// checkGoMemLimit: the Go runtime is told of the pod's memory limit, with
// room under it, so that it collects harder instead of being killed.
func checkGoMemLimit(t *testing.T, c *corev1.Container, limit int64) {
	t.Helper()
	var v string
	n := 0
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			v, n = e.Value, n+1
		}
	}
	if n != 1 {
		t.Errorf("GOMEMLIMIT is set %d times, want once", n)
		return
	}
	mib, ok := strings.CutSuffix(v, "MiB")
	b, err := strconv.ParseInt(mib, 10, 64)
	if !ok || err != nil {
		t.Errorf("GOMEMLIMIT=%q: want <n>MiB", v)
		return
	}
	if b <<= 20; b < limit*8/10 || b > limit*95/100 {
		t.Errorf("GOMEMLIMIT=%s is not 80–95%% of the memory limit %d", v, limit)
	}
}

// goMemLimit follows the memory limit, is taken as given, or is left to
// extraEnv.
func TestGoMemLimit(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"resources.limits.memory=0.5Gi"}, "460MiB"},
		{[]string{"resources.limits.memory=134217728"}, "115MiB"},
		{[]string{"resources.limits.memory=1G"}, "858MiB"},
		{[]string{"goMemLimit=100MiB"}, "100MiB"},
		{[]string{"extraEnv[0].name=GOMEMLIMIT", "extraEnv[0].value=50MiB"}, "50MiB"},
		{[]string{"goMemLimit="}, ""},
	} {
		r := render(t, nil, tc.set...)
		c := exporterContainer(t, one(t, "Deployment", r.deployments))
		var got []string
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				got = append(got, e.Value)
			}
		}
		if want := []string{tc.want}; (tc.want == "" && len(got) != 0) || (tc.want != "" && !slices.Equal(got, want)) {
			t.Errorf("%v: GOMEMLIMIT %q, want %q", tc.set, got, tc.want)
		}
	}
	if _, err := renderRaw(t, nil, "resources.limits.memory=lots"); err == nil || !strings.Contains(err.Error(), "goMemLimit") {
		t.Errorf("an unreadable memory limit rendered: %v", err)
	}
}

// On RabbitMQ: the broker and its settings reach the config file, and the
// password comes from the Secret as RABBITMQ_PASSWORD, never the file.
func TestRabbitMQValues(t *testing.T) {
	r := render(t, nil, "credentials.existingSecret=rabbit-creds", "config.broker=rabbitmq",
		"config.rabbitmq.url=https://rabbitmq.app.svc:15671", "config.rabbitmq.user=dramatiq-exporter",
		"config.rabbitmq.vhost=prod", "config.rabbitmq.prometheus_url=http://rabbitmq.app.svc:15692",
		"config.rabbitmq.tls_ca_file=/etc/dramatiq-exporter/rabbitmq-tls/ca.crt")
	checkDeployment(t, r)
	var file struct {
		Broker   string            `json:"broker"`
		RabbitMQ map[string]string `json:"rabbitmq"`
	}
	cm := configMapNamed(t, r, "")
	if err := yaml.Unmarshal([]byte(cm.Data["config.yml"]), &file); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"url": "https://rabbitmq.app.svc:15671", "user": "dramatiq-exporter", "vhost": "prod",
		"prometheus_url": "http://rabbitmq.app.svc:15692", "tls_ca_file": "/etc/dramatiq-exporter/rabbitmq-tls/ca.crt"}
	if file.Broker != "rabbitmq" || !equalJSON(t, file.RabbitMQ, want) {
		t.Errorf("config file %s", cm.Data["config.yml"])
	}
	found := false
	for _, e := range exporterContainer(t, r.deployments[0]).Env {
		if e.Name == "RABBITMQ_PASSWORD" {
			ref := e.ValueFrom.SecretKeyRef
			found = ref != nil && ref.Name == "rabbit-creds" && ref.Key == "rabbitmq-password"
		}
	}
	if !found {
		t.Error("RABBITMQ_PASSWORD does not come from the Secret's rabbitmq-password")
	}
	if strings.Contains(cm.Data["config.yml"], "password") {
		t.Errorf("the config file names a password: %s", cm.Data["config.yml"])
	}
}
