// Package config holds the exporter's settings: the command-line flags, the
// optional YAML file (--config.file), their defaults and their validation.
// Precedence is flag, then environment variable, then file, then default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/urlsafe"
)

// Defaults that flags, docs and tests share.
const (
	DefaultRedisURL          = "redis://localhost:6379/0"
	DefaultNamespace         = "dramatiq"
	DefaultHeartbeatTimeout  = 60 * time.Second
	DefaultDiscoveryInterval = 30 * time.Second
	DefaultMaxQueues         = 1000
	DefaultEnvironment       = "development"
	DefaultListenAddress     = ":10191"
	DefaultScrapeTimeout     = 10 * time.Second
	DefaultTimeoutOffset     = 500 * time.Millisecond
	DefaultMaxConnections    = 64
	DefaultIdleTimeout       = 2 * time.Minute
	// DefaultBacklogExactLimit is the broker's; MaxBacklogExactLimit is
	// the per-read id budget, beyond which no queue can be read whole.
	DefaultBacklogExactLimit = 1000
	MaxBacklogExactLimit     = 20_000
)

// The discovery pace; broker/redis has the same defaults.
const (
	DefaultDiscoveryDuty          = 0.01
	DefaultDiscoveryFirstPassDuty = 0.1
)

// Config is the validated configuration. Secrets are resolved into
// RedisPassword and DatabasePassword and never printed.
type Config struct {
	// Broker is BrokerRedis or BrokerRabbitMQ; RabbitMQ is read only with
	// the latter, the Redis settings only with the former.
	Broker   string
	RabbitMQ RabbitMQ

	RedisURL      string
	RedisPassword string
	Sentinel      Sentinel
	RedisTLS      RedisTLS

	// Modules are the file's modules: by name; ProbeAllowedTargets empty
	// turns /probe off.
	Modules             map[string]*Module
	ProbeAllowedTargets []string
	ProbeIdleTimeout    time.Duration
	ProbeMaxTargets     int
	Namespace           string
	HeartbeatTimeout    time.Duration
	Queues              []string
	DiscoveryInterval   time.Duration
	MaxQueues           int
	QueueRetention      time.Duration
	// BacklogByActor turns on the backlog by actor; queues up to
	// BacklogExactLimit ready messages are counted exactly.
	BacklogByActor    bool
	BacklogExactLimit int

	// DiscoveryDuty and DiscoveryFirstPassDuty pace discovery (see
	// broker/redis Options.DiscoveryDuty and FirstPassDuty).
	DiscoveryDuty          float64
	DiscoveryFirstPassDuty float64

	DatabaseURL      string
	DatabasePassword string

	Environment     string
	TelemetryPath   string
	ScrapeTimeout   time.Duration
	TimeoutOffset   time.Duration
	MaxRequests     int
	ShowMessageArgs bool
	MaxConnections  int
	IdleTimeout     time.Duration

	// ListenAddresses, WebConfigFile and SystemdSocket are the
	// exporter-toolkit's web settings; see Config.Web.
	ListenAddresses []string
	WebConfigFile   string
	SystemdSocket   bool

	// LogLevel and LogFormat are promslog's; see Config.Log.
	LogLevel, LogFormat string

	// Collectors maps collector names to an explicit on/off choice.
	Collectors map[string]bool
}

// Sentinel selects Redis Sentinel mode when Addrs is not empty.
type Sentinel struct {
	Addrs    []string
	Master   string
	Password string
	Replica  bool
}

// RedisTLS are the TLS settings of rediss:// URLs.
type RedisTLS struct {
	CAFile, CertFile, KeyFile, ServerName string
	InsecureSkipVerify                    bool
}

// Collector is what config needs to know of a registered collector.
type Collector struct {
	Name           string
	DefaultEnabled bool
	Help           string
}

// Flags are the parsed command line before the file and validation apply.
type Flags struct {
	configFile *string
	bindings   []*binding
	// filePath is the config file read, and fromFile the flags whose value
	// it supplied, for error messages.
	filePath string
	fromFile map[string]bool

	rabbit                                        rabbitmqFlags
	redisURL, redisPasswordFile, redisPassword    *string
	sentinelAddrs                                 *[]string
	sentinelMaster, sentinelPasswordFile          *string
	sentinelPassword                              *string
	sentinelReplica                               *bool
	tlsCA, tlsCert, tlsKey, tlsServerName         *string
	tlsInsecure                                   *bool
	probeAllowed                                  *[]string
	probeIdleTimeout                              *time.Duration
	probeMaxTargets                               *int
	modules                                       map[string]moduleFile
	namespace                                     *string
	heartbeatTimeout, discoveryInterval           *time.Duration
	discoveryDuty, firstPassDuty                  *float64
	queueRetention                                *time.Duration
	backlogByActor                                *bool
	backlogExactLimit                             *int
	queues                                        *[]string
	maxQueues                                     *int
	databaseURL, dbPasswordFile, databasePassword *string
	environment, telemetryPath                    *string
	scrapeTimeout, timeoutOffset                  *time.Duration
	maxRequests, maxConnections                   *int
	idleTimeout                                   *time.Duration
	showMessageArgs                               *bool
	collectors                                    map[string]*bool
	web                                           *web.FlagConfig
	log                                           *promslog.Config
}

// binding ties a flag to its environment variable and its file key, so the
// file only fills what neither the command line nor the environment set.
type binding struct {
	name, envar, key string
	set              bool
	fromFile         func(f *fileConfig) error
}

// flagGroup is an application or a subcommand.
type flagGroup interface {
	Flag(name, help string) *kingpin.FlagClause
}

