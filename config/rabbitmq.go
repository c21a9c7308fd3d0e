package config

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kingpin/v2"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/urlsafe"
)

// Brokers --broker accepts.
const (
	BrokerRedis    = "redis"
	BrokerRabbitMQ = "rabbitmq"
)

// Defaults of the RabbitMQ settings.
const (
	DefaultBroker      = BrokerRedis
	DefaultRabbitMQURL = "http://localhost:15672"
	DefaultRabbitVhost = "/"
)

// RabbitMQ are the settings of the RabbitMQ reader (--broker=rabbitmq). The
// password comes from RABBITMQ_PASSWORD or from PasswordFile, which the
// reader reads again at every scrape (a rotated secret needs no restart).
type RabbitMQ struct {
	URL          string
	User         string
	Password     string
	PasswordFile string
	Vhost        string
	TLS          RedisTLS // same fields and meaning as the Redis ones
}

// rabbitmqFlags are the parsed --broker and --rabbitmq.* flags.
type rabbitmqFlags struct {
	broker                                *string
	url, user, passwordFile, password     *string
	vhost                                 *string
	tlsCA, tlsCert, tlsKey, tlsServerName *string
	tlsInsecure                           *bool
}

// rabbitmqFile is the file's rabbitmq section.
type rabbitmqFile struct {
	URL                   string `yaml:"url"`
	User                  string `yaml:"user"`
	PasswordFile          string `yaml:"password_file"`
	Vhost                 string `yaml:"vhost"`
	TLSCAFile             string `yaml:"tls_ca_file"`
	TLSCertFile           string `yaml:"tls_cert_file"`
	TLSKeyFile            string `yaml:"tls_key_file"`
	TLSServerName         string `yaml:"tls_server_name"`
	TLSInsecureSkipVerify *bool  `yaml:"tls_insecure_skip_verify"`
}

func (fl *Flags) addBrokerFlags(app *kingpin.Application) {
	r := &fl.rabbit
	c, b := fl.bind(app, "broker", "The Dramatiq broker to read: redis (RedisBroker) or rabbitmq (RabbitmqBroker, through RabbitMQ's management API).", "DRAMATIQ_BROKER")
	r.broker = c.Default(DefaultBroker).PlaceHolder("redis|rabbitmq").String()
	b.fromFile = func(f *fileConfig) error {
		switch f.Broker {
		case "", BrokerRedis, BrokerRabbitMQ:
			return setString(r.broker, f.Broker)
		}
		return fmt.Errorf("must be redis or rabbitmq, not %q", clipValue(f.Broker))
	}
	c, b = fl.bind(app, "rabbitmq.url", "Base URL of RabbitMQ's management API, without credentials: http://host:15672, https:// for TLS (a path prefix is kept).", "RABBITMQ_URL")
	r.url = c.Default(DefaultRabbitMQURL).String()
	b.fromFile = func(f *fileConfig) error { return setString(r.url, f.RabbitMQ.URL) }
	c, b = fl.bind(app, "rabbitmq.user", "RabbitMQ user for the management API. The monitoring tag and a permission entry on the vhost (empty patterns) are enough.", "RABBITMQ_USER")
	r.user = c.String()
	b.fromFile = func(f *fileConfig) error { return setString(r.user, f.RabbitMQ.User) }
	c, b = fl.bind(app, "rabbitmq.password-file", "File holding the RabbitMQ user's password, read again at every scrape. Or set RABBITMQ_PASSWORD.", "RABBITMQ_PASSWORD_FILE")
	r.passwordFile = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(r.passwordFile, f.RabbitMQ.PasswordFile) }
	r.password = app.Flag("rabbitmq.password", "RabbitMQ password. Prefer RABBITMQ_PASSWORD or --rabbitmq.password-file: flags show in ps.").Hidden().Envar("RABBITMQ_PASSWORD").String()
	c, b = fl.bind(app, "rabbitmq.vhost", "RabbitMQ virtual host of the Dramatiq queues.", "RABBITMQ_VHOST")
	r.vhost = c.Default(DefaultRabbitVhost).String()
	b.fromFile = func(f *fileConfig) error { return setString(r.vhost, f.RabbitMQ.Vhost) }
	c, b = fl.bind(app, "rabbitmq.tls-ca-file", "PEM file of the CAs that may sign the management API's certificate (https:// only). Default: the system's roots. Read again when it changes.", "")
	r.tlsCA = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(r.tlsCA, f.RabbitMQ.TLSCAFile) }
	c, b = fl.bind(app, "rabbitmq.tls-cert-file", "PEM client certificate for a management API that requires one. Read again when it changes.", "")
	r.tlsCert = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(r.tlsCert, f.RabbitMQ.TLSCertFile) }
	c, b = fl.bind(app, "rabbitmq.tls-key-file", "PEM private key of --rabbitmq.tls-cert-file.", "")
	r.tlsKey = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(r.tlsKey, f.RabbitMQ.TLSKeyFile) }
	c, b = fl.bind(app, "rabbitmq.tls-server-name", "Name the management API's certificate must carry. Default: the URL's host.", "")
	r.tlsServerName = c.String()
	b.fromFile = func(f *fileConfig) error { return setString(r.tlsServerName, f.RabbitMQ.TLSServerName) }
	c, b = fl.bind(app, "rabbitmq.tls-insecure-skip-verify", "INSECURE: accept any management API certificate. For tests only.", "")
	r.tlsInsecure = c.Bool()
	b.fromFile = func(f *fileConfig) error { return setBool(r.tlsInsecure, f.RabbitMQ.TLSInsecureSkipVerify) }
}

