package config

// Multi-target settings: the /probe allow-list and limits, and the modules
// that say how to read a probed target (namespace, credentials, TLS).

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults of the probe settings.
const (
	DefaultProbeIdleTimeout = 5 * time.Minute
	DefaultProbeMaxTargets  = 100
	// DefaultModule is used when a probe names no module.
	DefaultModule = "default"
)

// Module is how to read one kind of probed target. Fields a module leaves
// out take the flags' defaults, not the top-level settings: a module is
// self-contained, so the broker the exporter watches by itself never leaks
// its credentials into a probe.
type Module struct {
	Name              string
	RedisPassword     string
	RedisTLS          RedisTLS
	Namespace         string
	HeartbeatTimeout  time.Duration
	Queues            []string
	DiscoveryInterval time.Duration
	MaxQueues         int
	QueueRetention    time.Duration
	DatabaseURL       string
	DatabasePassword  string
	// Databases are the Redis database numbers a probe may name (redis.
	// databases); empty means 0-15, Redis's default count.
	Databases []int
	// Broker is the module's broker (BrokerRedis or BrokerRabbitMQ). A
	// RabbitMQ module's targets are management APIs, host:port, read with
	// RabbitMQ's settings (the URL is the target's).
	Broker   string
	RabbitMQ RabbitMQ
}

// DefaultProbeDatabases is how many database numbers (0 to N-1) a module
// admits when it lists none: Redis's own default "databases 16".
const DefaultProbeDatabases = 16

// AllowsDB says whether a probe may read database db with this module.
// Every number is a distinct target with state of its own, so they are
// bounded like the targets are.
func (m *Module) AllowsDB(db int) bool {
	if len(m.Databases) == 0 {
		return db >= 0 && db < DefaultProbeDatabases
	}
	return slices.Contains(m.Databases, db)
}

// dramatiqFile and databaseFile are the file's dramatiq and database
// sections: the same keys at the top level and in every module.
type dramatiqFile struct {
	Namespace         string   `yaml:"namespace"`
	HeartbeatTimeout  string   `yaml:"heartbeat_timeout"`
	Queues            []string `yaml:"queues"`
	DiscoveryInterval string   `yaml:"discovery_interval"`
	MaxQueues         *int     `yaml:"max_queues"`
	QueueRetention    string   `yaml:"queue_retention"`
	// The backlog by actor is the exporter's own read only: a module
	// refuses these keys (see loadModule).
	BacklogByActor           *bool `yaml:"backlog_by_actor"`
	BacklogByActorExactLimit *int  `yaml:"backlog_by_actor_exact_limit"`
}

type databaseFile struct {
	URL          string `yaml:"url"`
	PasswordFile string `yaml:"password_file"`
}

// moduleFile is one entry of modules: in the file. It takes the keys of the
// top-level redis (but url and the Sentinel keys: the probe's target names
// the server), dramatiq and database sections.
type moduleFile struct {
	Redis struct {
		PasswordFile          string `yaml:"password_file"`
		TLSCAFile             string `yaml:"tls_ca_file"`
		TLSCertFile           string `yaml:"tls_cert_file"`
		TLSKeyFile            string `yaml:"tls_key_file"`
		TLSServerName         string `yaml:"tls_server_name"`
		TLSInsecureSkipVerify *bool  `yaml:"tls_insecure_skip_verify"`
		Databases             []int  `yaml:"databases"`
	} `yaml:"redis"`
	Dramatiq dramatiqFile       `yaml:"dramatiq"`
	Database databaseFile       `yaml:"database"`
	Broker   string             `yaml:"broker"`
	RabbitMQ rabbitmqModuleFile `yaml:"rabbitmq"`
}