// bind declares a flag whose file key is its name with - turned into _.
func (fl *Flags) bind(g flagGroup, name, help, envar string) (*kingpin.FlagClause, *binding) {
	c := g.Flag(name, help)
	if envar != "" {
		c = c.Envar(envar)
	}
	return c, fl.adopt(c, name, strings.ReplaceAll(name, "-", "_"), envar)
}

// adopt binds a flag that a library declared to the file key key.
func (fl *Flags) adopt(c *kingpin.FlagClause, name, key, envar string) *binding {
	b := &binding{name: name, envar: envar, key: key}
	fl.bindings = append(fl.bindings, b)
	if c != nil {
		c.IsSetByUser(&b.set)
	}
	return b
}

// FileKey is the config-file key of a flag, "" if the file cannot set it.
func (fl *Flags) FileKey(flag string) string {
	for _, b := range fl.bindings {
		if b.name == flag {
			return b.key
		}
	}
	return ""
}

// AddFlags declares every setting on app. collectors become
// --[no-]collector.<name> switches.
func AddFlags(app *kingpin.Application, collectors []Collector) *Flags {
	fl := &Flags{collectors: map[string]*bool{}}
	fl.configFile = app.Flag("config.file", "YAML file with the same settings as the flags (see docs/configuration.md). Flags and environment variables take precedence over it.").Envar("DRAMATIQ_EXPORTER_CONFIG").PlaceHolder("FILE").String()

	fl.addBrokerFlags(app)
	c, b := fl.bind(app, "redis.url", "Redis URL of the Dramatiq broker: redis://[user[:password]@]host:port/db, rediss:// for TLS, or unix:///path.sock?db=N.", "REDIS_URL")
	fl.redisURL = c.Default(DefaultRedisURL).String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.redisURL, f.Redis.URL) }

	c, b = fl.bind(app, "redis.password-file", "File holding the Redis password; overrides the URL's. Or set REDIS_PASSWORD.", "REDIS_PASSWORD_FILE")
	fl.redisPasswordFile = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.redisPasswordFile, f.Redis.PasswordFile) }
	fl.redisPassword = app.Flag("redis.password", "Redis password. Prefer REDIS_PASSWORD or --redis.password-file: flags show in ps.").Hidden().Envar("REDIS_PASSWORD").String()

	c, b = fl.bind(app, "redis.sentinel-addrs", "Redis Sentinel addresses, host:port, comma-separated; repeatable. With --redis.sentinel-master, find the broker's Redis through Sentinel and follow failovers; --redis.url then gives only the scheme, credentials and database.", "REDIS_SENTINEL_ADDRS")
	fl.sentinelAddrs = c.PlaceHolder("HOST:PORT,...").Strings()
	b.fromFile = func(f *fileConfig) error {
		if len(f.Redis.SentinelAddrs) > 0 {
			*fl.sentinelAddrs = f.Redis.SentinelAddrs
		}
		return nil
	}
	c, b = fl.bind(app, "redis.sentinel-master", "Name of the master the sentinels monitor (sentinel monitor NAME ...).", "REDIS_SENTINEL_MASTER")
	fl.sentinelMaster = c.PlaceHolder("NAME").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.sentinelMaster, f.Redis.SentinelMaster) }
	c, b = fl.bind(app, "redis.sentinel-password-file", "File holding the sentinels' own password (their requirepass). Or set REDIS_SENTINEL_PASSWORD.", "REDIS_SENTINEL_PASSWORD_FILE")
	fl.sentinelPasswordFile = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.sentinelPasswordFile, f.Redis.SentinelPasswordFile) }
	fl.sentinelPassword = app.Flag("redis.sentinel-password", "Sentinel password. Prefer REDIS_SENTINEL_PASSWORD or --redis.sentinel-password-file.").Hidden().Envar("REDIS_SENTINEL_PASSWORD").String()
	c, b = fl.bind(app, "redis.sentinel-replica", "With Sentinel, read a replica instead of the master (the master when no replica is up). Replicas lag by replication delay, usually milliseconds.", "")
	fl.sentinelReplica = c.Bool()
	b.fromFile = func(f *fileConfig) error { return setBool(fl.sentinelReplica, f.Redis.SentinelReplica) }

	c, b = fl.bind(app, "redis.tls-ca-file", "PEM file of the CAs that may sign the Redis server's certificate (rediss:// only). Default: the system's roots. Read again when it changes.", "")
	fl.tlsCA = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.tlsCA, f.Redis.TLSCAFile) }
	c, b = fl.bind(app, "redis.tls-cert-file", "PEM client certificate for Redis servers that require one (tls-auth-clients). Read again when it changes.", "")
	fl.tlsCert = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.tlsCert, f.Redis.TLSCertFile) }
	c, b = fl.bind(app, "redis.tls-key-file", "PEM private key of --redis.tls-cert-file.", "")
	fl.tlsKey = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.tlsKey, f.Redis.TLSKeyFile) }
	c, b = fl.bind(app, "redis.tls-server-name", "Name the Redis server's certificate must carry. Default: the host dialled.", "")
	fl.tlsServerName = c.PlaceHolder("NAME").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.tlsServerName, f.Redis.TLSServerName) }
	c, b = fl.bind(app, "redis.tls-insecure-skip-verify", "INSECURE: accept any Redis server certificate. Traffic is encrypted but anyone on the path can impersonate the server and read it. For tests only.", "")
	fl.tlsInsecure = c.Bool()
	b.fromFile = func(f *fileConfig) error { return setBool(fl.tlsInsecure, f.Redis.TLSInsecureSkipVerify) }

	c, b = fl.bind(app, "dramatiq.namespace", "RedisBroker namespace: the prefix of every Dramatiq key.", "DRAMATIQ_NAMESPACE")
	fl.namespace = c.Default(DefaultNamespace).String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.namespace, f.Dramatiq.Namespace) }

	c, b = fl.bind(app, "dramatiq.heartbeat-timeout", "The workers' heartbeat_timeout: a process silent for longer is stale and its messages orphaned. Must match the RedisBroker setting.", "")
	fl.heartbeatTimeout = durationFlag(c, "dramatiq.heartbeat-timeout", DefaultHeartbeatTimeout)
	b.fromFile = func(f *fileConfig) error { return setDuration(fl.heartbeatTimeout, f.Dramatiq.HeartbeatTimeout) }

	c, b = fl.bind(app, "dramatiq.queues", "Queues to report even before they exist in Redis. Comma-separated; repeatable. Others are discovered.", "DRAMATIQ_QUEUES")
	fl.queues = c.PlaceHolder("QUEUE,...").Strings()
	b.fromFile = func(f *fileConfig) error {
		if len(f.Dramatiq.Queues) > 0 {
			*fl.queues = f.Dramatiq.Queues
		}
		return nil
	}

	c, b = fl.bind(app, "dramatiq.discovery-interval", "Shortest time between the starts of two passes that SCAN the namespace for queues and ack sets, in the background. A pass that costs Redis more than 1% of this time stretches it.", "")
	fl.discoveryInterval = durationFlag(c, "dramatiq.discovery-interval", DefaultDiscoveryInterval)
	b.fromFile = func(f *fileConfig) error { return setDuration(fl.discoveryInterval, f.Dramatiq.DiscoveryInterval) }

	c, b = fl.bind(app, "dramatiq.discovery-duty", "Share of Redis's main-thread time that discovery may take over a whole cycle, in (0, 1]: the next pass waits for the last one's Redis time divided by this. Higher finds new queues sooner on a large database, at more load on Redis (docs/stuck-work.md gives the figures).", "")
	fl.discoveryDuty = c.Default(strconv.FormatFloat(DefaultDiscoveryDuty, 'g', -1, 64)).Float64()
	b.fromFile = func(f *fileConfig) error {
		if f.Dramatiq.DiscoveryDuty != nil {
			*fl.discoveryDuty = *f.Dramatiq.DiscoveryDuty
		}
		return nil
	}

	c, b = fl.bind(app, "dramatiq.discovery-first-pass-duty", "Share of Redis's time the first discovery pass after start takes while it runs, in (0, 1]; 1 runs it unpaced. Until it completes only --dramatiq.queues are reported, so higher reports queues sooner after a start, at a burst of load on Redis.", "")
	fl.firstPassDuty = c.Default(strconv.FormatFloat(DefaultDiscoveryFirstPassDuty, 'g', -1, 64)).Float64()
	b.fromFile = func(f *fileConfig) error {
		if f.Dramatiq.DiscoveryFirstPassDuty != nil {
			*fl.firstPassDuty = *f.Dramatiq.DiscoveryFirstPassDuty
		}
		return nil
	}

	c, b = fl.bind(app, "dramatiq.max-queues", "Report at most this many queues (0: no limit); dramatiq_exporter_queues_dropped counts the rest.", "")
	fl.maxQueues = intFlag(c, "dramatiq.max-queues", DefaultMaxQueues)
	b.fromFile = func(f *fileConfig) error {
		if f.Dramatiq.MaxQueues != nil {
			*fl.maxQueues = *f.Dramatiq.MaxQueues
		}
		return nil
	}

	c, b = fl.bind(app, "dramatiq.queue-retention", "Stop reporting a discovered queue whose keys have been gone this long (0: keep reporting zeros until restart). Configured queues are kept.", "")
	fl.queueRetention = durationFlag(c, "dramatiq.queue-retention", 0)
	b.fromFile = func(f *fileConfig) error { return setDuration(fl.queueRetention, f.Dramatiq.QueueRetention) }

	c, b = fl.bind(app, "dramatiq.backlog-by-actor", "Report each queue's ready messages by actor (dramatiq_queue_ready_messages_by_actor): exact up to --dramatiq.backlog-by-actor-exact-limit, estimated from a sample of 1000 ids above. Costs up to 4 more round trips per scrape; see docs/backlog-by-actor.md.", "DRAMATIQ_BACKLOG_BY_ACTOR")
	fl.backlogByActor = c.Bool()
	b.fromFile = func(f *fileConfig) error { return setBool(fl.backlogByActor, f.Dramatiq.BacklogByActor) }

	c, b = fl.bind(app, "dramatiq.backlog-by-actor-exact-limit", "With --dramatiq.backlog-by-actor, count a queue's ready messages by actor exactly when it holds at most this many (each id's body is read once); estimate from a sample above.", "")
	fl.backlogExactLimit = intFlag(c, "dramatiq.backlog-by-actor-exact-limit", DefaultBacklogExactLimit)
	b.fromFile = func(f *fileConfig) error {
		if f.Dramatiq.BacklogByActorExactLimit != nil {
			*fl.backlogExactLimit = *f.Dramatiq.BacklogByActorExactLimit
		}
		return nil
	}

	c, b = fl.bind(app, "database.url", "PostgreSQL URL or DSN of the application's database; enables the database collectors.", "DATABASE_URL")
	fl.databaseURL = c.PlaceHolder("URL").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.databaseURL, f.Database.URL) }

	c, b = fl.bind(app, "database.password-file", "File holding the database password; overrides the URL's. Or set DATABASE_PASSWORD.", "DATABASE_PASSWORD_FILE")
	fl.dbPasswordFile = c.PlaceHolder("FILE").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.dbPasswordFile, f.Database.PasswordFile) }
	fl.databasePassword = app.Flag("database.password", "Database password. Prefer DATABASE_PASSWORD or --database.password-file.").Hidden().Envar("DATABASE_PASSWORD").String()

	c, b = fl.bind(app, "environment", "Deployment environment name, exported as dramatiq_exporter_info{environment}.", "ENVIRONMENT")
	fl.environment = c.Default(DefaultEnvironment).String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.environment, f.Environment) }

	c, b = fl.bind(app, "web.telemetry-path", "Path under which to expose metrics.", "")
	fl.telemetryPath = c.Default("/metrics").String()
	b.fromFile = func(f *fileConfig) error { return setString(fl.telemetryPath, f.Web.TelemetryPath) }

	c, b = fl.bind(app, "web.max-requests", "Maximum number of scrapes served at once (0: no limit).", "")
	fl.maxRequests = intFlag(c, "web.max-requests", 40)
	b.fromFile = func(f *fileConfig) error {
		if f.Web.MaxRequests != nil {
			*fl.maxRequests = *f.Web.MaxRequests
		}
		return nil
	}

	c, b = fl.bind(app, "web.max-connections", "Maximum number of open HTTP connections (0: no limit). At the limit, the connection that has waited longest without a request (idle keep-alive, or new and still sending its headers) is closed to make room; a new connection waits only while every one is busy.", "")
	fl.maxConnections = intFlag(c, "web.max-connections", DefaultMaxConnections)
	b.fromFile = func(f *fileConfig) error {
		if f.Web.MaxConnections != nil {
			*fl.maxConnections = *f.Web.MaxConnections
		}
		return nil
	}

	c, b = fl.bind(app, "web.idle-timeout", "Close a keep-alive connection idle for this long.", "")
	fl.idleTimeout = durationFlag(c, "web.idle-timeout", DefaultIdleTimeout)
	b.fromFile = func(f *fileConfig) error { return setDuration(fl.idleTimeout, f.Web.IdleTimeout) }

	c, b = fl.bind(app, "web.show-message-args", "Show message args and kwargs (user data) in the status page and API.", "")
	fl.showMessageArgs = c.Bool()
	b.fromFile = func(f *fileConfig) error {
		if f.Web.ShowMessageArgs != nil {
			*fl.showMessageArgs = *f.Web.ShowMessageArgs
		}
		return nil
	}

	c, b = fl.bind(app, "scrape.timeout", "Upper bound of one scrape's reads, whatever Prometheus's scrape timeout.", "")
	fl.scrapeTimeout = durationFlag(c, "scrape.timeout", DefaultScrapeTimeout)
	b.fromFile = func(f *fileConfig) error { return setDuration(fl.scrapeTimeout, f.Scrape.Timeout) }

	c, b = fl.bind(app, "scrape.timeout-offset", "Subtracted from X-Prometheus-Scrape-Timeout-Seconds so the reply reaches Prometheus before it gives up.", "")
	fl.timeoutOffset = durationFlag(c, "scrape.timeout-offset", DefaultTimeoutOffset)
	b.fromFile = func(f *fileConfig) error { return setDuration(fl.timeoutOffset, f.Scrape.TimeoutOffset) }

	c, b = fl.bind(app, "probe.allowed-targets", "host:port entries /probe may read: an IP address, a CIDR range (10.1.2.0/24, [fd00::/64]) or 10.1.2.* (addresses only), or a host-name pattern (*.redis.example.com: * within one label); the port may be *. Comma-separated, repeatable. Empty: /probe is off. A target not allowed gets 400 and is never connected to.", "")
	fl.probeAllowed = c.PlaceHolder("HOST:PORT,...").Strings()
	b.fromFile = func(f *fileConfig) error {
		if len(f.Probe.AllowedTargets) > 0 {
			*fl.probeAllowed = f.Probe.AllowedTargets
		}
		return nil
	}
	c, b = fl.bind(app, "probe.idle-timeout", "Forget a probed target (its client, discovery and remembered queues) after this long without a probe.", "")
	fl.probeIdleTimeout = durationFlag(c, "probe.idle-timeout", DefaultProbeIdleTimeout)
	b.fromFile = func(f *fileConfig) error { return setDuration(fl.probeIdleTimeout, f.Probe.IdleTimeout) }
	c, b = fl.bind(app, "probe.max-targets", "Most probed targets kept at once; a new one evicts the least recently probed idle one-off target, or gets 503.", "")
	fl.probeMaxTargets = intFlag(c, "probe.max-targets", DefaultProbeMaxTargets)
	b.fromFile = func(f *fileConfig) error {
		if f.Probe.MaxTargets != nil {
			*fl.probeMaxTargets = *f.Probe.MaxTargets
		}
		return nil
	}

	for _, col := range collectors {
		state := "disabled"
		if col.DefaultEnabled {
			state = "enabled"
		}
		name := col.Name
		c, b := fl.bind(app, "collector."+name, fmt.Sprintf("%s (default: %s)", col.Help, state), "")
		b.key = "collectors." + name
		fl.collectors[name] = c.Default(fmt.Sprint(col.DefaultEnabled)).Bool()
		b.fromFile = func(f *fileConfig) error {
			if v, ok := f.Collectors[name]; ok {
				*fl.collectors[name] = v
			}
			return nil
		}
	}

	// The web and log flags are the exporter-toolkit's and promslog's, as
	// in every Prometheus exporter; the file reaches them through the
	// values those packages parse into.
	fl.log = &promslog.Config{}
	promslogflag.AddFlags(app, fl.log)
	b = fl.adopt(app.GetFlag(promslogflag.LevelFlagName), promslogflag.LevelFlagName, "log.level", "")
	b.fromFile = func(f *fileConfig) error { return setValue(fl.log.Level, f.Log.Level) }
	b = fl.adopt(app.GetFlag(promslogflag.FormatFlagName), promslogflag.FormatFlagName, "log.format", "")
	b.fromFile = func(f *fileConfig) error { return setValue(fl.log.Format, f.Log.Format) }

	fl.web = kingpinflag.AddFlags(app, DefaultListenAddress)
	b = fl.adopt(app.GetFlag("web.listen-address"), "web.listen-address", "web.listen_addresses", "")
	b.fromFile = func(f *fileConfig) error {
		if len(f.Web.ListenAddresses) > 0 {
			*fl.web.WebListenAddresses = f.Web.ListenAddresses
		}
		return nil
	}
	b = fl.adopt(app.GetFlag("web.config.file"), "web.config.file", "web.config_file", "")
	b.fromFile = func(f *fileConfig) error { return setString(fl.web.WebConfigFile, f.Web.ConfigFile) }
	// Socket activation exists only on Linux, where the toolkit declares
	// the flag; elsewhere the key can only say false.
	socket := app.GetFlag("web.systemd-socket")
	b = fl.adopt(socket, "web.systemd-socket", "web.systemd_socket", "")
	b.fromFile = func(f *fileConfig) error {
		if f.Web.SystemdSocket == nil {
			return nil
		}
		if socket == nil && *f.Web.SystemdSocket {
			return errors.New("systemd socket activation is only available on Linux")
		}
		*fl.web.WebSystemdSocket = *f.Web.SystemdSocket
		return nil
	}
	return fl
}

