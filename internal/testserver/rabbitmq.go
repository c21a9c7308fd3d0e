package testserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RabbitMQServer is where Debian's rabbitmq-server package puts the node's
// start script (/usr/sbin/rabbitmq-server is a wrapper that switches to the
// rabbitmq user, which a private node must not do).
const RabbitMQServer = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// RabbitMQ is a private RabbitMQ node: its own node name, data and log
// directories, AMQP, management, distribution and epmd ports, all on
// loopback. Its management API refreshes statistics every 500 ms (the
// default, 5 s, would make every test wait).
type RabbitMQ struct {
	Node                                   string
	AMQPPort, MgmtPort, DistPort, EpmdPort int
	// PromPort serves rabbitmq_prometheus (/metrics, /metrics/detailed),
	// what a user would scrape instead of this exporter.
	PromPort int
	// AdminUser has the administrator tag and every right on "/"; the
	// tests build state through it, never the code under test.
	AdminUser, AdminPassword string

	dir  string
	log  *LogBuffer
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	epmd *exec.Cmd
	// stdin is the node's input, held open while it runs.
	stdin io.WriteCloser
}

// PromURL is rabbitmq_prometheus's base URL.
func (r *RabbitMQ) PromURL() string { return "http://127.0.0.1:" + strconv.Itoa(r.PromPort) }

// MgmtURL is the management API's base URL, without credentials.
func (r *RabbitMQ) MgmtURL() string { return "http://127.0.0.1:" + strconv.Itoa(r.MgmtPort) }

// AMQPURL is the AMQP URL for user/password on vhost ("" is "/").
func (r *RabbitMQ) AMQPURL(user, password, vhost string) string {
	u := url.URL{Scheme: "amqp", User: url.UserPassword(user, password), Host: "127.0.0.1:" + strconv.Itoa(r.AMQPPort), Path: "/" + vhost}
	if vhost == "" || vhost == "/" {
		// Path is the decoded form: "/" + "/", escaped as %2F.
		u.Path, u.RawPath = "//", "/%2F"
	} else {
		u.RawPath = "/" + url.PathEscape(vhost)
	}
	return u.String()
}

// AdminAMQPURL is AMQPURL for the admin user.
func (r *RabbitMQ) AdminAMQPURL(vhost string) string {
	return r.AMQPURL(r.AdminUser, r.AdminPassword, vhost)
}

// HaveRabbitMQ reports whether the package is installed.
func HaveRabbitMQ() bool {
	_, err := os.Stat(RabbitMQServer)
	return err == nil
}

