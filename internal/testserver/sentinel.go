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

// SentinelGroup is a Redis master, one replica and three sentinels that
// monitor them under one master name, as production Sentinel setups run:
// killing the master makes the sentinels promote the replica.
type SentinelGroup struct {
	Name      string
	Master    *Redis
	Replica   *Redis
	Sentinels []*Sentinel
}

// Sentinel is one redis-server running in sentinel mode.
type Sentinel struct {
	Addr   string
	Client *redis.SentinelClient
	cmd    *exec.Cmd
}

// Addrs lists the sentinels' host:port addresses.
func (g *SentinelGroup) Addrs() []string {
	var out []string
	for _, s := range g.Sentinels {
		out = append(out, s.Addr)
	}
	return out
}

// StartSentinelGroup starts the master, the replica and three sentinels
// (quorum 2, master down after 1 s), and returns once the sentinels agree on
// the master and see the replica and each other.
func StartSentinelGroup(t testing.TB, name string) *SentinelGroup {
	t.Helper()
	return StartSentinelGroupAuth(t, name, "")
}

// StartSentinelGroupAuth is StartSentinelGroup with sentinels that require
// password (requirepass; they also use it with each other).
func StartSentinelGroupAuth(t testing.TB, name, password string) *SentinelGroup {
	t.Helper()
	g := &SentinelGroup{Name: name}
	g.Master = StartRedis(t)
	g.Replica = StartRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(g.Master.Port))
	for i := 0; i < 3; i++ {
		g.Sentinels = append(g.Sentinels, startSentinel(t, name, g.Master.Port, password, nil))
	}
	g.waitSettled(t, g.Master.Addr, 30*time.Second)
	return g
}

// StartSentinelGroupTLS is StartSentinelGroup with every server, the
// sentinels included, listening on TLS only, as o says: replication, the
// sentinels' links to the servers and to each other all speak TLS, each
// presenting a client certificate of o.CA when o.Mutual asks for one.
// Sentinel announces 127.0.0.1, so o.Server must name that address.
func StartSentinelGroupTLS(t testing.TB, name string, o RedisTLS) *SentinelGroup {
	t.Helper()
	peer := o.CA.Client("sentinel-group-peer")
	asClient := []string{"--tls-replication", "yes", "--tls-client-cert-file", peer.CertFile, "--tls-client-key-file", peer.KeyFile}
	g := &SentinelGroup{Name: name}
	g.Master = StartRedisTLS(t, o, asClient...)
	g.Replica = StartRedisTLS(t, o, append(asClient, "--replicaof", "127.0.0.1", strconv.Itoa(g.Master.Port))...)
	for i := 0; i < 3; i++ {
		g.Sentinels = append(g.Sentinels, startSentinel(t, name, g.Master.Port, "", &sentinelTLS{RedisTLS: o, peer: peer}))
	}
	g.waitSettled(t, g.Master.Addr, 30*time.Second)
	return g
}

type sentinelTLS struct {
	RedisTLS
	peer KeyPair // what the sentinel presents to the servers and to its peers
}

func startSentinel(t testing.TB, name string, masterPort int, password string, o *sentinelTLS) *Sentinel {
	t.Helper()
	bin := LookPath(t, "redis-server")
	port := FreePort(t)
	dir := t.TempDir()
	// Sentinel rewrites its configuration file, so it must own a writable one.
	conf := filepath.Join(dir, "sentinel.conf")
	listen := []string{"port " + strconv.Itoa(port)}
	var tlsConfig *tls.Config
	if o != nil {
		auth := "no"
		if o.Mutual {
			auth = "yes"
		}
		listen = []string{"port 0", "tls-port " + strconv.Itoa(port),
			"tls-cert-file " + o.Server.CertFile, "tls-key-file " + o.Server.KeyFile,
			"tls-ca-cert-file " + o.CA.File, "tls-auth-clients " + auth, "tls-replication yes",
			"tls-client-cert-file " + o.peer.CertFile, "tls-client-key-file " + o.peer.KeyFile}
		tlsConfig = o.CA.ClientConfig(o.Admin, "127.0.0.1")
	}
	text := strings.Join(append(listen,
		"bind 127.0.0.1",
		"dir "+dir,
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", name, masterPort),
		fmt.Sprintf("sentinel down-after-milliseconds %s 1000", name),
		fmt.Sprintf("sentinel failover-timeout %s 5000", name),
		fmt.Sprintf("sentinel parallel-syncs %s 1", name),
		"",
	), "\n")
	if password != "" {
		text += "requirepass " + password + "\n"
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Sentinel{Addr: "127.0.0.1:" + strconv.Itoa(port)}
	s.cmd = exec.Command(bin, conf, "--sentinel")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	s.Client = redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialerRetries: 1, Password: password, TLSConfig: tlsConfig})
	t.Cleanup(func() {
		s.Client.Close()
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := s.Client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel on %s did not answer PING: %v", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// MasterAddr is the master every sentinel names now, or "" while they
// disagree or cannot say.
func (g *SentinelGroup) MasterAddr() string {
	addr := ""
	for _, s := range g.Sentinels {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		v, err := s.Client.GetMasterAddrByName(ctx, g.Name).Result()
		cancel()
		if err != nil || len(v) != 2 {
			return ""
		}
		a := v[0] + ":" + v[1]
		if addr != "" && a != addr {
			return ""
		}
		addr = a
	}
	return addr
}

// waitSettled waits until every sentinel names master, knows the two other
// sentinels and sees a replica in sync: only then can a failover happen.
func (g *SentinelGroup) waitSettled(t testing.TB, master string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	why := ""
	for time.Now().Before(deadline) {
		why = g.unsettled(master)
		if why == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sentinels did not settle on %s within %s: %s", master, timeout, why)
}

func (g *SentinelGroup) unsettled(master string) string {
	if a := g.MasterAddr(); a != master {
		return "master is " + a
	}
	for _, s := range g.Sentinels {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m, err := s.Client.Master(ctx, g.Name).Result()
		if err != nil {
			cancel()
			return err.Error()
		}
		if m["num-other-sentinels"] != "2" || m["num-slaves"] != "1" {
			cancel()
			return fmt.Sprintf("%s: other sentinels %s, replicas %s", s.Addr, m["num-other-sentinels"], m["num-slaves"])
		}
		reps, err := s.Client.Replicas(ctx, g.Name).Result()
		cancel()
		if err != nil || len(reps) != 1 || reps[0]["master-link-status"] != "ok" {
			return fmt.Sprintf("%s: replica not in sync: %v %v", s.Addr, reps, err)
		}
	}
	return ""
}

// WaitFailover waits until the sentinels name a master other than old.
func (g *SentinelGroup) WaitFailover(t testing.TB, old string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if a := g.MasterAddr(); a != "" && a != old {
			return a
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no failover away from %s within %s", old, timeout)
	return ""
}

// Freeze stops the sentinel with SIGSTOP: connections are accepted by the
// kernel but nothing answers, the way a hung sentinel behaves. Thaw (or the
// test's end, which kills it) resumes it.
func (s *Sentinel) Freeze() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen sentinel.
func (s *Sentinel) Thaw() error { return s.cmd.Process.Signal(syscall.SIGCONT) }
