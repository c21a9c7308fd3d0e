package config

import (
	"os"
	"strings"
	"testing"
)

func TestRabbitMQSettings(t *testing.T) {
	for _, k := range []string{"DRAMATIQ_BROKER", "RABBITMQ_URL", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_PASSWORD_FILE", "RABBITMQ_VHOST"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	c, err := load(t, nil)
	if err != nil || c.Broker != BrokerRedis || c.RabbitMQ.URL != DefaultRabbitMQURL || c.RabbitMQ.Vhost != "/" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	file := writeFile(t, "c.yml", "broker: rabbitmq\nrabbitmq:\n  url: http://mq:15672\n  user: w\n  vhost: v\n")
	c, err = load(t, nil, "--config.file="+file)
	if err != nil || c.Broker != BrokerRabbitMQ || c.RabbitMQ.URL != "http://mq:15672" || c.RabbitMQ.Vhost != "v" {
		t.Fatalf("file: %+v %v", c, err)
	}
	c, err = load(t, map[string]string{"DRAMATIQ_BROKER": "rabbitmq", "RABBITMQ_URL": "https://mq:15671", "RABBITMQ_USER": "w",
		"RABBITMQ_PASSWORD": "s3cret", "RABBITMQ_VHOST": "apps/prod"})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.RabbitMQ; c.Broker != BrokerRabbitMQ || r.URL != "https://mq:15671" || r.User != "w" || r.Password != "s3cret" || r.Vhost != "apps/prod" {
		t.Fatalf("env: %+v", c.RabbitMQ)
	}
	// A password file wins over the environment and is left for the
	// reader to read at every scrape.
	pw := writeFile(t, "pw", "from-file\n")
	c, err = load(t, map[string]string{"RABBITMQ_PASSWORD": "s3cret"}, "--broker=rabbitmq", "--rabbitmq.password-file="+pw)
	if err != nil || c.RabbitMQ.Password != "" || c.RabbitMQ.PasswordFile != pw {
		t.Fatalf("password file: %+v %v", c.RabbitMQ, err)
	}
}

// A URL with credentials is refused at start-up, and the error repeats no
// part of it.
func TestRabbitMQSettingErrors(t *testing.T) {
	for _, k := range []string{"DRAMATIQ_BROKER", "RABBITMQ_URL", "RABBITMQ_PASSWORD", "RABBITMQ_PASSWORD_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	const secret = "Hunter2xyz"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--broker=rabbitmq", "--rabbitmq.url=http://guest:" + secret + "@mq:15672"}, "--rabbitmq.url"},
		{[]string{"--broker=rabbitmq", "--rabbitmq.url=http://guest:" + secret + "#x@mq:15672"}, "--rabbitmq.url"},
		{[]string{"--broker=rabbitmq", "--rabbitmq.url=amqp://mq:5672"}, "--rabbitmq.url"},
		{[]string{"--broker=rabbitmq", "--rabbitmq.url=http://mq:15672/?" + secret}, "--rabbitmq.url"},
		{[]string{"--broker=rabbitmq", "--rabbitmq.vhost="}, "--rabbitmq.vhost"},
		{[]string{"--broker=rabbitmq", "--rabbitmq.tls-ca-file=/ca.pem"}, "https://"},
		{[]string{"--broker=rabbitmq", "--rabbitmq.url=https://mq", "--rabbitmq.tls-cert-file=/c.pem"}, "--rabbitmq.tls-key-file"},
		{[]string{"--broker=rabbitmq", "--rabbitmq.password-file=/nonexistent/" + "pw"}, "--rabbitmq.password-file"},
		{[]string{"--broker=kafka"}, "broker"},
	}
	for _, tc := range cases {
		_, err := load(t, nil, tc.args...)
		if err == nil {
			t.Errorf("%v: accepted", tc.args)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want it to name %s", tc.args, err, tc.want)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "guest") {
			t.Errorf("%v: the error repeats the URL: %v", tc.args, err)
		}
	}
	file := writeFile(t, "c.yml", "broker: kafka\n")
	if _, err := load(t, nil, "--config.file="+file); err == nil || !strings.Contains(err.Error(), "broker") {
		t.Errorf("file broker: kafka: %v", err)
	}
}
