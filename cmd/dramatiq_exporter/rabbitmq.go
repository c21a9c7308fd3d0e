package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/broker/rabbitmq"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/probe"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
)

// rabbitmqOptions maps the configuration onto the RabbitMQ reader's
// options. The scrape's deadline bounds every read; Timeout only bounds a
// read without one.
func rabbitmqOptions(cfg *config.Config) rabbitmq.Options {
	r := cfg.RabbitMQ
	return rabbitmq.Options{
		URL: r.URL, User: r.User, Password: r.Password, PasswordFile: r.PasswordFile, Vhost: r.Vhost,
		TLS: rabbitmq.TLSOptions{CAFile: r.TLS.CAFile, CertFile: r.TLS.CertFile, KeyFile: r.TLS.KeyFile,
			ServerName: r.TLS.ServerName, InsecureSkipVerify: r.TLS.InsecureSkipVerify},
		Timeout:       cfg.ScrapeTimeout,
		PrometheusURL: r.PrometheusURL,
	}
}

// buildRabbitMQSources makes the RabbitMQ reader (and the database pool,
// when configured). Nothing connects here. dial, when set, is the only
// way the reader may connect (a /probe target's admitted addresses).
func buildRabbitMQSources(ctx context.Context, cfg *config.Config, logger *slog.Logger, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (collector.Sources, func(), error) {
	o := rabbitmqOptions(cfg)
	o.Dial = dial
	reader, err := rabbitmq.New(o)
	if err != nil {
		return collector.Sources{}, nil, fmt.Errorf("--rabbitmq.url: %w", err)
	}
	// The URL carries no credentials (config refuses them); the user is
	// not a secret.
	logger.Info("reading Dramatiq broker", "broker", "rabbitmq", "rabbitmq", cfg.RabbitMQ.URL, "vhost", cfg.RabbitMQ.Vhost, "user", cfg.RabbitMQ.User)
	if cfg.RabbitMQ.TLS.InsecureSkipVerify {
		logger.Warn("--rabbitmq.tls-insecure-skip-verify: the management API's certificate is NOT verified; anyone on the network path can impersonate it")
	}
	sources := collector.Sources{Broker: reader.Limit(cfg.MaxQueues), Logger: logger}
	if cfg.DatabaseURL == "" {
		return sources, reader.Close, nil
	}
	pool, err := collector.NewDatabasePool(ctx, cfg.DatabaseURL, cfg.DatabasePassword, logger)
	if err != nil {
		reader.Close()
		return collector.Sources{}, nil, fmt.Errorf("--database.url: %w", err)
	}
	sources.Database = pool
	return sources, func() { reader.Close(); pool.Close() }, nil
}

// buildRabbitMQProbeTarget is buildProbeTarget for a broker: rabbitmq
// module: its reader connects only through dial, so its credentials go to
// the addresses the allow-list admitted and nowhere else (redirects are
// not followed, no proxy is used).
func buildRabbitMQProbeTarget(cfg *config.Config, m *config.Module, pools *modulePools, dial probe.DialFunc, logger *slog.Logger) (*probe.Target, error) {
	o := rabbitmqOptions(cfg)
	o.Dial = dial
	reader, err := rabbitmq.New(o)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	sources := collector.Sources{Broker: reader.Limit(cfg.MaxQueues), Logger: logger}
	if cfg.DatabaseURL != "" {
		if sources.Database, err = pools.get(m); err != nil {
			reader.Close()
			return nil, err
		}
	}
	exporter, err := collector.NewExporter(collector.ExporterOptions{
		Enabled: cfg.Collectors, Environment: cfg.Environment, Namespace: cfg.Namespace,
	}, sources)
	if err != nil {
		reader.Close()
		return nil, err
	}
	h := server.MetricsHandler(exporter, prometheus.NewRegistry(), server.MetricsOptions{
		Timeout: cfg.ScrapeTimeout, TimeoutOffset: cfg.TimeoutOffset, MaxRequests: cfg.MaxRequests, Logger: logger,
	})
	return &probe.Target{Handler: h, Close: reader.Close}, nil
}

// brokerKind is the model's name of the configured broker.
func brokerKind(cfg *config.Config) broker.Kind {
	if cfg.Broker == config.BrokerRabbitMQ {
		return broker.RabbitMQ
	}
	return broker.Redis
}
