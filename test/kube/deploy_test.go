package kube

import (
	"bytes"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

var update = flag.Bool("update", false, "rewrite deploy/kubernetes/dramatiq-exporter.yaml from the chart")

const (
	kubeDir      = "deploy/kubernetes"
	kubeValues   = kubeDir + "/values.yaml"
	kubeRendered = kubeDir + "/dramatiq-exporter.yaml"
	kubeHeader   = "# Rendered from charts/dramatiq-exporter with values.yaml by\n" +
		"#   cd test/kube && go test -run TestDeployKubernetesIsTheChart -update\n" +
		"# (make generate). Do not edit: change the chart or values.yaml.\n"
)

// deploy/kubernetes is the chart rendered, for `kubectl apply -k` without
// Helm, so the two cannot drift apart.
func TestDeployKubernetesIsTheChart(t *testing.T) {
	root := testserver.RepoRoot(t)
	out, err := helm(t, "template", "dramatiq-exporter", chartDir, "--namespace", namespace, "--values", kubeValues)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(kubeHeader), out...)
	path := filepath.Join(root, kubeRendered)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s is not the chart rendered with %s (%v); run:\n  cd test/kube && go test -run TestDeployKubernetesIsTheChart -update", kubeRendered, kubeValues, err)
	}
	r := render(t, []string{kubeValues})
	checkDeployment(t, r)
	if len(r.serviceMonitor) != 1 || len(r.rules) != 1 {
		t.Error("the plain manifests should include the ServiceMonitor and the PrometheusRule")
	}

	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := strictYAML(mustRead(t, filepath.Join(root, kubeDir, "kustomization.yaml")), &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(kust.Resources) != 1 || kust.Resources[0] != filepath.Base(kubeRendered) {
		t.Errorf("kustomization.yaml lists %v, want [%s]", kust.Resources, filepath.Base(kubeRendered))
	}
	files, _ := filepath.Glob(filepath.Join(root, kubeDir, "*"))
	if len(files) != 3 {
		t.Errorf("%s holds %v; want values.yaml, the rendered manifests and kustomization.yaml", kubeDir, files)
	}
}

// The KEDA example: every object decodes into KEDA's and Kubernetes' types
// and passes KEDA's own checks; it scales the worker Deployment next to it,
// on a recording rule the shipped rules define, for the job the chart's
// ServiceMonitor produces, over every queue the example worker consumes.
func TestKEDAExample(t *testing.T) {
	root := testserver.RepoRoot(t)
	var so kedav1alpha1.ScaledObject
	if err := strictYAML(mustRead(t, filepath.Join(root, "deploy/keda/scaledobject.yaml")), &so); err != nil {
		t.Fatalf("scaledobject.yaml: %v", err)
	}
	var worker appsv1.Deployment
	if err := strictYAML(mustRead(t, filepath.Join(root, "deploy/keda/worker.yaml")), &worker); err != nil {
		t.Fatalf("worker.yaml: %v", err)
	}
	if so.APIVersion != "keda.sh/v1alpha1" || so.Kind != "ScaledObject" || worker.Kind != "Deployment" {
		t.Fatalf("kinds %s %s, %s", so.APIVersion, so.Kind, worker.Kind)
	}
	if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
		t.Error(err)
	}
	if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(&so); err != nil {
		t.Error(err)
	}
	if err := kedav1alpha1.CheckFallbackValid(&so); err != nil {
		t.Error(err)
	}
	ref := so.Spec.ScaleTargetRef
	if ref == nil || ref.Name != worker.Name || (ref.Kind != "" && ref.Kind != "Deployment") {
		t.Errorf("scaleTargetRef %+v does not name Deployment %s", ref, worker.Name)
	}
	var values struct {
		Job string `json:"job"`
	}
	if err := yaml.Unmarshal(mustRead(t, filepath.Join(root, chartDir, "values.yaml")), &values); err != nil {
		t.Fatal(err)
	}
	records := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*- record: (\S+)`).FindAllSubmatch(mustRead(t, filepath.Join(root, "alerts/dramatiq.rules.yml")), -1) {
		records[string(m[1])] = true
	}
	workerQueues := regexp.MustCompile(`queue_name="([^"]+)"`).FindAllSubmatch(mustRead(t, filepath.Join(root, "deploy/worker/tasks.py")), -1)
	if len(workerQueues) == 0 {
		t.Fatal("deploy/worker/tasks.py consumes no queue")
	}

	byRule := map[string]kedav1alpha1.ScaleTriggers{}
	for _, tr := range so.Spec.Triggers {
		md := tr.Metadata
		if tr.Type != "prometheus" {
			t.Errorf("trigger %s: type %s", tr.Name, tr.Type)
			continue
		}
		if md["ignoreNullValues"] != "false" {
			t.Errorf("trigger %s: ignoreNullValues must be false: a missing series would read as 0 and scale in under load", tr.Name)
		}
		if v, err := strconv.ParseFloat(md["threshold"], 64); err != nil || v <= 0 {
			t.Errorf("trigger %s: threshold %q", tr.Name, md["threshold"])
		}
		if u, err := url.Parse(md["serverAddress"]); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Errorf("trigger %s: serverAddress %q is not Prometheus's URL", tr.Name, md["serverAddress"])
		}
		query := md["query"]
		metric := regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{`).FindStringSubmatch(query)
		if metric == nil || !records[metric[1]] {
			t.Errorf("trigger %s: query %q does not use a recording rule of alerts/dramatiq.rules.yml %v", tr.Name, query, keys(records))
			continue
		}
		byRule[metric[1]] = tr
		if !strings.Contains(query, `job="`+values.Job+`"`) {
			t.Errorf("trigger %s: query %q does not select the chart's job %q", tr.Name, query, values.Job)
		}
		qm := regexp.MustCompile(`queue=~"([^"]+)"`).FindStringSubmatch(query)
		for _, m := range workerQueues {
			if qm == nil || !regexp.MustCompile(`^(?:`+qm[1]+`)$`).MatchString(string(m[1])) {
				t.Errorf("trigger %s: query %q misses queue %s that the worker consumes", tr.Name, query, m[1])
			}
		}
	}
	// The workload sizes the fleet.
	if _, ok := byRule["queue:dramatiq_queue_workload_messages:max"]; !ok {
		t.Error("no trigger on queue:dramatiq_queue_workload_messages:max")
	}
	// Scale from zero: at zero replicas no worker promotes due delayed
	// messages and retries or requeues orphans, and the workload reads 0
	// while they wait. With minReplicaCount 0, a trigger on every unfinished
	// message must activate the workers, and only activate them: one
	// replica at most, whatever the delayed backlog.
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount == 0 {
		tr, ok := byRule["queue:dramatiq_queue_unfinished_messages:max"]
		if !ok {
			t.Fatal("minReplicaCount 0 without an activation trigger on queue:dramatiq_queue_unfinished_messages:max strands delayed messages, retries and orphans")
		}
		if a := tr.Metadata["activationThreshold"]; a != "" && a != "0" {
			t.Errorf("trigger %s: activationThreshold %s; any unfinished message needs a worker", tr.Name, a)
		}
		if v, _ := strconv.ParseFloat(tr.Metadata["threshold"], 64); v < 1e6 {
			t.Errorf("trigger %s: threshold %s would size the fleet for delayed messages; it should only activate", tr.Name, tr.Metadata["threshold"])
		}
	}
}
