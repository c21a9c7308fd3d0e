package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

func backlogServer(t *testing.T, r *testserver.Redis, on bool) *httptest.Server {
	t.Helper()
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, broker.Options{Queues: []string{"mail", "img"}, SkipDiscovery: true, BacklogByActor: on})
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "t", Namespace: "dramatiq"}, collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	src := server.NewStatusSource(server.StatusOptions{Exporter: exp, Thresholds: status.DefaultThresholds(), Timeout: 3 * time.Second, TelemetryPath: "/metrics"})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/status", src.APIHandler())
	mux.Handle("/", src.PageHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// With --dramatiq.backlog-by-actor the page and the API show each queue's
// top actors, longest queue first, escaped; without it the section is
// absent.
func TestStatusPageBacklogByActor(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	for q, actors := range map[string][]string{
		"mail": {"send_email", "send_email", "send_email", "<script>x</script>", "a", "b"},
		"img":  {"resize"},
	} {
		for _, a := range actors {
			id := testserver.UUID()
			r.Admin.HSet(ctx, "dramatiq:"+q+".msgs", id, testserver.Message{Queue: q, Actor: a, ID: id, Created: time.Now()}.JSON(id))
			r.Admin.RPush(ctx, "dramatiq:"+q, id)
		}
	}
	off := backlogServer(t, r, false)
	if _, page := get(t, off.URL+"/"); strings.Contains(page, "Backlog by actor") {
		t.Error("the section shows while the option is off")
	}
	on := backlogServer(t, r, true)
	_, page := get(t, on.URL+"/")
	sec := page[strings.Index(page, `id="backlog"`):]
	sec = sec[:strings.Index(sec, "</section>")]
	for _, want := range []string{"<code>send_email</code>", ">3<", "<code>resize</code>", "&lt;script&gt;"} {
		if !strings.Contains(sec, want) {
			t.Errorf("backlog section lacks %q:\n%s", want, sec)
		}
	}
	if strings.Index(sec, "send_email") > strings.Index(sec, "resize") {
		t.Error("the longer queue should come first")
	}
	// Top 3 of mail: send_email and two of the three single ones.
	if n := strings.Count(sec, `data-label="Queue">mail<`); n != status.MaxBacklogActors {
		t.Errorf("mail has %d rows, want %d", n, status.MaxBacklogActors)
	}
	_, body := get(t, on.URL+"/api/v1/status")
	var s status.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if !s.BacklogByActor {
		t.Fatal("API: backlog_by_actor false")
	}
	for _, q := range s.Queues {
		if q.Name == "mail" && (len(q.BacklogByActor) != 3 || q.BacklogByActor[0].Actor != "send_email" || q.BacklogByActor[0].Messages != 3 || q.BacklogByActor[0].Estimate != "exact") {
			t.Errorf("API mail: %+v", q.BacklogByActor)
		}
	}
}
