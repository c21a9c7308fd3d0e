package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// rabbitmqModuleFile is a module's rabbitmq section: the top-level keys
// but url (the probe's target names the management API).
type rabbitmqModuleFile struct {
	User                  string `yaml:"user"`
	PasswordFile          string `yaml:"password_file"`
	Vhost                 string `yaml:"vhost"`
	TLSCAFile             string `yaml:"tls_ca_file"`
	TLSCertFile           string `yaml:"tls_cert_file"`
	TLSKeyFile            string `yaml:"tls_key_file"`
	TLSServerName         string `yaml:"tls_server_name"`
	TLSInsecureSkipVerify *bool  `yaml:"tls_insecure_skip_verify"`
}

func loadRabbitModule(m *Module, f moduleFile, base *Config) error {
	if f.Redis.PasswordFile != "" || f.Redis.TLSCAFile != "" || f.Redis.TLSCertFile != "" || f.Redis.TLSKeyFile != "" ||
		f.Redis.TLSServerName != "" || f.Redis.TLSInsecureSkipVerify != nil || len(f.Redis.Databases) > 0 {
		return fmt.Errorf("redis: a broker: rabbitmq module reads no Redis")
	}
	r := f.RabbitMQ
	m.Broker = BrokerRabbitMQ
	m.RedisTLS = RedisTLS{}
	m.RabbitMQ = RabbitMQ{
		User: r.User, PasswordFile: r.PasswordFile, Vhost: r.Vhost,
		TLS: RedisTLS{CAFile: r.TLSCAFile, CertFile: r.TLSCertFile, KeyFile: r.TLSKeyFile, ServerName: r.TLSServerName},
	}
	if r.TLSInsecureSkipVerify != nil {
		m.RabbitMQ.TLS.InsecureSkipVerify = *r.TLSInsecureSkipVerify
	}
	if m.RabbitMQ.Vhost == "" {
		m.RabbitMQ.Vhost = DefaultRabbitVhost
	}
	if r.PasswordFile != "" {
		// Read now so a wrong path fails at start-up; the reader reads it
		// again at every probe.
		if _, err := secret("", r.PasswordFile, "rabbitmq.password-file"); err != nil {
			return moduleErr(err)
		}
	}
	if err := base.ForProbe(m, m.rabbitScheme()+"://probe.invalid:15672").Validate(); err != nil {
		return moduleErr(err)
	}
	return nil
}

// rabbitScheme is how a bare host:port target of the module is read:
// https when the module has TLS settings.
func (m *Module) rabbitScheme() string {
	if m.RabbitMQ.TLS != (RedisTLS{}) {
		return "https"
	}
	return "http"
}

// ParseTargetFor parses a probe's target as module m reads it: a Redis URL
// (ParseTarget), or for a RabbitMQ module the management API as host:port
// or http(s)://host:port, with nothing else (no credentials, path or
// query). The canonical form is the API's base URL.
func ParseTargetFor(m *Module, raw string) (ProbeTarget, error) {
	if m == nil || m.Broker != BrokerRabbitMQ {
		return ParseTarget(raw)
	}
	var t ProbeTarget
	if len(raw) > 1024 {
		return t, fmt.Errorf("target is longer than 1024 bytes")
	}
	if !strings.Contains(raw, "://") {
		raw = m.rabbitScheme() + "://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return t, fmt.Errorf("target is not host:port")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return t, fmt.Errorf("target must be host:port, http:// or https:// for a rabbitmq module")
	case u.User != nil:
		return t, fmt.Errorf("target must not carry credentials; put them in a module's rabbitmq.user and rabbitmq.password_file")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return t, fmt.Errorf("target must have no path, query or fragment")
	case u.Hostname() == "" || u.Port() == "":
		return t, fmt.Errorf("target needs a host and a port")
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil || port < 1 || port > 65535 {
		return t, fmt.Errorf("target port must be 1-65535")
	}
	host, addr, err := targetHost(u)
	if err != nil {
		return t, err
	}
	t.Addr = addr
	t.Scheme, t.Host, t.Port = u.Scheme, host, port
	t.Canonical = u.Scheme + "://" + t.HostPort()
	return t, nil
}
