package testserver

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster owned by one test: its own data
// directory, a free loopback port and a unix socket inside its directory, so
// it never meets a system cluster.
//
// Authentication: the superuser "postgres" is trusted over the unix socket
// and over TCP, so tests can build state without passwords; every other role
// must give its password (scram-sha-256) over TCP, which is how the exporter
// connects in these tests and what makes a wrong password fail.
type Postgres struct {
	Port      int
	Host      string // 127.0.0.1
	SocketDir string // the -k directory; also the parent of the data directory
	DataDir   string

	bin    string
	dir    string
	cred   *syscall.Credential // nil when the test does not run as root
	uid    int
	gid    int
	cmd    *exec.Cmd
	exited chan error // receives the postmaster's exit; Stop waits on it
	frozen []int
	log    string
	t      testing.TB
}

// pgBinDirs lists Debian's versioned binary directory, newest first. The
// binaries are not on PATH there.
func pgBinDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	return dirs
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// StartPostgres runs initdb into a fresh directory and starts the server. It
// is stopped and its directory removed when the test ends. Start-up costs
// about 1.5 s, so tests that leave the server running should share one and
// isolate themselves with CreateDatabase.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	initdb := LookPath(t, "initdb", pgBinDirs()...)
	p := &Postgres{bin: filepath.Dir(initdb), Host: "127.0.0.1", t: t}
	LookPath(t, "postgres", p.bin)

	// postgres refuses to run as root. As root, run it as the Debian package's
	// postgres user, in a directory under /tmp that user can reach:
	// t.TempDir's parents are private to root.
	base := os.TempDir()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("running as root needs the postgres user (from the postgresql package): %v", err)
			}
			t.Skipf("running as root needs the postgres user (install postgresql): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.uid, p.gid = uid, gid
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "dramatiq-pg-")
	if err != nil {
		t.Fatalf("postgres temp dir: %v", err)
	}
	p.dir = dir
	t.Cleanup(func() {
		p.Stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if p.cred != nil {
		if err := os.Chown(dir, p.uid, p.gid); err != nil {
			t.Fatalf("chown %s: %v", dir, err)
		}
	}
	p.SocketDir = dir
	p.DataDir = filepath.Join(dir, "data")
	p.log = filepath.Join(dir, "postgres.log")

	out, err := p.command(initdb, "-D", p.DataDir, "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba := strings.Join([]string{
		"local all all trust",
		"local replication all trust",
		"host all postgres 127.0.0.1/32 trust",
		"host all all 127.0.0.1/32 scram-sha-256",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatalf("write pg_hba.conf: %v", err)
	}
	if p.cred != nil {
		if err := os.Chown(filepath.Join(p.DataDir, "pg_hba.conf"), p.uid, p.gid); err != nil {
			t.Fatalf("chown pg_hba.conf: %v", err)
		}
	}
	p.Port = FreePort(t)
	p.Start()
	return p
}

// command builds a command that runs as the unprivileged owner of the data
// directory. Credentials are set on the child directly (the effect of
// `runuser -u postgres --`), so the pid we hold is the postmaster's own and
// Stop signals the right process.
func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: p.cred,
		// If the test binary dies without its cleanups, take the server down
		// with it instead of leaving a postmaster behind. SIGQUIT is
		// PostgreSQL's immediate shutdown.
		Pdeathsig: syscall.SIGQUIT,
	}
	return cmd
}

// Start starts the server (again) on the same port and data directory and
// waits until it accepts connections.
func (p *Postgres) Start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatalf("postgres already running")
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("postgres log: %v", err)
	}
	defer logf.Close()
	p.cmd = p.command(filepath.Join(p.bin, "postgres"),
		"-D", p.DataDir,
		"-p", strconv.Itoa(p.Port),
		"-k", p.SocketDir,
		"-c", "listen_addresses="+p.Host,
		"-c", "max_connections=40",
		"-c", "shared_buffers=16MB",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "autovacuum=off",
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning",
		"-c", "wal_level=replica",
		"-c", "max_wal_senders=4",
		"-c", "hot_standby=on",
	)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		p.cmd = nil
		p.t.Fatalf("start postgres: %v", err)
	}
	exited := make(chan error, 1)
	go func(c *exec.Cmd) { exited <- c.Wait() }(p.cmd)
	p.waitReady(exited)
	// Keep the reaper: Stop waits on the same channel.
	p.exited = exited
}

func (p *Postgres) waitReady(exited chan error) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			p.cmd = nil
			p.t.Fatalf("postgres exited during start-up: %v\n%s", err, p.LogTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, p.AdminDSN())
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("postgres did not accept connections: %v\n%s", lastErr, p.LogTail())
}