// dramatiqTopFile is the top-level dramatiq section: a module's keys plus
// the discovery pace, which only the server's own reader has (a /probe
// target's reader keeps the defaults).
type dramatiqTopFile struct {
	dramatiqFile           `yaml:",inline"`
	DiscoveryDuty          *float64 `yaml:"discovery_duty"`
	DiscoveryFirstPassDuty *float64 `yaml:"discovery_first_pass_duty"`
}

// fileConfig is the YAML file. Unknown keys are an error, so a typo does
// not silently fall back to a default.
type fileConfig struct {
	Broker   string       `yaml:"broker"`
	RabbitMQ rabbitmqFile `yaml:"rabbitmq"`
	Redis    struct {
		URL                   string   `yaml:"url"`
		PasswordFile          string   `yaml:"password_file"`
		SentinelAddrs         []string `yaml:"sentinel_addrs"`
		SentinelMaster        string   `yaml:"sentinel_master"`
		SentinelPasswordFile  string   `yaml:"sentinel_password_file"`
		SentinelReplica       *bool    `yaml:"sentinel_replica"`
		TLSCAFile             string   `yaml:"tls_ca_file"`
		TLSCertFile           string   `yaml:"tls_cert_file"`
		TLSKeyFile            string   `yaml:"tls_key_file"`
		TLSServerName         string   `yaml:"tls_server_name"`
		TLSInsecureSkipVerify *bool    `yaml:"tls_insecure_skip_verify"`
	} `yaml:"redis"`
	Dramatiq    dramatiqTopFile `yaml:"dramatiq"`
	Database    databaseFile    `yaml:"database"`
	Environment string          `yaml:"environment"`
	Web         struct {
		ListenAddresses []string `yaml:"listen_addresses"`
		ConfigFile      string   `yaml:"config_file"`
		SystemdSocket   *bool    `yaml:"systemd_socket"`
		TelemetryPath   string   `yaml:"telemetry_path"`
		MaxRequests     *int     `yaml:"max_requests"`
		ShowMessageArgs *bool    `yaml:"show_message_args"`
		MaxConnections  *int     `yaml:"max_connections"`
		IdleTimeout     string   `yaml:"idle_timeout"`
	} `yaml:"web"`
	Scrape struct {
		Timeout       string `yaml:"timeout"`
		TimeoutOffset string `yaml:"timeout_offset"`
	} `yaml:"scrape"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	// Check holds the thresholds of the check subcommand; the server
	// ignores them, so one file serves both.
	Check struct {
		MinProcesses *int     `yaml:"min_processes"`
		MaxReady     []string `yaml:"max_ready"`
		MaxOldestAge []string `yaml:"max_oldest_age"`
		NoOrphans    *bool    `yaml:"no_orphans"`
		Timeout      string   `yaml:"timeout"`
	} `yaml:"check"`
	Collectors map[string]bool `yaml:"collectors"`
	Probe      struct {
		AllowedTargets []string `yaml:"allowed_targets"`
		IdleTimeout    string   `yaml:"idle_timeout"`
		MaxTargets     *int     `yaml:"max_targets"`
	} `yaml:"probe"`
	Modules map[string]moduleFile `yaml:"modules"`
}

// setValue feeds a file value to a flag's own parser, so both are checked
// alike.
func setValue(dst interface{ Set(string) error }, v string) error {
	if v == "" {
		return nil
	}
	err := dst.Set(v)
	// The caller names the file's key; the flag's name would only repeat it.
	if fe, ok := asFieldError(err); ok {
		return errors.New(fe.Msg)
	}
	return err
}

func setString(dst *string, v string) error {
	if v != "" {
		*dst = v
	}
	return nil
}

func setBool(dst *bool, v *bool) error {
	if v != nil {
		*dst = *v
	}
	return nil
}

func setDuration(dst *time.Duration, v string) error {
	if v == "" {
		return nil
	}
	d, err := model.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("invalid duration %q", v)
	}
	*dst = time.Duration(d)
	return nil
}

// Load applies the config file (if any) under the flags, reads password
// files and validates everything. Its errors name the flag or key at fault.
func (fl *Flags) Load() (*Config, error) {
	if *fl.configFile != "" {
		if err := fl.applyFile(*fl.configFile); err != nil {
			return nil, err
		}
	}
	cfg := &Config{
		RedisURL: *fl.redisURL,
		Sentinel: Sentinel{Master: *fl.sentinelMaster, Replica: *fl.sentinelReplica},
		RedisTLS: RedisTLS{
			CAFile: *fl.tlsCA, CertFile: *fl.tlsCert, KeyFile: *fl.tlsKey,
			ServerName: *fl.tlsServerName, InsecureSkipVerify: *fl.tlsInsecure,
		},
		Namespace:         *fl.namespace,
		HeartbeatTimeout:  *fl.heartbeatTimeout,
		DiscoveryInterval: *fl.discoveryInterval,
		MaxQueues:         *fl.maxQueues,
		QueueRetention:    *fl.queueRetention,
		BacklogByActor:    *fl.backlogByActor,
		BacklogExactLimit: *fl.backlogExactLimit,
		DatabaseURL:       *fl.databaseURL,
		Environment:       *fl.environment,
		TelemetryPath:     *fl.telemetryPath,
		ScrapeTimeout:     *fl.scrapeTimeout,
		TimeoutOffset:     *fl.timeoutOffset,
		MaxRequests:       *fl.maxRequests,
		ShowMessageArgs:   *fl.showMessageArgs,
		ListenAddresses:   append([]string(nil), *fl.web.WebListenAddresses...),
		WebConfigFile:     *fl.web.WebConfigFile,
		SystemdSocket:     *fl.web.WebSystemdSocket,
		LogLevel:          fl.log.Level.String(),
		LogFormat:         fl.log.Format.String(),
		MaxConnections:    *fl.maxConnections,
		IdleTimeout:       *fl.idleTimeout,
		ProbeIdleTimeout:  *fl.probeIdleTimeout,
		ProbeMaxTargets:   *fl.probeMaxTargets,
		Collectors:        map[string]bool{},
	}
	cfg.DiscoveryDuty, cfg.DiscoveryFirstPassDuty = *fl.discoveryDuty, *fl.firstPassDuty
	for name, v := range fl.collectors {
		cfg.Collectors[name] = *v
	}
	seen := map[string]bool{}
	for _, raw := range *fl.queues {
		for _, q := range strings.Split(raw, ",") {
			if q = strings.TrimSpace(q); q != "" && !seen[q] {
				seen[q] = true
				cfg.Queues = append(cfg.Queues, q)
			}
		}
	}
	sort.Strings(cfg.Queues)
	for _, raw := range *fl.probeAllowed {
		for _, a := range strings.Split(raw, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.ProbeAllowedTargets = append(cfg.ProbeAllowedTargets, a)
			}
		}
	}
	for _, raw := range *fl.sentinelAddrs {
		for _, a := range strings.Split(raw, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Sentinel.Addrs = append(cfg.Sentinel.Addrs, a)
			}
		}
	}

	var err error
	if cfg.Sentinel.Password, err = secret(*fl.sentinelPassword, *fl.sentinelPasswordFile, "redis.sentinel-password-file"); err != nil {
		return nil, fl.where(err)
	}
	if cfg.RedisPassword, err = secret(*fl.redisPassword, *fl.redisPasswordFile, "redis.password-file"); err != nil {
		return nil, fl.where(err)
	}
	if cfg.DatabasePassword, err = secret(*fl.databasePassword, *fl.dbPasswordFile, "database.password-file"); err != nil {
		return nil, fl.where(err)
	}
	if err := fl.loadBroker(cfg); err != nil {
		return nil, fl.where(err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fl.where(err)
	}
	if cfg.Modules, err = loadModules(fl.modules, cfg); err != nil {
		return nil, fmt.Errorf("--config.file %s: %v", fl.filePath, err)
	}
	return cfg, nil
}

// where names the config file's key instead of the flag when the file
// supplied the bad value.
func (fl *Flags) where(err error) error {
	if fe, ok := asFieldError(err); ok && fl.fromFile[fe.Flag] {
		return fmt.Errorf("--config.file %s: %s: %s", fl.filePath, fl.FileKey(fe.Flag), fe.Msg)
	}
	return err
}

func (fl *Flags) applyFile(path string) error {
	data, err := readRegularFile(path, MaxConfigFileBytes)
	if err != nil {
		return fmt.Errorf("--config.file: %v", err)
	}
	var f fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("--config.file %s: %v", path, shortYAMLError(err))
	}
	// A second document would be parsed by nobody: its keys, typos
	// included, would silently do nothing.
	var rest yaml.Node
	if err := dec.Decode(&rest); !errors.Is(err, io.EOF) {
		if err != nil {
			return fmt.Errorf("--config.file %s: %v", path, shortYAMLError(err))
		}
		return fmt.Errorf("--config.file %s: line %d: a second YAML document (after ---); put every setting in one document", path, rest.Line)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("--config.file %s: %v", path, shortYAMLError(err))
	}
	present := keysOf(&doc)
	for name := range f.Collectors {
		if _, ok := fl.collectors[name]; !ok {
			return fmt.Errorf("--config.file %s: collectors: unknown collector %q", path, name)
		}
	}
	fl.filePath = path
	fl.modules = f.Modules
	fl.fromFile = map[string]bool{}
	for _, b := range fl.bindings {
		if b.set || (b.envar != "" && os.Getenv(b.envar) != "") || b.fromFile == nil {
			continue
		}
		if err := b.fromFile(&f); err != nil {
			return fmt.Errorf("--config.file %s: %s: %v", path, b.key, err)
		}
		fl.fromFile[b.name] = present[b.key]
	}
	return nil
}

// Web is the exporter-toolkit's view of the web settings.
func (c *Config) Web() *web.FlagConfig {
	addrs := append([]string(nil), c.ListenAddresses...)
	socket, file := c.SystemdSocket, c.WebConfigFile
	return &web.FlagConfig{WebListenAddresses: &addrs, WebSystemdSocket: &socket, WebConfigFile: &file}
}

// Log is promslog's view of the log settings, writing to w.
func (c *Config) Log(w io.Writer) *promslog.Config {
	lc := &promslog.Config{Level: promslog.NewLevel(), Format: promslog.NewFormat(), Writer: w}
	// Both were parsed by the same values when loaded.
	_ = lc.Level.Set(c.LogLevel)
	_ = lc.Format.Set(c.LogFormat)
	return lc
}

// keysOf lists the dotted paths of the mappings in a YAML document
// ("web", "web.telemetry_path", ...), to tell which settings it supplied.
func keysOf(doc *yaml.Node) map[string]bool {
	out := map[string]bool{}
	var walk func(n *yaml.Node, prefix string, depth int)
	walk = func(n *yaml.Node, prefix string, depth int) {
		for n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			n = n.Content[0]
		}
		if n.Kind != yaml.MappingNode || depth > 2 {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := prefix + n.Content[i].Value
			out[k] = true
			walk(n.Content[i+1], k+".", depth+1)
		}
	}
	walk(doc, "", 0)
	return out
}

// shortYAMLError keeps the first few of yaml's per-field errors: a large
// wrong file must not make a megabyte of error text.
func shortYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) <= 5 {
		return err
	}
	return fmt.Errorf("yaml: unmarshal errors:\n  %s\n  ... and %d more", strings.Join(te.Errors[:5], "\n  "), len(te.Errors)-5)
}

func secret(direct, file, flag string) (string, error) {
	if file == "" {
		return direct, nil
	}
	b, err := readRegularFile(file, MaxSecretFileBytes)
	if err != nil {
		// The error names the file, never its contents.
		return "", fieldErr(flag, "%v", err)
	}
	// Editors and echo add a final line break; it is not part of the secret.
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", fieldErr(flag, "%s is empty", file)
	}
	return pw, nil
}

var queueName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9._-]*$`)

