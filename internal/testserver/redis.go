package testserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	exited chan error // receives the child's exit; Stop waits on it
	t      testing.TB
	paused bool
	extra  []string
	tls    *tls.Config // set for a TLS-only server
}

// startAttempts bounds how often StartRedis picks a new port: FreePort's
// port can be taken by another process before redis-server binds it.
const startAttempts = 3

// StartRedis starts redis-server on a free loopback port with no
// persistence. extra are appended to the command line.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	r := &Redis{bin: LookPath(t, "redis-server"), dir: t.TempDir(), t: t, extra: extra}
	var err error
	for range startAttempts {
		r.Port = FreePort(t)
		r.Addr = "127.0.0.1:" + strconv.Itoa(r.Port)
		if err = r.start(); err == nil {
			break
		}
		t.Logf("redis-server on %s: %v; trying another port", r.Addr, err)
	}
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	r.Admin = r.client()
	t.Cleanup(func() {
		r.Admin.Close()
		r.Stop()
	})
	return r
}

func (r *Redis) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, Password: r.password(), TLSConfig: r.tls})
}

func (r *Redis) password() string {
	for i, a := range r.extra {
		if a == "--requirepass" && i+1 < len(r.extra) {
			return r.extra[i+1]
		}
	}
	return ""
}

func (r *Redis) logFile() string { return filepath.Join(r.dir, "redis.log") }

// start runs redis-server on r.Port and waits until it answers. It fails if
// the child exits first (the port was taken, say), or if the server that
// answers on the port is not the child: a PING alone would be answered by
// whatever holds the port.
func (r *Redis) start() error {
	args := append([]string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--logfile", r.logFile(),
		"--enable-debug-command", "local",
	}, r.extra...)
	cmd := exec.Command(r.bin, args...)
	// Pdeathsig: a test binary killed by -timeout takes its server along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(format string, a ...any) error {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf(format+"\n%s", append(a, r.logTail())...)
	}

	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialerRetries: 1, Password: r.password(), TLSConfig: r.tls})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited during start-up: %v\n%s", err, r.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			pid := infoField(info, "process_id")
			if pid != strconv.Itoa(cmd.Process.Pid) {
				return fail("%s is answered by another redis-server (process_id %s), not by ours (pid %d)", r.Addr, pid, cmd.Process.Pid)
			}
			r.cmd, r.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			return fail("redis-server on %s did not answer: %v", r.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// infoField reads one "name:value" line of an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// logTail is the end of the server's log, for failure messages.
func (r *Redis) logTail() string {
	b, _ := os.ReadFile(r.logFile())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
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
	<-r.exited
	r.cmd = nil
}

// Restart starts the server again on the same port and options, empty.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		r.t.Fatalf("restart redis-server: %v", err)
	}
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

// Populate adds n string keys named prefix0, prefix1, … with DEBUG
// POPULATE: a large unrelated keyspace (a cache sharing the database) in
// a fraction of the time SETs would take. It may take seconds under load,
// longer than Admin's read timeout.
func (r *Redis) Populate(t testing.TB, n int, prefix string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, ReadTimeout: 2 * time.Minute})
	defer c.Close()
	if err := c.Do(context.Background(), "DEBUG", "POPULATE", n, prefix).Err(); err != nil {
		t.Fatalf("DEBUG POPULATE %d: %v", n, err)
	}
}

// CommandCalls reads how often the server ran cmd (lower case, as INFO
// commandstats names it) since it started or CONFIG RESETSTAT.
func (r *Redis) CommandCalls(t testing.TB, cmd string) int {
	t.Helper()
	info, err := r.Admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			if i := strings.IndexByte(rest, ','); i >= 0 {
				rest = rest[:i]
			}
			n, _ := strconv.Atoi(rest)
			return n
		}
	}
	return 0
}