// loadModules resolves the file's modules: defaults filled in, password
// files read, every value checked like its top-level flag.
func loadModules(files map[string]moduleFile, base *Config) (map[string]*Module, error) {
	out := map[string]*Module{}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		m, err := loadModule(name, files[name], base)
		if err != nil {
			return nil, fmt.Errorf("modules.%s: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}

func loadModule(name string, f moduleFile, base *Config) (*Module, error) {
	if err := checkName("module", name); err != nil {
		return nil, fmt.Errorf("the name: %s", strings.TrimPrefix(err.Error(), "--module: "))
	}
	m := &Module{
		Name:              name,
		Namespace:         DefaultNamespace,
		HeartbeatTimeout:  DefaultHeartbeatTimeout,
		DiscoveryInterval: DefaultDiscoveryInterval,
		MaxQueues:         DefaultMaxQueues,
		RedisTLS: RedisTLS{
			CAFile: f.Redis.TLSCAFile, CertFile: f.Redis.TLSCertFile, KeyFile: f.Redis.TLSKeyFile,
			ServerName: f.Redis.TLSServerName,
		},
		DatabaseURL: f.Database.URL,
	}
	for _, db := range f.Redis.Databases {
		if db < 0 {
			return nil, fmt.Errorf("redis.databases: %d is not a database number", db)
		}
		if !slices.Contains(m.Databases, db) {
			m.Databases = append(m.Databases, db)
		}
	}
	if f.Redis.TLSInsecureSkipVerify != nil {
		m.RedisTLS.InsecureSkipVerify = *f.Redis.TLSInsecureSkipVerify
	}
	d := f.Dramatiq
	if d.BacklogByActor != nil || d.BacklogByActorExactLimit != nil {
		return nil, fmt.Errorf("dramatiq.backlog_by_actor: not a module setting: /probe does not read the backlog by actor")
	}
	if d.Namespace != "" {
		m.Namespace = d.Namespace
	}
	for key, dst := range map[string]*time.Duration{
		"dramatiq.heartbeat_timeout": &m.HeartbeatTimeout, "dramatiq.discovery_interval": &m.DiscoveryInterval,
		"dramatiq.queue_retention": &m.QueueRetention,
	} {
		v := map[string]string{"dramatiq.heartbeat_timeout": d.HeartbeatTimeout, "dramatiq.discovery_interval": d.DiscoveryInterval,
			"dramatiq.queue_retention": d.QueueRetention}[key]
		if err := setDuration(dst, v); err != nil {
			return nil, fmt.Errorf("%s: %v", key, err)
		}
	}
	if d.MaxQueues != nil {
		m.MaxQueues = *d.MaxQueues
	}
	seen := map[string]bool{}
	for _, raw := range d.Queues {
		for _, q := range strings.Split(raw, ",") {
			if q = strings.TrimSpace(q); q != "" && !seen[q] {
				seen[q] = true
				m.Queues = append(m.Queues, q)
			}
		}
	}
	sort.Strings(m.Queues)
	var err error
	if m.RedisPassword, err = secret("", f.Redis.PasswordFile, "redis.password-file"); err != nil {
		return nil, moduleErr(err)
	}
	if m.DatabasePassword, err = secret("", f.Database.PasswordFile, "database.password-file"); err != nil {
		return nil, moduleErr(err)
	}
	if f.Broker == BrokerRabbitMQ {
		if err := loadRabbitModule(m, f, base); err != nil {
			return nil, err
		}
		return m, nil
	}
	if f.Broker != "" && f.Broker != BrokerRedis {
		return nil, fmt.Errorf("broker: must be redis or rabbitmq, not %q", clipValue(f.Broker))
	}
	if f.RabbitMQ != (rabbitmqModuleFile{}) {
		return nil, fmt.Errorf("rabbitmq: needs broker: rabbitmq")
	}
	// Checked as the configuration a probe will run with; a TLS module is
	// for rediss:// targets.
	scheme := "redis"
	if m.RedisTLS != (RedisTLS{}) {
		scheme = "rediss"
	}
	if err := base.ForProbe(m, scheme+"://probe.invalid:6379/0").Validate(); err != nil {
		return nil, moduleErr(err)
	}
	return m, nil
}

// moduleErr names a module's key rather than the top-level flag.
func moduleErr(err error) error {
	if fe, ok := asFieldError(err); ok {
		return fmt.Errorf("%s: %s", flagToKey(fe.Flag), fe.Msg)
	}
	return err
}

func flagToKey(flag string) string { return strings.ReplaceAll(flag, "-", "_") }

// ForProbe is the configuration that reads target with module m: the
// module's broker and database settings, everything else (collectors,
// environment, timeouts) from c.
func (c *Config) ForProbe(m *Module, target string) *Config {
	p := *c
	p.RedisURL = target
	p.RedisPassword = m.RedisPassword
	p.Sentinel = Sentinel{}
	p.RedisTLS = m.RedisTLS
	p.Namespace = m.Namespace
	p.HeartbeatTimeout = m.HeartbeatTimeout
	p.Queues = append([]string(nil), m.Queues...)
	p.DiscoveryInterval = m.DiscoveryInterval
	p.MaxQueues = m.MaxQueues
	p.QueueRetention = m.QueueRetention
	p.DatabaseURL = m.DatabaseURL
	p.DatabasePassword = m.DatabasePassword
	p.Modules = nil
	p.Broker = m.Broker
	if p.Broker == "" {
		p.Broker = BrokerRedis
	}
	if m.Broker == BrokerRabbitMQ {
		// The Redis settings are not read; keep them valid.
		p.RedisURL, p.RedisPassword, p.RedisTLS = DefaultRedisURL, "", RedisTLS{}
		p.RabbitMQ = m.RabbitMQ
		p.RabbitMQ.URL = target
	}
	return &p
}

// ProbeTarget is a /probe target in canonical form.
type ProbeTarget struct {
	// Canonical is scheme://host:port/db, host lowercased without a final
	// dot, an IPv6 address in its short form: every spelling of one target
	// is one key.
	Canonical string
	Scheme    string
	// Host is the name or the address as written (canonicalised).
	Host string
	// Addr is set when Host is an address literal.
	Addr netip.Addr
	Port int
	DB   int
}

// HostPort is the canonical host:port.
func (t ProbeTarget) HostPort() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// ParseTarget checks a probe's target and returns it in canonical form.
// A target is redis:// or rediss:// with a host, a port and a database
// number, and nothing else: no credentials (they belong in a module), no
// query (go-redis reads options, a password among them, from it). The
// host is an IP address or a DNS name (letters, digits, - and _ in each
// label).
func ParseTarget(raw string) (ProbeTarget, error) {
	var t ProbeTarget
	if len(raw) > 1024 {
		return t, fmt.Errorf("target is longer than 1024 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return t, fmt.Errorf("target is not a URL")
	}
	switch {
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return t, fmt.Errorf("target must be redis:// or rediss://")
	case u.User != nil:
		return t, fmt.Errorf("target must not carry credentials; put them in a module's redis.password_file")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return t, fmt.Errorf("target must have no query or fragment")
	case u.Hostname() == "" || u.Port() == "":
		return t, fmt.Errorf("target needs a host and a port")
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil || port < 1 || port > 65535 {
		return t, fmt.Errorf("target port must be 1-65535")
	}
	db, err := strconv.Atoi(strings.TrimPrefix(u.Path, "/"))
	if err != nil || db < 0 || !strings.HasPrefix(u.Path, "/") || strconv.Itoa(db) != strings.TrimPrefix(u.Path, "/") {
		return t, fmt.Errorf("target needs a database number: redis://host:port/N")
	}
	host, addr, err := targetHost(u)
	if err != nil {
		return t, err
	}
	t.Addr = addr
	t.Scheme, t.Host, t.Port, t.DB = u.Scheme, host, port, db
	t.Canonical = fmt.Sprintf("%s://%s/%d", u.Scheme, t.HostPort(), db)
	return t, nil
}

// targetHost normalises a target's host the one way both brokers' targets
// use, so that the allow-list and the target's identity see the same
// spelling: an IP literal (unmapped, no zone) in its canonical form, or a
// lower-case DNS name of valid labels without the trailing dot. addr is
// the zero Addr for a name.
func targetHost(u *url.URL) (host string, addr netip.Addr, err error) {
	host = strings.ToLower(u.Hostname())
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", addr, fmt.Errorf("target address must have no zone")
		}
		return a.Unmap().String(), a.Unmap(), nil
	}
	if strings.Contains(u.Host, "[") {
		return "", addr, fmt.Errorf("target host in brackets must be an IPv6 address")
	}
	host = strings.TrimSuffix(host, ".")
	// "10.0.0.1." is no DNS name but that address spelt with a root dot:
	// it gets the address's canonical form and the address rules, never a
	// name pattern's.
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return a.String(), a, nil
	}
	if len(host) > 253 {
		return "", addr, fmt.Errorf("target host name is longer than 253 bytes")
	}
	for _, l := range strings.Split(host, ".") {
		if l == "" || len(l) > 63 || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return "", addr, fmt.Errorf("target host must be an IP address or a DNS name")
		}
	}
	return host, addr, nil
}