// MaxNameBytes bounds the settings that become label values or key
// prefixes (environment, namespace, queue names): each is repeated in
// every series or key that carries it.
const MaxNameBytes = 256

// checkName refuses what cannot be a Prometheus label value (invalid
// UTF-8) and what would bloat every series.
func checkName(flag, v string) error {
	if v == "" {
		return fieldErr(flag, "must not be empty")
	}
	if !utf8.ValidString(v) {
		return fieldErr(flag, "%q is not valid UTF-8 (it becomes a label value)", v)
	}
	if len(v) > MaxNameBytes {
		return fieldErr(flag, "is %d bytes long, more than %d", len(v), MaxNameBytes)
	}
	return nil
}

// Paths the exporter serves besides the metrics; the telemetry path must
// not shadow them.
var reservedPaths = []string{"/", "/api/v1/status", "/probe", "/-/healthy", "/-/ready"}

// checkTelemetryPath: the path is served as a literal (not an
// http.ServeMux pattern), so braces, spaces and % are fine; it only has to
// be an absolute path a client can ask for.
func checkTelemetryPath(p string) error {
	const flag = "web.telemetry-path"
	if !strings.HasPrefix(p, "/") {
		return fieldErr(flag, "must start with /, not %q", p)
	}
	if slices.Contains(reservedPaths, p) {
		return fieldErr(flag, "%q is taken by the exporter's own pages (%s)", p, strings.Join(reservedPaths, ", "))
	}
	if !utf8.ValidString(p) {
		return fieldErr(flag, "%q is not valid UTF-8", p)
	}
	if strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return fieldErr(flag, "%q holds a control character", p)
	}
	if len(p) > 1024 {
		return fieldErr(flag, "is %d bytes long, more than 1024", len(p))
	}
	return nil
}

