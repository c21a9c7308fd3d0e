package testserver

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// A port that another redis-server holds: our child cannot bind it and
// exits, while PINGs on the port are answered by the other server. start
// must report that, not hand the other server to the test.
func TestRedisStartOnATakenPort(t *testing.T) {
	other := StartRedis(t)
	if err := other.Admin.Set(context.Background(), "owner", "other", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := &Redis{bin: other.bin, dir: t.TempDir(), t: t, Port: other.Port, Addr: other.Addr}
	err := r.start()
	if err == nil {
		r.Stop()
		t.Fatalf("start on %s, held by another redis-server, succeeded", other.Addr)
	}
	t.Logf("start on a taken port: %v", err)
	if !strings.Contains(err.Error(), "exited during start-up") && !strings.Contains(err.Error(), "answered by another redis-server") {
		t.Fatalf("error does not say what happened: %v", err)
	}
	if v, err := other.Admin.Get(context.Background(), "owner").Result(); err != nil || v != "other" {
		t.Fatalf("the other server was disturbed: %q %v", v, err)
	}
}

// A child that exits at once is noticed as such, with its log, instead of
// the readiness loop polling a port nobody will open.
func TestRedisStartNoticesTheChildExiting(t *testing.T) {
	r := &Redis{bin: LookPath(t, "redis-server"), dir: t.TempDir(), t: t, Port: FreePort(t), extra: []string{"--no-such-directive", "x"}}
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.Port)
	err := r.start()
	if err == nil {
		r.Stop()
		t.Fatal("redis-server with a bad directive started")
	}
	if !strings.Contains(err.Error(), "exited during start-up") {
		t.Fatalf("error = %v, want the child's exit", err)
	}
}

// The server StartRedis hands out is its own child.
func TestStartRedisIsOurs(t *testing.T) {
	r := StartRedis(t, "--requirepass", "s3cret")
	info, err := r.Admin.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := infoField(info, "process_id"); got != strconv.Itoa(r.cmd.Process.Pid) {
		t.Fatalf("process_id %s, child pid %d", got, r.cmd.Process.Pid)
	}
	r.Restart()
	if err := r.Admin.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}
