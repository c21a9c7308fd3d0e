package deploy

// deploy/kubernetes/prometheusrule.yaml is generated from
// alerts/dramatiq.rules.yml, so the rules exist in one hand-edited copy
// only. Regenerate it with:
//
//	go test ./deploy -run TestPrometheusRuleUpToDate -update

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

var update = flag.Bool("update", false, "rewrite generated files under deploy/")

const (
	rulesFile          = "alerts/dramatiq.rules.yml"
	prometheusRuleFile = "deploy/kubernetes/prometheusrule.yaml"
)

// generatePrometheusRule wraps the rule groups of rules in a PrometheusRule
// object. It works on yaml.Nodes, so expressions and multi-line annotations
// keep their exact text and style.
func generatePrometheusRule(rules []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(rules, &doc); err != nil {
		return nil, err
	}
	root := doc.Content[0]
	var groups *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "groups" {
			groups = root.Content[i+1]
		}
	}
	if groups == nil {
		return nil, errNoGroups
	}
	str := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
	mapping := func(kv ...*yaml.Node) *yaml.Node {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: kv}
	}
	out := mapping(
		str("apiVersion"), str("monitoring.coreos.com/v1"),
		str("kind"), str("PrometheusRule"),
		str("metadata"), mapping(
			str("name"), str("dramatiq-exporter"),
			str("labels"), mapping(str("app.kubernetes.io/name"), str("dramatiq-exporter")),
		),
		str("spec"), mapping(str("groups"), groups),
	)
	var buf bytes.Buffer
	buf.WriteString("# Generated from " + rulesFile + " by\n#   go test ./deploy -run TestPrometheusRuleUpToDate -update\n# Do not edit: change the rules there and regenerate.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var errNoGroups = errors.New("no top-level groups key")

func TestPrometheusRuleUpToDate(t *testing.T) {
	root := testserver.RepoRoot(t)
	rules := mustRead(t, filepath.Join(root, rulesFile))
	want, err := generatePrometheusRule(rules)
	if err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	path := filepath.Join(root, prometheusRuleFile)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s is not up to date with %s (%v); run:\n  go test ./deploy -run TestPrometheusRuleUpToDate -update", prometheusRuleFile, rulesFile, err)
	}

	// The same rules, semantically: what the operator loads is what
	// promtool tests.
	var src struct {
		Groups []any `yaml:"groups"`
	}
	var obj struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Spec       struct {
			Groups []any `yaml:"groups"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(rules, &src); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(got, &obj); err != nil {
		t.Fatal(err)
	}
	if obj.Kind != "PrometheusRule" || obj.APIVersion != "monitoring.coreos.com/v1" || len(src.Groups) == 0 ||
		!reflect.DeepEqual(src.Groups, obj.Spec.Groups) {
		t.Fatalf("%s does not hold the groups of %s", prometheusRuleFile, rulesFile)
	}
}