// Validate checks every value and names the flag of the first bad one.
func (c *Config) Validate() error {
	if err := c.validateBroker(); err != nil {
		return err
	}
	if err := checkRedisURL(c.RedisURL); err != nil {
		return err
	}
	if err := c.validateTopology(); err != nil {
		return err
	}
	if _, err := ParseAllowList(c.ProbeAllowedTargets); err != nil {
		return err
	}
	if c.ProbeIdleTimeout <= 0 {
		return fieldErr("probe.idle-timeout", "must be positive, not %s", c.ProbeIdleTimeout)
	}
	if c.ProbeMaxTargets < 1 {
		return fieldErr("probe.max-targets", "must be 1 or more, not %d", c.ProbeMaxTargets)
	}
	if err := checkName("dramatiq.namespace", c.Namespace); err != nil {
		return err
	}
	if c.HeartbeatTimeout <= 0 {
		return fieldErr("dramatiq.heartbeat-timeout", "must be positive, not %s", c.HeartbeatTimeout)
	}
	if c.DiscoveryInterval < 100*time.Millisecond {
		return fieldErr("dramatiq.discovery-interval", "must be at least 100ms, not %s", c.DiscoveryInterval)
	}
	// !(x > 0) also refuses NaN.
	if !(c.DiscoveryDuty > 0 && c.DiscoveryDuty <= 1) {
		return fieldErr("dramatiq.discovery-duty", "must be more than 0 and at most 1, not %g", c.DiscoveryDuty)
	}
	if !(c.DiscoveryFirstPassDuty > 0 && c.DiscoveryFirstPassDuty <= 1) {
		return fieldErr("dramatiq.discovery-first-pass-duty", "must be more than 0 and at most 1, not %g", c.DiscoveryFirstPassDuty)
	}
	if c.MaxQueues < 0 {
		return fieldErr("dramatiq.max-queues", "must be 0 or more, not %d", c.MaxQueues)
	}
	if c.BacklogExactLimit < 1 || c.BacklogExactLimit > MaxBacklogExactLimit {
		return fieldErr("dramatiq.backlog-by-actor-exact-limit", "must be between 1 and %d, not %d", MaxBacklogExactLimit, c.BacklogExactLimit)
	}
	if c.QueueRetention < 0 {
		return fieldErr("dramatiq.queue-retention", "must be 0 or more, not %s", c.QueueRetention)
	}
	for _, q := range c.Queues {
		if !queueName.MatchString(q) {
			return fieldErr("dramatiq.queues", "%q is not a Dramatiq queue name ([a-zA-Z_][a-zA-Z0-9._-]*)", q)
		}
		if len(q) > MaxNameBytes {
			return fieldErr("dramatiq.queues", "a queue name is %d bytes long, more than %d", len(q), MaxNameBytes)
		}
	}
	if c.DatabaseURL != "" {
		if err := checkDatabaseURL(c.DatabaseURL); err != nil {
			return err
		}
	}
	if err := checkName("environment", c.Environment); err != nil {
		return err
	}
	if err := checkTelemetryPath(c.TelemetryPath); err != nil {
		return err
	}
	if c.ScrapeTimeout <= 0 {
		return fieldErr("scrape.timeout", "must be positive, not %s", c.ScrapeTimeout)
	}
	if c.TimeoutOffset < 0 {
		return fieldErr("scrape.timeout-offset", "must be 0 or more, not %s", c.TimeoutOffset)
	}
	if c.MaxRequests < 0 {
		return fieldErr("web.max-requests", "must be 0 or more, not %d", c.MaxRequests)
	}
	if c.MaxConnections < 0 {
		return fieldErr("web.max-connections", "must be 0 or more, not %d", c.MaxConnections)
	}
	if c.IdleTimeout <= 0 {
		return fieldErr("web.idle-timeout", "must be positive, not %s", c.IdleTimeout)
	}
	return nil
}

