package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"sigs.k8s.io/yaml"

	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

var exporterBin string

func TestMain(m *testing.M) { testserver.RunWithExporter(m, &exporterBin) }

// binaryFlags are the flags the real binary declares, from its --help.
func binaryFlags(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command(exporterBin, "--help").Output()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^ {2,8}(?:-\w, )?--(?:\[no-\])?([a-z][a-z0-9._-]*)`).FindAllSubmatch(out, -1) {
		flags = append(flags, string(m[1]))
	}
	if len(flags) < 10 {
		t.Fatalf("found only %v in --help:\n%s", flags, out)
	}
	return flags
}

// Flags that are not settings, or that the chart sets from its own values.
var chartOwned = map[string]string{
	"help":               "not a setting",
	"version":            "not a setting",
	"config.file":        "the chart's ConfigMap",
	"web.listen-address": "containerPort",
	"web.config.file":    "webConfig.existingSecret",
}

// settingValues holds, for every other flag, its config-file key and a
// valid value that is not the default. A new flag fails
// TestEveryFlagReachable until it has a line here, and the chart passes it.
func settingValues(t *testing.T, dir string) map[string]struct {
	key   string
	value any
} {
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key := selfSigned(t, dir)
	closed := strconv.Itoa(testserver.FreePort(t))
	type kv = struct {
		key   string
		value any
	}
	return map[string]kv{
		"redis.url":                             {"redis.url", "rediss://127.0.0.1:" + closed + "/0"},
		"redis.sentinel-addrs":                  {"redis.sentinel_addrs", []any{"127.0.0.1:" + closed}},
		"redis.sentinel-master":                 {"redis.sentinel_master", "mymaster"},
		"redis.sentinel-password-file":          {"redis.sentinel_password_file", pwFile},
		"redis.sentinel-replica":                {"redis.sentinel_replica", true},
		"redis.tls-ca-file":                     {"redis.tls_ca_file", cert},
		"redis.tls-cert-file":                   {"redis.tls_cert_file", cert},
		"redis.tls-key-file":                    {"redis.tls_key_file", key},
		"redis.tls-server-name":                 {"redis.tls_server_name", "redis.example"},
		"redis.tls-insecure-skip-verify":        {"redis.tls_insecure_skip_verify", true},
		"broker":                                {"broker", "rabbitmq"},
		"rabbitmq.url":                          {"rabbitmq.url", "https://127.0.0.1:" + closed},
		"rabbitmq.user":                         {"rabbitmq.user", "dramatiq-exporter"},
		"rabbitmq.password-file":                {"rabbitmq.password_file", pwFile},
		"rabbitmq.vhost":                        {"rabbitmq.vhost", "dramatiq"},
		"rabbitmq.prometheus-url":               {"rabbitmq.prometheus_url", "http://127.0.0.1:" + closed},
		"rabbitmq.tls-ca-file":                  {"rabbitmq.tls_ca_file", cert},
		"rabbitmq.tls-cert-file":                {"rabbitmq.tls_cert_file", cert},
		"rabbitmq.tls-key-file":                 {"rabbitmq.tls_key_file", key},
		"rabbitmq.tls-server-name":              {"rabbitmq.tls_server_name", "rabbitmq.example"},
		"rabbitmq.tls-insecure-skip-verify":     {"rabbitmq.tls_insecure_skip_verify", true},
		"web.max-connections":                   {"web.max_connections", 10},
		"probe.allowed-targets":                 {"probe.allowed_targets", []any{"redis-*.example:6379"}},
		"probe.idle-timeout":                    {"probe.idle_timeout", "10m"},
		"probe.max-targets":                     {"probe.max_targets", 20},
		"web.idle-timeout":                      {"web.idle_timeout", "1m"},
		"redis.password-file":                   {"redis.password_file", pwFile},
		"dramatiq.namespace":                    {"dramatiq.namespace", "myapp"},
		"dramatiq.heartbeat-timeout":            {"dramatiq.heartbeat_timeout", "90s"},
		"dramatiq.queues":                       {"dramatiq.queues", []any{"default", "emails"}},
		"dramatiq.discovery-interval":           {"dramatiq.discovery_interval", "1m"},
		"dramatiq.discovery-duty":               {"dramatiq.discovery_duty", 0.02},
		"dramatiq.discovery-first-pass-duty":    {"dramatiq.discovery_first_pass_duty", 0.5},
		"dramatiq.backlog-by-actor":             {"dramatiq.backlog_by_actor", true},
		"dramatiq.backlog-by-actor-exact-limit": {"dramatiq.backlog_by_actor_exact_limit", 500},
		"dramatiq.max-queues":                   {"dramatiq.max_queues", 500},
		"dramatiq.queue-retention":              {"dramatiq.queue_retention", "1h"},
		"database.url":                          {"database.url", "postgres://exporter@127.0.0.1:" + closed + "/app"},
		"database.password-file":                {"database.password_file", pwFile},
		"environment":                           {"environment", "staging"},
		"web.telemetry-path":                    {"web.telemetry_path", "/metrics2"},
		"web.max-requests":                      {"web.max_requests", 7},
		"web.show-message-args":                 {"web.show_message_args", true},
		"web.systemd-socket":                    {"web.systemd_socket", false},
		"scrape.timeout":                        {"scrape.timeout", "5s"},
		"scrape.timeout-offset":                 {"scrape.timeout_offset", "100ms"},
		"log.level":                             {"log.level", "debug"},
		"log.format":                            {"log.format", "json"},
	}
}

// Every flag of the real binary can be set from the chart's values: the
// chart sets it itself, or its key under `config` reaches the config file
// unchanged and the binary accepts that file (an unknown key or a bad
// value would make it exit 2).
func TestEveryFlagReachable(t *testing.T) {
	dir := t.TempDir()
	table := settingValues(t, dir)
	values := map[string]any{}
	want := map[string]any{}
	flags := binaryFlags(t)
	// The config package's own map from flag to key, with the collectors
	// the binary declares: the table must agree with it.
	var collectors []config.Collector
	for _, f := range flags {
		if name, ok := strings.CutPrefix(f, "collector."); ok {
			collectors = append(collectors, config.Collector{Name: name})
		}
	}
	cfgFlags := config.AddFlags(kingpin.New("test", ""), collectors)
	for _, flag := range flags {
		if _, ok := chartOwned[flag]; ok {
			continue
		}
		s, ok := table[flag]
		if name, isCollector := strings.CutPrefix(flag, "collector."); isCollector {
			s.key, s.value, ok = "collectors."+name, true, true
		}
		if !ok {
			t.Errorf("--%s: no config key and value in settingValues; add them, and check the chart can set it", flag)
			continue
		}
		if k := cfgFlags.FileKey(flag); k != s.key {
			t.Errorf("--%s: the table says key %s, package config %q", flag, s.key, k)
		}
		setPath(values, s.key, s.value)
		setPath(want, s.key, s.value)
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	b, err := yaml.Marshal(map[string]any{"config": values})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(valuesFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r := render(t, []string{valuesFile})
	c := exporterContainer(t, r.deployments[0])
	for flag, how := range chartOwned {
		if how != "not a setting" && flag != "web.config.file" && flagValue(c.Args, flag) == "" {
			t.Errorf("--%s (%s) is not in the Deployment's args %v", flag, how, c.Args)
		}
	}

	file := configMapNamed(t, r, "").Data["config.yml"]
	var got map[string]any
	if err := yaml.Unmarshal([]byte(file), &got); err != nil {
		t.Fatal(err)
	}
	if !equalJSON(t, got, want) {
		t.Errorf("the config file differs from the values:\n%s", file)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	// `check` loads and validates the whole configuration, then fails (1)
	// on the closed Redis port; a configuration error is 2.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exporterBin, "check", "--config.file="+cfgPath, "--check.timeout=2s")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("the binary does not accept the chart's config file (%v):\n%s\n%s", err, out, file)
	}
}

// setPath sets a dotted key in nested maps.
func setPath(m map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// selfSigned writes a PEM certificate and its key, for the TLS file keys
// the exporter parses at start.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redis.example"},
		DNSNames:              []string{"redis.example"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}
