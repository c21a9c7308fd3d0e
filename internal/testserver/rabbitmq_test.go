package testserver

import (
	"context"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRabbitMQNode: a private node answers on its own ports, restarts with
// its users intact, and leaves neither the node nor epmd behind.
func TestRabbitMQNode(t *testing.T) {
	LookPath(t, "rabbitmq-server", "/usr/lib/rabbitmq/bin")
	r, err := StartRabbitMQNode(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.PutUser(t, "watcher", "pw", "monitoring")
	var who struct {
		Name string `json:"name"`
		Tags any    `json:"tags"`
	}
	if err := r.APIAs(context.Background(), "watcher", "pw", http.MethodGet, "/api/whoami", nil, &who); err != nil || who.Name != "watcher" {
		t.Fatalf("whoami as watcher: %+v, %v", who, err)
	}
	r.Stop()
	if err := r.APIAs(context.Background(), "watcher", "pw", http.MethodGet, "/api/whoami", nil, nil); err == nil {
		t.Fatal("the API still answers after Stop")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := r.APIAs(context.Background(), "watcher", "pw", http.MethodGet, "/api/whoami", nil, nil); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	r.Close()
	for _, p := range []int{r.EpmdPort, r.MgmtPort, r.AMQPPort} {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("port %d still listens after Close", p)
		}
	}
}

// The node is the process the helper started, so Pdeathsig can take it
// down with a killed test binary (a start script that ran the node as its
// child would leave it running).
func TestRabbitMQNodeIsOurChild(t *testing.T) {
	r := StartRabbitMQ(t)
	r.mu.Lock()
	pid := r.cmd.Process.Pid
	r.mu.Unlock()
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(comm)); got != "beam.smp" {
		t.Fatalf("pid %d is %q, not the node (beam.smp)", pid, got)
	}
	if cpu, err := r.CPUTime(); err != nil || cpu <= 0 {
		t.Errorf("CPUTime %v, %v", cpu, err)
	}
}
