package collector

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ownBackends knows the server pids of a pool's connections, so that the
// activity collector leaves out exactly the exporter's own sessions. Matching
// on application_name instead hid any application session that happened to
// carry the same name, whatever its role: a 12 s transaction of such a
// session read as no transaction at all.
//
// It is the pool's connect tracer (pgx calls it around every connect, failed
// or not, which pgxpool's hooks do not) and its BeforeClose hook, and it
// travels inside the pool's config, where newDBSource finds it again.
//
// Behind PgBouncer the pid pgx receives is the pooler's, not a backend's; it
// then matches nothing, and only pg_backend_pid() of the querying session
// is left out, as the exporter's idle client connections hold no backend.
type ownBackends struct {
	mu      sync.Mutex
	pids    map[uint32]struct{}
	dialing int
	// settled is closed when dialing drops back to 0.
	settled chan struct{}
}

func newOwnBackends() *ownBackends {
	return &ownBackends{pids: map[uint32]struct{}{}}
}

// ownBackendsOf returns the tracer NewDatabasePool installed, or nil for a
// pool built elsewhere.
func ownBackendsOf(cfg *pgx.ConnConfig) *ownBackends {
	o, _ := cfg.Tracer.(*ownBackends)
	return o
}

func (o *ownBackends) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dialing == 0 {
		o.settled = make(chan struct{})
	}
	o.dialing++
	return ctx
}

func (o *ownBackends) TraceConnectEnd(_ context.Context, data pgx.TraceConnectEndData) {
	o.mu.Lock()
	defer o.mu.Unlock()
	// pgxpool closes a connection without BeforeClose only when its
	// AfterConnect fails; NewDatabasePool sets none.
	if data.Err == nil && data.Conn != nil {
		o.pids[data.Conn.PgConn().PID()] = struct{}{}
	}
	o.dialing--
	if o.dialing == 0 {
		close(o.settled)
	}
}

func (o *ownBackends) closed(c *pgx.Conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.pids, c.PgConn().PID())
}

// pgx requires a connect tracer to be a query tracer too.
func (o *ownBackends) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (o *ownBackends) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// ownBackendsWait bounds how long snapshot waits for connects in progress.
const ownBackendsWait = time.Second

// snapshot returns the pids of the pool's connections. A connection still
// being set up already has a backend in pg_stat_activity but no pid here
// yet, and would be counted as an application session; so snapshot first
// waits for connects in progress (another collector's, in the same scrape),
// for at most ownBackendsWait or until ctx ends.
func (o *ownBackends) snapshot(ctx context.Context) []int32 {
	if o == nil {
		return []int32{}
	}
	o.mu.Lock()
	settled := o.settled
	dialing := o.dialing > 0
	o.mu.Unlock()
	if dialing {
		t := time.NewTimer(ownBackendsWait)
		select {
		case <-settled:
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]int32, 0, len(o.pids))
	for pid := range o.pids {
		out = append(out, int32(pid))
	}
	slices.Sort(out)
	return out
}
