package kube

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

const (
	chartDir  = "charts/dramatiq-exporter"
	allValues = chartDir + "/ci/all-values.yaml"
	// shardValues runs three shards probing six brokers.
	shardValues = chartDir + "/ci/shards-values.yaml"
	release     = "dx"
	namespace   = "monitoring"
)

// helmBin is the Helm that scripts/tools.sh builds from its Go module, at
// the version pinned there.
func helmBin(t *testing.T) string {
	t.Helper()
	return testserver.Tool(t, "helm").Path
}

// helm runs Helm with its caches and config in a temporary directory, so
// no test reads or writes the user's.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBin(t), args...)
	cmd.Dir = testserver.RepoRoot(t)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out, nil
}

// rendered is the output of `helm template`, decoded: each object once, by
// kind and name.
type rendered struct {
	raw            []byte
	deployments    []*appsv1.Deployment
	statefulSets   []*appsv1.StatefulSet
	services       []*corev1.Service
	configMaps     []*corev1.ConfigMap
	secrets        []*corev1.Secret
	serviceMonitor []*monitoringv1.ServiceMonitor
	rules          []*monitoringv1.PrometheusRule
	probes         []*monitoringv1.Probe
}

// render runs `helm template` with the value files and --set pairs, and
// decodes every object strictly.
func render(t *testing.T, valueFiles []string, set ...string) *rendered {
	t.Helper()
	out, err := renderRaw(t, valueFiles, set...)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{raw: out}
	for i, doc := range splitDocs(out) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		var dst any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			dst = appendNew(&r.deployments)
		case "apps/v1 StatefulSet":
			dst = appendNew(&r.statefulSets)
		case "v1 Service":
			dst = appendNew(&r.services)
		case "v1 ConfigMap":
			dst = appendNew(&r.configMaps)
		case "v1 Secret":
			dst = appendNew(&r.secrets)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			dst = appendNew(&r.serviceMonitor)
		case "monitoring.coreos.com/v1 PrometheusRule":
			dst = appendNew(&r.rules)
		case "monitoring.coreos.com/v1 Probe":
			dst = appendNew(&r.probes)
		default:
			t.Fatalf("document %d: unexpected %s %s", i, meta.APIVersion, meta.Kind)
		}
		if err := strictYAML(doc, dst); err != nil {
			t.Fatalf("%s %s: %v\n%s", meta.APIVersion, meta.Kind, err, doc)
		}
	}
	return r
}

func renderRaw(t *testing.T, valueFiles []string, set ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	for _, f := range valueFiles {
		args = append(args, "--values", f)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return helm(t, args...)
}

func appendNew[T any](list *[]*T) *T {
	v := new(T)
	*list = append(*list, v)
	return v
}

func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		// Helm heads each document with a "# Source:" comment.
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// strictYAML decodes like the API server does: YAML to JSON, then JSON
// into the Go type with unknown, duplicate and wrongly cased fields as
// errors.
func strictYAML(doc []byte, dst any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, dst, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("strict decoding: %v", strict)
	}
	return nil
}

func one[T any](t *testing.T, what string, list []*T) *T {
	t.Helper()
	if len(list) != 1 {
		t.Fatalf("want one %s, rendered %d", what, len(list))
	}
	return list[0]
}

// The strict decoder must reject what it is there to reject, or every test
// below would pass on any YAML.
func TestStrictDecodingRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: Service\nspec:\n  ports: [{port: 80, targetport: x}]\n",
		"wrong case":      "apiVersion: v1\nkind: Service\nSpec: {}\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nspec: {}\nspec: {}\n",
		"wrong type":      "apiVersion: v1\nkind: Service\nspec:\n  ports: [{port: eighty}]\n",
	} {
		if err := strictYAML([]byte(doc), &corev1.Service{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var so kedav1alpha1.ScaledObject
	if err := strictYAML([]byte("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nspec:\n  minReplicas: 1\n"), &so); err == nil {
		t.Error("ScaledObject: unknown field minReplicas accepted")
	}
}

func TestHelmLint(t *testing.T) {
	for _, files := range [][]string{nil, {allValues}, {shardValues}} {
		if out, err := helm(t, append([]string{"lint", "--strict", chartDir}, valuesArgs(files)...)...); err != nil {
			t.Error(err)
		} else if !bytes.Contains(out, []byte("0 chart(s) failed")) {
			t.Errorf("helm lint %v:\n%s", files, out)
		}
	}
}

func valuesArgs(files []string) []string {
	var args []string
	for _, f := range files {
		args = append(args, "--values", f)
	}
	return args
}

// equalJSON compares two values by their JSON form, which is what the API
// server stores.
func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := jsonMarshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := jsonMarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb) && reflect.TypeOf(a) == reflect.TypeOf(b)
}
