package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRabbitMQModules(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("mq-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(yml string) string {
		p := filepath.Join(dir, "c.yml")
		if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := load(t, nil, "--config.file", write(`
modules:
  mq:
    broker: rabbitmq
    rabbitmq: {user: w, password_file: `+pw+`, vhost: apps}
  mqs:
    broker: rabbitmq
    rabbitmq: {tls_ca_file: /ca.pem}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Modules["mq"]
	if m.Broker != BrokerRabbitMQ || m.RabbitMQ.User != "w" || m.RabbitMQ.PasswordFile != pw || m.RabbitMQ.Vhost != "apps" {
		t.Fatalf("mq = %+v", m)
	}
	// The target is the API; the module's settings read it.
	p := c.ForProbe(m, "http://10.0.0.5:15672")
	if p.Broker != BrokerRabbitMQ || p.RabbitMQ.URL != "http://10.0.0.5:15672" || p.RabbitMQ.User != "w" || p.RedisURL != DefaultRedisURL {
		t.Errorf("ForProbe = %+v", p.RabbitMQ)
	}
	for raw, want := range map[string]string{
		"10.0.0.5:15672":          "http://10.0.0.5:15672",
		"http://MQ.internal.:80":  "http://mq.internal:80",
		"https://[::1]:15671/":    "https://[::1]:15671",
		"https://10.0.0.5:15671":  "https://10.0.0.5:15671",
		"http://10.0.0.5:15672/x": "",
		"http://u:p@10.0.0.5:1":   "",
		"redis://10.0.0.5:6379/0": "",
		"10.0.0.5":                "",
		"http://10.0.0.5:1?a=b":   "",
		"http://10.0.0.5:99999":   "",
	} {
		tgt, err := ParseTargetFor(m, raw)
		if (err == nil) != (want != "") || (err == nil && tgt.Canonical != want) {
			t.Errorf("ParseTargetFor(%q) = %q, %v; want %q", raw, tgt.Canonical, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "p@") {
			t.Errorf("error repeats the target: %v", err)
		}
	}
	// A TLS module reads bare host:port targets over https.
	if tgt, err := ParseTargetFor(c.Modules["mqs"], "mq:15671"); err != nil || tgt.Canonical != "https://mq:15671" {
		t.Errorf("TLS module: %q %v", tgt.Canonical, err)
	}
	// A Redis module still takes only Redis targets.
	if _, err := ParseTargetFor(&Module{}, "10.0.0.5:15672"); err == nil {
		t.Error("a Redis module took a host:port target")
	}

	for yml, want := range map[string]string{
		"modules: {m: {broker: rabbitmq, redis: {password_file: " + pw + "}}}": "reads no Redis",
		"modules: {m: {rabbitmq: {user: w}}}":                                  "needs broker: rabbitmq",
		"modules: {m: {broker: kafka}}":                                        "broker",
		"modules: {m: {broker: rabbitmq, rabbitmq: {password_file: /nope}}}":   "password",
		"modules: {m: {broker: rabbitmq, rabbitmq: {url: http://x:1}}}":        "url",
	} {
		if _, err := load(t, nil, "--config.file", write(yml)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %q", yml, err, want)
		}
	}
}
