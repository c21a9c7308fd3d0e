package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker/rabbitmq"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/config"
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
		Timeout: cfg.ScrapeTimeout,
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
	sources := collector.Sources{Broker: reader, Logger: logger}
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
