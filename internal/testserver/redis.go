package testserver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func init() {
	// The readiness loop below dials before the server listens; go-redis
	// would log each refused dial to stderr.
	redis.SetLogger(quietLogger{})
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Redis is a redis-server owned by one test.
type Redis struct {
	Addr   string
	Port   int
	Admin  *redis.Client // full-privilege client for building state
	bin    string
	dir    string
	cmd    *exec.Cmd
	t      testing.TB
	paused bool
	extra  []string
}

// StartRedis starts redis-server on a free loopback port with no
// persistence. extra are appended to the command line.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	r := &Redis{bin: LookPath(t, "redis-server"), dir: t.TempDir(), t: t}
	r.Port = FreePort(t)
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.Port)
	r.extra = extra
	r.start()
	password := ""
	for i, a := range extra {
		if a == "--requirepass" && i+1 < len(extra) {
			password = extra[i+1]
		}
	}
	r.Admin = redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, Password: password})
	t.Cleanup(func() {
		r.Admin.Close()
		r.Stop()
	})
	return r
}

func (r *Redis) start() {
	r.t.Helper()
	args := append([]string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--enable-debug-command", "local",
	}, r.extra...)
	r.cmd = exec.Command(r.bin, args...)
	r.cmd.Stdout, r.cmd.Stderr = nil, nil
	// Pdeathsig: a test binary killed by -timeout takes its server along.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil || strings.HasPrefix(err.Error(), "NOAUTH") {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s did not answer PING: %v", r.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server. It is safe to call twice.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	if r.paused {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
		r.paused = false
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Restart starts the server again on the same port and options, empty.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	r.start()
}

// Freeze stops the process with SIGSTOP: connections are accepted by the
// kernel but nothing answers, the way a hung Redis behaves.
func (r *Redis) Freeze() {
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.t.Fatalf("SIGSTOP redis: %v", err)
	}
	r.paused = true
}

// Thaw resumes a frozen server.
func (r *Redis) Thaw() {
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.t.Fatalf("SIGCONT redis: %v", err)
	}
	r.paused = false
}

// URL is a redis:// URL for db 0 of this server.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// ReadOnlyUser creates an ACL user that may run read commands only (and the
// connection commands go-redis needs), with no access to KEYS, and returns a
// URL that logs in as it. It fails the test unless Redis answers OK, because
// redis-cli and some clients hide ACL SETUSER errors.
func (r *Redis) ReadOnlyUser(t testing.TB, name, password string) string {
	t.Helper()
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">" + password, "~*",
		"-@all", "+@read", "-keys", "+ping", "+hello", "+auth", "+info", "+select",
		"+client|setname", "+client|getname"}
	res, err := r.Admin.Do(context.Background(), args...).Result()
	if err != nil || res != "OK" {
		t.Fatalf("ACL SETUSER %s: %v %v", name, res, err)
	}
	return fmt.Sprintf("redis://%s:%s@%s/0", name, password, r.Addr)
}

// Env returns os.Environ with k=v added, for starting child processes.
func Env(kv ...string) []string { return append(os.Environ(), kv...) }