// loadBroker fills the broker settings; Validate checks them.
func (fl *Flags) loadBroker(cfg *Config) error {
	r := &fl.rabbit
	cfg.Broker = *r.broker
	cfg.RabbitMQ = RabbitMQ{
		URL: *r.url, User: *r.user, Vhost: *r.vhost, PasswordFile: *r.passwordFile,
		TLS: RedisTLS{CAFile: *r.tlsCA, CertFile: *r.tlsCert, KeyFile: *r.tlsKey, ServerName: *r.tlsServerName, InsecureSkipVerify: *r.tlsInsecure},
	}
	if cfg.Broker != BrokerRabbitMQ {
		return nil
	}
	if *r.passwordFile != "" {
		// Read once now so a wrong path fails at start-up; the reader reads
		// it again at every scrape.
		if _, err := secret("", *r.passwordFile, "rabbitmq.password-file"); err != nil {
			return err
		}
		return nil
	}
	cfg.RabbitMQ.Password = *r.password
	return nil
}

// validateBroker checks the broker settings. The URL is never repeated in
// an error: a user may have put credentials in it.
func (c *Config) validateBroker() error {
	switch c.Broker {
	case "", BrokerRedis:
		return nil
	case BrokerRabbitMQ:
	default:
		return fieldErr("broker", "must be redis or rabbitmq, not %q", clipValue(c.Broker))
	}
	return checkRabbitMQ(c.RabbitMQ, false)
}

// checkRabbitMQ checks the RabbitMQ settings; forTarget skips the URL (a
// /probe target replaces it).
func checkRabbitMQ(r RabbitMQ, forTarget bool) error {
	const flag = "rabbitmq.url"
	https := false
	if !forTarget {
		u, err := urlsafe.Check(r.URL)
		if err != nil {
			return fieldErr(flag, "%v", err)
		}
		if u.User != nil {
			return fieldErr(flag, "must not carry credentials (not shown: it may hold a password); set --rabbitmq.user and RABBITMQ_PASSWORD or --rabbitmq.password-file")
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fieldErr(flag, "scheme must be http or https")
		}
		if u.Host == "" {
			return fieldErr(flag, "has no host")
		}
		if u.RawQuery != "" || u.ForceQuery {
			return fieldErr(flag, "must have no query")
		}
		https = u.Scheme == "https"
	}
	if r.Vhost == "" {
		return fieldErr("rabbitmq.vhost", "must not be empty (the default vhost is /)")
	}
	if len(r.Vhost) > 255 || strings.IndexFunc(r.Vhost, func(c rune) bool { return c < 0x20 || c == 0x7f }) >= 0 {
		return fieldErr("rabbitmq.vhost", "must be at most 255 bytes without control characters")
	}
	if len(r.User) > 255 {
		return fieldErr("rabbitmq.user", "is longer than 255 bytes")
	}
	t := r.TLS
	if !forTarget && t != (RedisTLS{}) && !https {
		return fieldErr("rabbitmq.tls-ca-file", "TLS settings need an https:// --rabbitmq.url")
	}
	if t.CertFile != "" && t.KeyFile == "" {
		return fieldErr("rabbitmq.tls-key-file", "required with --rabbitmq.tls-cert-file")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		return fieldErr("rabbitmq.tls-cert-file", "required with --rabbitmq.tls-key-file")
	}
	return nil
}

func clipValue(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