func checkRedisURL(raw string) error {
	const flag = "redis.url"
	u, err := urlsafe.Check(raw)
	if err != nil {
		return fieldErr(flag, "%v, or put the password in REDIS_PASSWORD or in a file named by --redis.password-file", err)
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return fieldErr(flag, "scheme must be redis, rediss or unix, not %q", u.Scheme)
	}
	return nil
}

// checkDatabaseURL checks the URL form; the key=value form has no
// delimiters a password could break, and pgx's own parser judges it.
func checkDatabaseURL(raw string) error {
	const flag = "database.url"
	if strings.ContainsAny(raw, "\n\r") {
		return fieldErr(flag, "must be one line")
	}
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok || (scheme != "postgres" && scheme != "postgresql") {
		return nil
	}
	if _, err := urlsafe.Check(raw); err != nil {
		return fieldErr(flag, "%v, or put the password in DATABASE_PASSWORD or in a file named by --database.password-file", err)
	}
	return nil
}

// validateTopology checks the Sentinel and TLS settings against the URL's
// scheme (the URL itself is checked already).
func (c *Config) validateTopology() error {
	scheme, _, _ := strings.Cut(c.RedisURL, "://")
	s := c.Sentinel
	switch {
	case len(s.Addrs) > 0 && s.Master == "":
		return fieldErr("redis.sentinel-master", "required with --redis.sentinel-addrs")
	case len(s.Addrs) == 0 && s.Master != "":
		return fieldErr("redis.sentinel-addrs", "required with --redis.sentinel-master")
	case len(s.Addrs) == 0 && s.Replica:
		return fieldErr("redis.sentinel-replica", "needs --redis.sentinel-addrs")
	case len(s.Addrs) == 0 && s.Password != "":
		return fieldErr("redis.sentinel-password-file", "needs --redis.sentinel-addrs")
	case len(s.Addrs) > 0 && scheme == "unix":
		return fieldErr("redis.url", "Sentinel needs redis:// or rediss://, not unix://")
	}
	for _, a := range s.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return fieldErr("redis.sentinel-addrs", "%q is not host:port", a)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fieldErr("redis.sentinel-addrs", "%q: port must be 1-65535", a)
		}
	}
	t := c.RedisTLS
	if t != (RedisTLS{}) && scheme != "rediss" {
		for _, f := range []struct{ flag, v string }{{"redis.tls-ca-file", t.CAFile}, {"redis.tls-cert-file", t.CertFile},
			{"redis.tls-key-file", t.KeyFile}, {"redis.tls-server-name", t.ServerName}} {
			if f.v != "" {
				return fieldErr(f.flag, "TLS settings need a rediss:// --redis.url")
			}
		}
		return fieldErr("redis.tls-insecure-skip-verify", "TLS settings need a rediss:// --redis.url")
	}
	if t.CertFile != "" && t.KeyFile == "" {
		return fieldErr("redis.tls-key-file", "required with --redis.tls-cert-file")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		return fieldErr("redis.tls-cert-file", "required with --redis.tls-key-file")
	}
	return nil
}
