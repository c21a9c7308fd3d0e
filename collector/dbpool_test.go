package collector

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestNewDatabasePool(t *testing.T) {
	t.Run("unparseable DSNs do not echo the password", func(t *testing.T) {
		for _, dsn := range []string{
			"postgres://user:Hunter2-secret@db.example:notaport/app",
			"postgres://user:Hunter2-secret@[::1/app",
			"host=db password=Hunter2-secret sslmode=sometimes",
			"host=db password='Hunter2-secret",
		} {
			_, err := NewDatabasePool(context.Background(), dsn, "", nil)
			if err == nil {
				t.Errorf("%q: no error", dsn)
				continue
			}
			dbAssertNoSecret(t, err.Error(), dsn, "Hunter2-secret", "Hunter2")
		}
	})

	t.Run("settings", func(t *testing.T) {
		pool, err := NewDatabasePool(context.Background(), "host=db.example user=u password=inline dbname=app", "from-file", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		cfg := pool.Config()
		if cfg.ConnConfig.Password != "from-file" {
			t.Errorf("password file did not replace the DSN's password")
		}
		if got := cfg.ConnConfig.RuntimeParams["application_name"]; got != DatabaseApplicationName {
			t.Errorf("application_name = %q", got)
		}
		if cfg.MaxConns != 3 || cfg.MinConns != 0 {
			t.Errorf("pool bounds = %d..%d, want 0..3", cfg.MinConns, cfg.MaxConns)
		}
		if cfg.ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeSimpleProtocol {
			t.Errorf("exec mode = %v", cfg.ConnConfig.DefaultQueryExecMode)
		}
		if st := pool.Stat(); st.TotalConns() != 0 {
			t.Errorf("the pool connected at start-up: %d conns", st.TotalConns())
		}

		own, err := NewDatabasePool(context.Background(), "postgres://u@db.example/app?application_name=worker-health", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		if got := own.Config().ConnConfig.RuntimeParams["application_name"]; got != "worker-health" {
			t.Errorf("a DSN's application_name was replaced: %q", got)
		}
	})

	t.Run("scrubber", func(t *testing.T) {
		pool, err := NewDatabasePool(context.Background(), "postgres://u:p%40ss%2Fw0rd@db.example/app", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		s := newDBScrubber(pool.Config())
		err = s.wrap("op", fmt.Errorf("server said p@ss/w0rd and p%%40ss%%2Fw0rd: %w", context.DeadlineExceeded))
		dbAssertNoSecret(t, err.Error(), "p@ss/w0rd", "p%40ss%2Fw0rd")
		if !strings.HasPrefix(err.Error(), "op: server said [REDACTED]") {
			t.Errorf("scrubbed text = %q", err.Error())
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("errors.Is lost the deadline")
		}
	})

}

func dbAssertNoSecret(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("secret %q appears in:\n%s", s, text)
		}
	}
}
