package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/urlsafe"
)

// DatabaseApplicationName is the application_name the exporter's sessions
// carry unless the DSN sets one, so a DBA can tell them apart. The activity
// collector leaves the exporter's own sessions out by pid, not by this name,
// which any application may set too.
const DatabaseApplicationName = "dramatiq_exporter"

// databasePoolMaxConns bounds the exporter's footprint on the application's
// database: one connection per database collector, plus one so that an
// overlapping scrape (a second Prometheus) does not queue behind the first.
const databasePoolMaxConns = 3

// NewDatabasePool builds the pool the database collectors share. dsn is a
// postgres:// URL or libpq key=value string; a non-empty password replaces
// the one in the DSN (pass the contents of --database.password-file). As with
// libpq, PGPASSWORD, PGPASSFILE/~/.pgpass and the other PG* variables fill in
// what the DSN leaves out.
//
// The pool connects lazily: a database that is down at start-up is not an
// error, so the exporter starts, reports dramatiq_database_up 0 and recovers
// on its own. Only a DSN that cannot be parsed fails. Neither the DSN nor the
// password appears in the returned error or in log lines.
func NewDatabasePool(ctx context.Context, dsn, password string, logger *slog.Logger) (*pgxpool.Pool, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		// A password with an unescaped # / ? or @ would move into the host
		// or the database name, which the log line below shows.
		if _, err := urlsafe.Check(dsn); err != nil {
			return nil, fmt.Errorf("cannot use the database URL: %w", err)
		}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx masks passwords in parse errors only "on a best-effort basis"
		// (its words), and a malformed DSN is exactly when that can miss, so
		// none of its text is passed on.
		return nil, errors.New("cannot parse the database URL: expected postgres://user@host:port/dbname?sslmode=... or key=value pairs (the text is not shown because it may hold a password)")
	}
	if password != "" {
		cfg.ConnConfig.Password = password
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = DatabaseApplicationName
	}
	// The simple protocol costs one round trip per query, prepares nothing on
	// the server and passes through PgBouncer in transaction mode.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.MaxConns = databasePoolMaxConns
	// No connection at start-up and none kept open by the pool's own timer:
	// connections are made inside a scrape, under its deadline.
	cfg.MinConns = 0
	cfg.MinIdleConns = 0
	cfg.MaxConnIdleTime = 5 * time.Minute
	own := newOwnBackends()
	cfg.ConnConfig.Tracer = own
	cfg.BeforeClose = own.closed

	scrub := newDBScrubber(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, scrub.wrap("database pool", err)
	}
	logger.Info("database collectors enabled; connecting on the first scrape",
		"database", databaseTarget(cfg), "application_name", cfg.ConnConfig.RuntimeParams["application_name"])
	return pool, nil
}

// databaseTarget names the database for log lines without credentials.
func databaseTarget(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	host := c.Host
	if strings.HasPrefix(host, "/") {
		host = "unix:" + host
	}
	return fmt.Sprintf("%s@%s:%d/%s", c.User, host, c.Port, c.Database)
}

// dbScrubber removes the DSN and the password from error text. pgx's
// connection errors name the user, database and host, not the password; this
// is the second line of defence, for text we do not control (a server or
// proxy echoing what it was sent, a future pgx message).
type dbScrubber struct {
	secrets []string
}

func newDBScrubber(cfg *pgxpool.Config) *dbScrubber {
	s := &dbScrubber{}
	add := func(v string) {
		if v == "" {
			return
		}
		userinfo := strings.TrimPrefix(url.UserPassword("u", v).String(), "u:")
		for _, f := range []string{v, url.QueryEscape(v), url.PathEscape(v), userinfo} {
			if !slices.Contains(s.secrets, f) {
				s.secrets = append(s.secrets, f)
			}
		}
	}
	// The whole DSN first, so that it is replaced as one piece.
	add(cfg.ConnString())
	add(cfg.ConnConfig.Password)
	return s
}

func (s *dbScrubber) scrub(text string) string {
	for _, v := range s.secrets {
		text = strings.ReplaceAll(text, v, "[REDACTED]")
	}
	return text
}

// wrap returns err with op in front and secrets removed. The result keeps
// errors.Is (for context.DeadlineExceeded and the like) but deliberately not
// Unwrap, so no caller can print the original text by unwrapping.
func (s *dbScrubber) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &dbScrubbedError{msg: s.scrub(op + ": " + err.Error()), err: err}
}

type dbScrubbedError struct {
	msg string
	err error
}

func (e *dbScrubbedError) Error() string { return e.msg }

func (e *dbScrubbedError) Is(target error) bool { return errors.Is(e.err, target) }
