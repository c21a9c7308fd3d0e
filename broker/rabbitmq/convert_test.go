package rabbitmq

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// The conversion keeps presence: a count RabbitMQ left out stays absent,
// the Redis-only numbers are absent, members keep their roles and types.
func TestToModel(t *testing.T) {
	s := &Snapshot{Vhost: "v", RabbitMQQueues: 4, Ignored: 1, Queues: []Queue{{
		Name: "emails", Ready: Count{5, true}, InFlight: Count{0, true}, Delayed: Count{3, true}, DelayedHeld: Count{2, true},
		DeadLetters: Count{1, true}, Consumers: Count{2, true}, DelayConsumers: Count{2, true},
		Main: Member{Exists: true, Type: "classic"}, Delay: Member{Exists: true, Type: "quorum"},
		Problems: []string{"emails.XQ is missing"},
	}}}
	m := ToModel(s)
	q := m.Queues[0]
	if m.Broker != broker.RabbitMQ || m.Redis != nil || m.RabbitMQ.Vhost != "v" || m.RabbitMQ.Ignored != 1 {
		t.Fatalf("%+v", m)
	}
	if q.Ready != broker.Known(5) || q.InFlight != broker.Known(0) || q.DelayedHeld != broker.Known(2) || q.Redeliveries.OK {
		t.Errorf("%+v", q)
	}
	if q.Orphaned.OK || q.DeadLettered.OK || q.OldestAgeKnown {
		t.Errorf("Redis-only numbers present: %+v", q)
	}
	if len(q.Members) != 2 || q.Members[0] != (broker.Member{Role: "main", Type: "classic"}) || q.Members[1].Role != "delay" || q.Members[1].Type != "quorum" {
		t.Errorf("members %+v", q.Members)
	}
	if q.LayoutProblemCount != 1 {
		t.Errorf("problems %d", q.LayoutProblemCount)
	}
	many := make([]string, 16)
	if n := problemCount(append(many, "and 5 more")); n != 21 {
		t.Errorf("problemCount = %d, want 21", n)
	}
}

// Limit reports the first max queues and counts the rest.
func TestLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("[")
	for i := range 5 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"name":"q%d","messages_ready":1},{"name":"q%d.XQ","messages":0}`, i, i)
	}
	b.WriteString("]")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(b.String())) }))
	defer srv.Close()
	r, err := New(Options{URL: srv.URL, User: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s, err := r.Limit(3).ReadSnapshot(context.Background(), broker.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Queues) != 3 || s.Queues[2].Name != "q2" || s.QueuesDropped != 2 {
		t.Fatalf("%d queues, last %s, dropped %d", len(s.Queues), s.Queues[len(s.Queues)-1].Name, s.QueuesDropped)
	}
}
