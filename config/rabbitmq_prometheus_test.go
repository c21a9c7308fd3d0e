package config

import (
	"strings"
	"testing"
)

// --rabbitmq.prometheus-url reaches the settings from the flag and the
// environment; a URL with credentials, a query or another scheme is
// refused without being repeated.
func TestRabbitMQPrometheusURL(t *testing.T) {
	cfg, err := load(t, map[string]string{"RABBITMQ_PROMETHEUS_URL": "http://rabbit:15692"}, "--broker=rabbitmq")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RabbitMQ.PrometheusURL != "http://rabbit:15692" {
		t.Errorf("from the environment: %q", cfg.RabbitMQ.PrometheusURL)
	}
	for _, u := range []string{"http://u:hunter2@rabbit:15692", "http://rabbit:15692/?x=1", "amqp://rabbit", "http://"} {
		_, err := load(t, nil, "--broker=rabbitmq", "--rabbitmq.prometheus-url="+u)
		if err == nil || !strings.Contains(err.Error(), "rabbitmq.prometheus-url") {
			t.Errorf("%q: %v, want an error naming the flag", u, err)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error repeats the password: %v", u, err)
		}
	}
}
