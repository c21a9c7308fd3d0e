package kube

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

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
