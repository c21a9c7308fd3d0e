package dramatiq_test

import (
	"context"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// The backlog by actor of a skewed backlog (90/9/1) that real Dramatiq
// enqueued: exact at the limit, and within a few points of the truth when
// sampled. The measured errors are logged; docs/backlog-by-actor.md quotes
// them.
func TestBacklogByActorRealDramatiq(t *testing.T) {
	root := testserver.RepoRoot(t)
	here := filepath.Join(root, "test", "dramatiq")
	venvs := findVenvs(t, root)
	if len(venvs) == 0 {
		return
	}
	py := venvs[0].python
	r := testserver.StartRedis(t)
	enqueue := func(queue string, n, burst, seed int) map[string]float64 {
		t.Helper()
		cmd := exec.Command(py, filepath.Join(here, "backlog_by_actor.py"), r.URL(), queue, strconv.Itoa(n), strconv.Itoa(burst), strconv.Itoa(seed))
		cmd.Dir = here
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("backlog_by_actor.py: %v\n%s", err, out)
		}
		truth := map[string]float64{}
		if err := json.Unmarshal(out, &truth); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		return truth
	}
	small := enqueue("small", 1000, 1, 1)
	const n = 30_000
	big := enqueue("big", n, 25, 2)

	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader := broker.NewReader(client, broker.Options{Queues: []string{"small", "big"}, SkipDiscovery: true, BacklogByActor: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	snap, err := reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]broker.ActorBacklog{"small": {}, "big": {}}
	for _, a := range snap.Backlog.Actors {
		got[a.Queue][a.Actor] = a
	}
	for actor, want := range small {
		if a := got["small"][actor]; a.Messages != want || a.Sampled {
			t.Errorf("small/%s: got %+v, want exactly %v", actor, a, want)
		}
	}
	for actor, want := range big {
		a := got["big"][actor]
		pts := math.Abs(a.Messages-want) / n * 100
		t.Logf("big/%s: true %.0f (%.2f%%), estimate %.0f (%.2f%%), error %.2f points", actor, want, want/n*100, a.Messages, a.Messages/n*100, pts)
		// A rare actor can fall between the windows and be absent: its
		// error is then its whole share.
		if (a.Actor != "" && !a.Sampled) || pts > 6 {
			t.Errorf("big/%s: estimate %+v is %.2f points off %v", actor, a, pts, want)
		}
	}
	if len(got["small"]) != 3 || len(got["big"]) < 2 {
		t.Errorf("actors: %+v", got)
	}
}
