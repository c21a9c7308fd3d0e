package testserver

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The server must come up as a non-root user, refuse a wrong password over
// TCP, keep its data across Restart, and stream to a replica.
func TestPostgres(t *testing.T) {
	p := StartPostgres(t)
	p.CreateDatabase(t, "app")
	p.Exec(t, "app", "CREATE TABLE kept (x int)", "INSERT INTO kept VALUES (42)")
	good := p.CreateRole(t, "alice", "s3cret'pw", "app")
	bad := p.URL("alice", "wrong", "app")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, good)
	if err != nil {
		t.Fatalf("connect with the right password: %v", err)
	}
	var owner string
	if err := c.QueryRow(ctx, "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'postgres'").Scan(&owner); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	if owner != "postgres" {
		t.Errorf("bootstrap superuser = %q, want postgres", owner)
	}
	if _, err := pgx.Connect(ctx, bad); err == nil {
		t.Fatal("a wrong password was accepted")
	}

	p.Restart()
	a := p.Connect(t, "app")
	var x int
	if err := a.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Fatalf("data after restart: %d %v", x, err)
	}

	r := p.StartReplica(t)
	rc := r.Connect(t, "app")
	var inRecovery bool
	if err := rc.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("replica in recovery: %v %v", inRecovery, err)
	}

	dir := p.SocketDir
	p.Stop()
	p.Stop()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the directory should live until cleanup: %v", err)
	}
}
