package kube

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// shards=1 (the default) renders exactly what the chart rendered before
// it had shards, with every value file.
func TestShardsOneIsTheDefault(t *testing.T) {
	for _, files := range [][]string{nil, {allValues}, {kubeValues}} {
		a, err := renderRaw(t, files)
		if err != nil {
			t.Fatal(err)
		}
		b, err := renderRaw(t, files, "shards=1")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%v: shards=1 renders differently from the default", files)
		}
		if r := render(t, files); len(r.statefulSets)+len(r.probes) != 0 || len(r.services) != 1 {
			t.Errorf("%v: %d StatefulSets, %d Probes, %d Services by default", files, len(r.statefulSets), len(r.probes), len(r.services))
		}
	}
}

// With shards, every probed target is kept by exactly one shard's Probe,
// the one its hash names, and sent to that shard's own pod: successive
// scrapes of a target always reach the process that holds its counters.
func TestShards(t *testing.T) {
	r := render(t, []string{shardValues})
	var values struct {
		Shards int    `json:"shards"`
		Job    string `json:"job"`
		Probes struct {
			Targets []string `json:"targets"`
		} `json:"probes"`
	}
	if err := yaml.Unmarshal(mustRead(t, filepath.Join(testserver.RepoRoot(t), shardValues)), &values); err != nil {
		t.Fatal(err)
	}
	var defaults struct {
		Job string `json:"job"`
	}
	if err := yaml.Unmarshal(mustRead(t, filepath.Join(testserver.RepoRoot(t), chartDir, "values.yaml")), &defaults); err != nil {
		t.Fatal(err)
	}
	if values.Job == "" {
		values.Job = defaults.Job
	}
	if values.Shards < 2 || len(values.Probes.Targets) < values.Shards {
		t.Fatalf("%s: %d shards, %d targets", shardValues, values.Shards, len(values.Probes.Targets))
	}

	if len(r.deployments) != 0 {
		t.Errorf("%d Deployments next to the StatefulSet", len(r.deployments))
	}
	sts := one(t, "StatefulSet", r.statefulSets)
	if sts.Spec.Replicas == nil || int(*sts.Spec.Replicas) != values.Shards {
		t.Fatalf("StatefulSet replicas %v, want shards=%d", sts.Spec.Replicas, values.Shards)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: a shard need not wait for the one before", sts.Spec.PodManagementPolicy)
	}
	// The pod is the one the Deployment runs, with everything
	// checkDeployment demands of it.
	dep := &appsv1.Deployment{ObjectMeta: sts.ObjectMeta, Spec: appsv1.DeploymentSpec{Selector: sts.Spec.Selector, Template: sts.Spec.Template}}
	var headless, plain *corev1.Service
	for _, svc := range r.services {
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			headless = svc
		} else {
			plain = svc
		}
	}
	if headless == nil || plain == nil || len(r.services) != 2 {
		t.Fatalf("want a headless Service and the chart's Service, have %d", len(r.services))
	}
	checkDeployment(t, &rendered{deployments: []*appsv1.Deployment{dep}, services: []*corev1.Service{plain}, configMaps: r.configMaps})
	if sts.Spec.ServiceName != headless.Name {
		t.Errorf("StatefulSet serviceName %q, the headless Service is %q", sts.Spec.ServiceName, headless.Name)
	}
	if !subset(headless.Spec.Selector, sts.Spec.Template.Labels) || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service selector %v (pod labels %v), publishNotReadyAddresses %v", headless.Spec.Selector, sts.Spec.Template.Labels, headless.Spec.PublishNotReadyAddresses)
	}
	c := exporterContainer(t, dep)
	if len(headless.Spec.Ports) != 1 || headless.Spec.Ports[0].Port != c.Ports[0].ContainerPort {
		t.Errorf("headless Service ports %+v, container port %d", headless.Spec.Ports, c.Ports[0].ContainerPort)
	}

	// The ServiceMonitor scrapes each pod's /metrics once: through the
	// chart's Service, not through the headless one as well.
	sel, err := metav1.LabelSelectorAsSelector(&one(t, "ServiceMonitor", r.serviceMonitor).Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(plain.Labels)) || sel.Matches(labels.Set(headless.Labels)) {
		t.Errorf("the ServiceMonitor's selector %s selects the Service: %v, the headless Service: %v", sel, sel.Matches(labels.Set(plain.Labels)), sel.Matches(labels.Set(headless.Labels)))
	}

	if len(r.probes) != values.Shards {
		t.Fatalf("%d Probes for %d shards", len(r.probes), values.Shards)
	}
	keptBy := map[string][]int{}
	for i, p := range r.probes {
		// The pod's stable DNS name under the headless Service, on the
		// container's port (a headless Service does not map ports).
		wantURL := fmt.Sprintf("%s-%d.%s.%s.svc:%d", sts.Name, i, headless.Name, namespace, c.Ports[0].ContainerPort)
		if p.Spec.ProberSpec.URL != wantURL || p.Spec.ProberSpec.Path != "/probe" {
			t.Errorf("Probe %s: prober %s%s, want %s/probe", p.Name, p.Spec.ProberSpec.URL, p.Spec.ProberSpec.Path, wantURL)
		}
		if p.Spec.JobName != values.Job || values.Job == "" {
			t.Errorf("Probe %s: job %q, the rules select the chart's job", p.Name, p.Spec.JobName)
		}
		if p.Labels["release"] != "kube-prometheus-stack" || len(p.Spec.MetricRelabelConfigs) != 1 {
			t.Errorf("Probe %s: labels %v, metricRelabelings %v", p.Name, p.Labels, p.Spec.MetricRelabelConfigs)
		}
		st := p.Spec.Targets.StaticConfig
		if st == nil || !slices.Equal(st.Targets, values.Probes.Targets) {
			t.Fatalf("Probe %s: static targets %+v, want every target %v", p.Name, st, values.Probes.Targets)
		}
		for _, target := range st.Targets {
			if keep(t, st.RelabelConfigs, target) {
				keptBy[target] = append(keptBy[target], i)
			}
		}
	}
	for _, target := range values.Probes.Targets {
		if want := int(hashmod(target, uint64(values.Shards))); !slices.Equal(keptBy[target], []int{want}) {
			t.Errorf("%s is kept by shards %v, want only %d", target, keptBy[target], want)
		}
	}

	// One shard: one Probe, through the Service, keeping every target.
	r1 := render(t, []string{shardValues}, "shards=1")
	p := one(t, "Probe", r1.probes)
	one(t, "Deployment", r1.deployments)
	if want := fmt.Sprintf("%s.%s.svc:%d", r1.services[0].Name, namespace, r1.services[0].Spec.Ports[0].Port); p.Spec.ProberSpec.URL != want {
		t.Errorf("one shard: prober %s, want the Service %s", p.Spec.ProberSpec.URL, want)
	}
	if rc := p.Spec.Targets.StaticConfig.RelabelConfigs; len(rc) != 0 {
		t.Errorf("one shard: relabelings %+v", rc)
	}

	// The allow-list may come as a flag instead of the config file.
	if _, err := renderRaw(t, nil, "probes.enabled=true", "probes.targets={redis://r.apps.svc:6379/0}", "extraArgs={--probe.allowed-targets=r.apps.svc:6379}"); err != nil {
		t.Errorf("allow-list in extraArgs: %v", err)
	}
}