// Stop shuts the server down (fast shutdown: sessions are terminated) and
// waits for it to exit. It is safe to call twice.
func (p *Postgres) Stop() {
	if p.cmd == nil {
		return
	}
	// A frozen server cannot shut down.
	for _, pid := range p.frozen {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	p.frozen = nil
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	p.cmd = nil
}

// Restart stops the server and starts it on the same port with the same data.
func (p *Postgres) Restart() {
	p.t.Helper()
	p.Stop()
	p.Start()
}

// Freeze stops the postmaster and every backend with SIGSTOP: the kernel
// still accepts connections and queues what is sent, but nothing answers, the
// way a hung host behaves. Backends call setsid(), so signalling the
// postmaster's process group would miss them; they are found by parent pid.
func (p *Postgres) Freeze() {
	p.t.Helper()
	p.frozen = append([]int{p.cmd.Process.Pid}, childPids(p.cmd.Process.Pid)...)
	for _, pid := range p.frozen {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.t.Fatalf("SIGSTOP %d: %v", pid, err)
		}
	}
}

// Thaw resumes a frozen server.
func (p *Postgres) Thaw() {
	p.t.Helper()
	for _, pid := range p.frozen {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.t.Fatalf("SIGCONT %d: %v", pid, err)
		}
	}
	p.frozen = nil
}

// childPids lists the processes whose parent is ppid, from /proc.
func childPids(ppid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name in parentheses may hold spaces; fields resume
		// after the last ')': state, then ppid.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// LogTail returns the end of the server log, for failure messages.
func (p *Postgres) LogTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// AdminDSN connects as the superuser over the unix socket to database db
// ("postgres" when empty).
func (p *Postgres) AdminDSN(db ...string) string {
	name := "postgres"
	if len(db) > 0 && db[0] != "" {
		name = db[0]
	}
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", p.SocketDir, p.Port, name)
}

// URL is a postgres:// URL that logs in over TCP as user with password (none
// when empty) to database db.
func (p *Postgres) URL(userName, password, db string) string {
	u := url.URL{Scheme: "postgres", Host: fmt.Sprintf("%s:%d", p.Host, p.Port), Path: "/" + db, RawQuery: "sslmode=disable"}
	if password != "" {
		u.User = url.UserPassword(userName, password)
	} else {
		u.User = url.User(userName)
	}
	return u.String()
}

// Connect opens a superuser connection to db that is closed when t ends.
func (p *Postgres) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.AdminDSN(db))
	if err != nil {
		t.Fatalf("connect to %s: %v", db, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// Exec runs statements as the superuser in database db.
func (p *Postgres) Exec(t testing.TB, db string, sql ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.AdminDSN(db))
	if err != nil {
		t.Fatalf("connect to %s: %v", db, err)
	}
	defer c.Close(ctx)
	for _, s := range sql {
		if _, err := c.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// CreateDatabase creates an empty database. Tests that share one server use
// a database each, so that counts per database do not see each other.
func (p *Postgres) CreateDatabase(t testing.TB, name string) {
	t.Helper()
	p.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// CreateRole creates a login role with a password, granted the given roles
// (for example "pg_monitor"), and returns a URL that logs in as it to db.
func (p *Postgres) CreateRole(t testing.TB, name, password, db string, grants ...string) string {
	t.Helper()
	ident := pgx.Identifier{name}.Sanitize()
	stmts := []string{fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", ident, quoteLiteral(password))}
	for _, g := range grants {
		stmts = append(stmts, fmt.Sprintf("GRANT %s TO %s", pgx.Identifier{g}.Sanitize(), ident))
	}
	p.Exec(t, "postgres", stmts...)
	return p.URL(name, password, db)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// StartReplica clones p with pg_basebackup and starts the copy as a streaming
// hot standby on its own port. The replica is stopped when t ends.
func (p *Postgres) StartReplica(t testing.TB) *Postgres {
	t.Helper()
	basebackup := LookPath(t, "pg_basebackup", p.bin)
	r := &Postgres{bin: p.bin, Host: p.Host, cred: p.cred, uid: p.uid, gid: p.gid, t: t}
	base := os.TempDir()
	if r.cred != nil {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "dramatiq-pg-replica-")
	if err != nil {
		t.Fatalf("replica temp dir: %v", err)
	}
	r.dir = dir
	t.Cleanup(func() {
		r.Stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if r.cred != nil {
		if err := os.Chown(dir, r.uid, r.gid); err != nil {
			t.Fatalf("chown %s: %v", dir, err)
		}
	}
	r.SocketDir = dir
	r.DataDir = filepath.Join(dir, "data")
	r.log = filepath.Join(dir, "postgres.log")
	// -R writes standby.signal and primary_conninfo (over the primary's socket).
	out, err := r.command(basebackup, "-D", r.DataDir, "-h", p.SocketDir, "-p", strconv.Itoa(p.Port),
		"-U", "postgres", "-R", "-X", "stream", "--no-sync", "-c", "fast").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	r.Port = FreePort(t)
	r.Start()
	return r
}