// StartRabbitMQ starts a node owned by t and stops it when t ends. A start
// costs about 9 s: a package whose tests all can share one node should use
// StartRabbitMQNode from TestMain instead.
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	LookPath(t, filepath.Base(RabbitMQServer), filepath.Dir(RabbitMQServer))
	r, err := StartRabbitMQNode(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// StartRabbitMQNode starts a node whose files live under dir. It takes no
// testing.TB so that TestMain can share one node between a binary's tests.
// The caller must Close it.
func StartRabbitMQNode(dir string) (*RabbitMQ, error) {
	if !HaveRabbitMQ() {
		return nil, fmt.Errorf("%s not found: install rabbitmq-server (make deps)", RabbitMQServer)
	}
	r := &RabbitMQ{dir: dir, AdminUser: "admin", AdminPassword: randomHex(12), log: &LogBuffer{}}
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	r.AMQPPort, r.MgmtPort, r.DistPort, r.EpmdPort, r.PromPort = ports[0], ports[1], ports[2], ports[3], ports[4]
	r.Node = "dx" + randomHex(4) + "@localhost"
	conf := strings.Join([]string{
		"listeners.tcp.default = 127.0.0.1:" + strconv.Itoa(r.AMQPPort),
		"management.tcp.ip = 127.0.0.1",
		"management.tcp.port = " + strconv.Itoa(r.MgmtPort),
		"prometheus.tcp.ip = 127.0.0.1",
		"prometheus.tcp.port = " + strconv.Itoa(r.PromPort),
		"loopback_users = none",
		"collect_statistics_interval = 500",
		"default_user = " + r.AdminUser,
		"default_pass = " + r.AdminPassword,
		"default_user_tags.administrator = true",
		"log.console = false",
		"log.file.level = info",
		"",
	}, "\n")
	for name, content := range map[string]string{
		"rabbit.conf":       conf,
		"enabled_plugins":   "[rabbitmq_management,rabbitmq_prometheus].\n",
		"rabbitmq-env.conf": "",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	if err := r.startEPMD(); err != nil {
		return nil, err
	}
	if err := r.Start(); err != nil {
		r.stopEPMD()
		return nil, err
	}
	return r, nil
}

// startEPMD runs epmd ourselves, on the node's private port, as our child.
// A node that finds no epmd starts one with -daemon, which outlives the node
// and whose pid we would not know; one we started we stop by its pid.
func (r *RabbitMQ) startEPMD() error {
	bin, err := exec.LookPath("epmd")
	if err != nil {
		return fmt.Errorf("epmd (Erlang) not found: %w", err)
	}
	cmd := exec.Command(bin, "-port", strconv.Itoa(r.EpmdPort), "-address", "127.0.0.1")
	cmd.Env = append(os.Environ(), "ERL_EPMD_ADDRESS=127.0.0.1")
	cmd.Stdout, cmd.Stderr = r.log, r.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.epmd = cmd
	return nil
}

func (r *RabbitMQ) stopEPMD() {
	if r.epmd != nil {
		_ = r.epmd.Process.Kill()
		_ = r.epmd.Wait()
		r.epmd = nil
	}
}

func (r *RabbitMQ) env() []string {
	d := r.dir
	return append(os.Environ(),
		"RABBITMQ_NODENAME="+r.Node,
		"RABBITMQ_CONFIG_FILE="+filepath.Join(d, "rabbit"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(d, "rabbitmq-env.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(d, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(d, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(d, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(d, "log"),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.DistPort),
		"ERL_EPMD_PORT="+strconv.Itoa(r.EpmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"HOME="+d,
		// The script then execs the node instead of running it as a child
		// and waiting: the node keeps the pid we started, so Pdeathsig
		// takes it down with a killed test binary, and SIGTERM reaches it
		// directly (Erlang stops cleanly on it).
		"RABBITMQ_ALLOW_INPUT=true",
		// The distribution port would listen on every interface.
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	)
}

// Start (re)starts the node on its ports and data directory, so a
// restarted node keeps its users, vhosts and durable queues, and waits
// until the management API answers as the admin user.
func (r *RabbitMQ) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("rabbitmq: already running")
	}
	cmd := exec.Command(RabbitMQServer)
	cmd.Env = r.env()
	cmd.Dir = r.dir
	cmd.Stdout, cmd.Stderr = r.log, r.log
	// With input allowed, the node stops when its stdin ends: hold a pipe
	// open for as long as the node should run (a dead test binary closes
	// it too).
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	// With RABBITMQ_ALLOW_INPUT the script execs erl, which execs
	// beam.smp: the pid is the node's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	r.cmd, r.done, r.stdin = cmd, done, stdin

	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-done:
			r.cmd = nil
			return fmt.Errorf("rabbitmq-server exited during start-up: %v\n%s", err, r.tail())
		default:
		}
		var who struct {
			Name string `json:"name"`
		}
		if err := r.api(context.Background(), http.MethodGet, "/api/whoami", nil, &who); err == nil {
			// Only our node knows our admin password; to make sure, the
			// node name must be ours too.
			var ov struct {
				Node string `json:"node"`
			}
			if err := r.api(context.Background(), http.MethodGet, "/api/overview", nil, &ov); err == nil && ov.Node == r.Node {
				return nil
			} else if err == nil {
				r.mu.Unlock()
				r.kill()
				r.mu.Lock()
				return fmt.Errorf("port %d is answered by node %s, not ours (%s)", r.MgmtPort, ov.Node, r.Node)
			}
		}
		if time.Now().After(deadline) {
			r.mu.Unlock()
			r.kill()
			r.mu.Lock()
			return fmt.Errorf("rabbitmq management API on %s did not answer in time\n%s", r.MgmtURL(), r.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Stop shuts the node down cleanly (SIGTERM, which Erlang turns into
// init:stop), killing it if it takes more than 30 s. epmd keeps running
// so that Start can follow.
func (r *RabbitMQ) Stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	// Helpers the node started (erl_child_setup, inet_gethost) share its
	// process group; none may outlive it.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

func (r *RabbitMQ) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// CPUTime is the CPU (user + system) the node has used so far: beam.smp
// and its helper children, from /proc, for measuring
// what a read costs RabbitMQ.
func (r *RabbitMQ) CPUTime() (time.Duration, error) {
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if cmd == nil {
		return 0, errors.New("rabbitmq: not running")
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	pids := []string{pid}
	if kids, err := os.ReadFile("/proc/" + pid + "/task/" + pid + "/children"); err == nil {
		pids = append(pids, strings.Fields(string(kids))...)
	}
	var total time.Duration
	for _, p := range pids {
		data, err := os.ReadFile("/proc/" + p + "/stat")
		if err != nil {
			return 0, err
		}
		// utime and stime are the 14th and 15th fields; the command name
		// (2nd) is in parentheses and may hold spaces.
		i := bytes.LastIndexByte(data, ')')
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 13 {
			return 0, errors.New("short /proc stat")
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100
	}
	return total, nil
}

// Close stops the node and its epmd.
func (r *RabbitMQ) Close() {
	r.Stop()
	r.stopEPMD()
}

// Log is what the node printed (its log file is under the temp dir).
func (r *RabbitMQ) Log() string { return r.log.String() + r.tail() }

func (r *RabbitMQ) tail() string {
	files, _ := filepath.Glob(filepath.Join(r.dir, "log", "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(f), data)
	}
	return b.String()
}

// api calls the management API as the admin user. The tests may write
// through it; the exporter never does.
func (r *RabbitMQ) api(ctx context.Context, method, path string, body, out any) error {
	return r.APIAs(ctx, r.AdminUser, r.AdminPassword, method, path, body, out)
}

// APIAs calls the management API as user. path is already escaped.
func (r *RabbitMQ) APIAs(ctx context.Context, user, password, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.MgmtURL()+path, rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// PutVhost creates vhost.
func (r *RabbitMQ) PutVhost(t testing.TB, vhost string) {
	t.Helper()
	if err := r.api(context.Background(), http.MethodPut, "/api/vhosts/"+url.PathEscape(vhost), map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	// The admin user is given rights on every vhost the tests make, so
	// that it can build state there.
	r.SetPermissions(t, vhost, r.AdminUser, ".*", ".*", ".*")
}

// DeleteVhost removes vhost and everything in it.
func (r *RabbitMQ) DeleteVhost(t testing.TB, vhost string) {
	t.Helper()
	if err := r.api(context.Background(), http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), nil, nil); err != nil {
		t.Fatal(err)
	}
}

// PutUser creates (or replaces) a user with a password and tags
// ("monitoring", "administrator", or "" for none).
func (r *RabbitMQ) PutUser(t testing.TB, user, password, tags string) {
	t.Helper()
	if err := r.api(context.Background(), http.MethodPut, "/api/users/"+url.PathEscape(user), map[string]any{"password": password, "tags": tags}, nil); err != nil {
		t.Fatal(err)
	}
}

// SetPermissions gives user the configure, write and read patterns on
// vhost ("" grants nothing).
func (r *RabbitMQ) SetPermissions(t testing.TB, vhost, user, configure, write, read string) {
	t.Helper()
	p := "/api/permissions/" + url.PathEscape(vhost) + "/" + url.PathEscape(user)
	if err := r.api(context.Background(), http.MethodPut, p, map[string]any{"configure": configure, "write": write, "read": read}, nil); err != nil {
		t.Fatal(err)
	}
}

// DeclareQueue declares a durable queue with arguments through the
// management API, as something other than Dramatiq would.
func (r *RabbitMQ) DeclareQueue(t testing.TB, vhost, name string, arguments map[string]any) {
	t.Helper()
	p := "/api/queues/" + url.PathEscape(vhost) + "/" + url.PathEscape(name)
	if arguments == nil {
		arguments = map[string]any{}
	}
	if err := r.api(context.Background(), http.MethodPut, p, map[string]any{"durable": true, "arguments": arguments}, nil); err != nil {
		t.Fatal(err)
	}
}

// Publish publishes n copies of body to a queue through the default
// exchange (management API; fine for tests, slow for bulk).
func (r *RabbitMQ) Publish(t testing.TB, vhost, queue, body string, n int) {
	t.Helper()
	p := "/api/exchanges/" + url.PathEscape(vhost) + "/amq.default/publish"
	for range n {
		var out struct {
			Routed bool `json:"routed"`
		}
		err := r.api(context.Background(), http.MethodPost, p, map[string]any{
			"properties": map[string]any{"delivery_mode": 2}, "routing_key": queue, "payload": body, "payload_encoding": "string",
		}, &out)
		if err != nil {
			t.Fatal(err)
		}
		if !out.Routed {
			t.Fatalf("publish to %q in %q: not routed", queue, vhost)
		}
	}
}

// DeleteQueue deletes a queue.
func (r *RabbitMQ) DeleteQueue(t testing.TB, vhost, name string) {
	t.Helper()
	p := "/api/queues/" + url.PathEscape(vhost) + "/" + url.PathEscape(name)
	if err := r.api(context.Background(), http.MethodDelete, p, nil, nil); err != nil {
		t.Fatal(err)
	}
}

// PathEscape escapes a vhost or queue name for a management API path
// ("/" is %2F).
func PathEscape(s string) string { return url.PathEscape(s) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePorts returns n distinct loopback ports that were free a moment ago
// (held open together, so no two are the same).
func freePorts(n int) ([]int, error) {
	var ports []int
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for range n {
		l, err := listenLoopback()
		if err != nil {
			return nil, err
		}
		closers = append(closers, l)
		_, p, _ := strings.Cut(l.Addr().String(), ":")
		port, _ := strconv.Atoi(p)
		ports = append(ports, port)
	}
	return ports, nil
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