// keep runs a Probe's relabelings as Prometheus does for a static target
// after the operator's own (__param_target is the target); only the
// actions the chart uses are known.
func keep(t *testing.T, rcs []monitoringv1.RelabelConfig, target string) bool {
	t.Helper()
	ls := map[string]string{"__param_target": target, "instance": target}
	for _, rc := range rcs {
		var vals []string
		for _, l := range rc.SourceLabels {
			vals = append(vals, ls[string(l)])
		}
		val := strings.Join(vals, ";")
		switch rc.Action {
		case "hashmod":
			ls[rc.TargetLabel] = strconv.FormatUint(hashmod(val, uint64(rc.Modulus)), 10)
		case "keep":
			if !regexp.MustCompile("^(?:" + rc.Regex + ")$").MatchString(val) {
				return false
			}
		default:
			t.Fatalf("relabeling action %q", rc.Action)
		}
	}
	return true
}

// hashmod is Prometheus's: the last 8 bytes of the value's MD5, big-endian,
// modulo the modulus (model/relabel). The end-to-end test in test/shards
// checks the real Prometheus against the same assignment.
func hashmod(val string, modulus uint64) uint64 {
	sum := md5.Sum([]byte(val))
	return binary.BigEndian.Uint64(sum[8:]) % modulus
}

// Values that would let two processes read one target in turn, or render
// Probes that can only fail.
func TestShardsRefused(t *testing.T) {
	probes := []string{"probes.enabled=true", "probes.targets={redis://r.apps.svc:6379/0}", "config.probe.allowed_targets={r.apps.svc:6379}"}
	for _, c := range []struct {
		set  []string
		says string
	}{
		{[]string{"shards=2", "replicaCount=2"}, "one pod per shard"},
		{append([]string{"replicaCount=2"}, probes...), "set shards instead"},
		{[]string{"shards=0"}, "shards"},
		{[]string{"probes.enabled=true", "config.probe.allowed_targets={r.apps.svc:6379}"}, "probes.targets"},
		{probes[:2], "allowed_targets"},
		{append([]string{"probes.target=x"}, probes...), "'target' not allowed"},
	} {
		if _, err := renderRaw(t, nil, c.set...); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("--set %v: %v, want an error saying %q", c.set, err, c.says)
		}
	}
}
