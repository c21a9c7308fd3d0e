package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

//go:embed assets/index.html assets/status.css assets/status.js
var assets embed.FS

// RefreshSeconds is how often the page polls the API.
const RefreshSeconds = 5

var (
	pageCSS, pageJS string
	pageTmpl        *template.Template
	// pageCSP allows exactly the inline style and script the page ships
	// (by hash) and requests to this exporter only.
	pageCSP string
)

func init() {
	css, _ := assets.ReadFile("assets/status.css")
	js, _ := assets.ReadFile("assets/status.js")
	html, _ := assets.ReadFile("assets/index.html")
	pageCSS, pageJS = string(css), string(js)
	pageTmpl = template.Must(template.New("index").Funcs(pageFuncs).Parse(string(html)))
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	pageCSP = strings.Join([]string{
		"default-src 'none'",
		"style-src " + hash(pageCSS),
		"script-src " + hash(pageJS),
		"connect-src 'self'",
		"img-src 'self'",
		"base-uri 'none'",
		// The queue filter is a GET form to this page.
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
}

// Formatting here and in assets/status.js must agree: the page's first
// paint comes from these, every refresh from the script.
var pageFuncs = template.FuncMap{
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05") + " UTC" },
	"stateText": func(s string) string {
		switch s {
		case status.ComponentOK:
			return "OK"
		case status.ComponentFailing:
			return "Failing"
		case status.ComponentNotConfigured:
			return "Not configured"
		case status.ComponentUnknown:
			return "Unknown"
		}
		return s
	},
	"num":   formatInt,
	"int64": func(n int) int64 { return int64(n) },
	"optint": func(v any) string {
		switch p := v.(type) {
		case *float64:
			if p != nil {
				return formatInt(int64(math.Round(*p)))
			}
		case *int:
			if p != nil {
				return formatInt(int64(*p))
			}
		}
		return "–"
	},
	"bytes": func(p *float64) string {
		if p == nil {
			return "–"
		}
		v, units, i := *p, []string{"B", "KiB", "MiB", "GiB", "TiB"}, 0
		for v >= 1024 && i < len(units)-1 {
			v /= 1024
			i++
		}
		if i == 0 {
			return fmt.Sprintf("%g %s", v, units[i])
		}
		return fmt.Sprintf("%.1f %s", v, units[i])
	},
	"age": func(p *float64) string {
		switch {
		case p == nil:
			return "?"
		case *p == 0:
			return "–"
		}
		return formatDuration(*p)
	},
	"ago": func(now, t time.Time) string {
		s := now.Sub(t).Seconds()
		if s < 1 {
			return "just now"
		}
		return formatDuration(s) + " ago"
	},
	// atLeast: a known duration of at least min seconds.
	"atLeast": func(p *float64, least float64) bool { return p != nil && *p >= least },
	"deref": func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	},
	"ms": func(s float64) string { return fmt.Sprintf("%d ms", int64(math.Round(s*1000))) },
	"has": func(list []string, x string) bool {
		for _, v := range list {
			if v == x {
				return true
			}
		}
		return false
	},
	"dbHint": dbHint,
	"spark":  spark,
	// known hides numbers that only mean "nothing was read".
	"known": func(s *status.Status, v string) string {
		if !s.Components.BrokerUp() {
			return "?"
		}
		return v
	},
	"queueProblems": func(s *status.Status) bool {
		for _, q := range s.Queues {
			if len(q.Problems) > 0 {
				return true
			}
		}
		return false
	},
	"totalReady": func(s *status.Status) int64 {
		var n int64
		for _, q := range s.Queues {
			n += q.Ready
		}
		return n
	},
	"totalDead": func(s *status.Status) int64 {
		var n int64
		for _, q := range s.Queues {
			n += q.DeadLetter
		}
		return n
	},
	"actorRows":   actorRows,
	"backlogRows": backlogRows,
	"jsonText": func(v any) string {
		if v == nil {
			return "null"
		}
		b, err := json.Marshal(v)
		if err != nil {
			return "?"
		}
		return string(b)
	},
}

// MaxActorRows is how many {queue, actor} rows "Failures by actor" shows.
const MaxActorRows = 20

// actorRow is one row of "Failures by actor".
type actorRow struct {
	Queue, Actor string
	Total        int64
}

// actorRows lists the {queue, actor} pairs with the most dead letters since
// the exporter started, at most MaxActorRows, and how many more there are.
// assets/status.js sorts the same way.
func actorRows(s *status.Status) (out struct {
	Rows []actorRow
	More int
}) {
	for _, q := range s.Queues {
		for _, a := range q.DeadLetteredByActor {
			out.Rows = append(out.Rows, actorRow{q.Name, a.Actor, a.DeadLetteredTotal})
		}
	}
	sort.SliceStable(out.Rows, func(i, j int) bool { return out.Rows[i].Total > out.Rows[j].Total })
	if len(out.Rows) > MaxActorRows {
		out.More = len(out.Rows) - MaxActorRows
		out.Rows = out.Rows[:MaxActorRows]
	}
	return out
}

func dbHint(state string) string {
	switch state {
	case status.ComponentNotConfigured:
		return "Set --database.url to watch the app's PostgreSQL."
	case status.ComponentOK:
		return "PostgreSQL answers."
	}
	return "PostgreSQL does not answer."
}

// formatInt groups thousands with commas, like toLocaleString("en-US").
func formatInt(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// formatDuration is a short, coarse age: "42s", "3m 5s", "2h 10m", "4d 1h".
func formatDuration(secs float64) string {
	s := int64(math.Floor(secs))
	if s < 60 {
		return fmt.Sprintf("%ds", s)
	}
	m := s / 60
	s %= 60
	if m < 60 {
		return fmt.Sprintf("%dm %ds", m, s)
	}
	h := m / 60
	m %= 60
	if h < 24 {
		return fmt.Sprintf("%dh %dm", h, m)
	}
	return fmt.Sprintf("%dd %dh", h/24, h%24)
}

type pageData struct {
	S              *status.Status
	V              *pageView
	CSS            template.CSS
	JS             template.JS
	RefreshSeconds int
	PageQueues     int
	TelemetryPath  string
	MetricsHref    string
}

// PageHandler serves the status page at exactly "/": server-rendered, so it
// works without JavaScript, and refreshed by its script from the API. Any
// other path is 404, since "/" is the mux's catch-all.
func (s *StatusSource) PageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		filter, show := pageParams(r.URL.Query())
		var view *pageView
		st, release, ok := s.readWith(w, r, s.o.History != nil, func(ctx context.Context) *status.Status {
			st := s.Status(ctx, false)
			idx := selectQueues(st, filter)
			if s.o.History != nil {
				// The trends of the queues drawn only: a few hundred
				// KB, whatever the broker holds.
				names := make([]string, 0, min(len(idx), show))
				for _, i := range idx[:min(len(idx), show)] {
					names = append(names, st.Queues[i].Name)
				}
				st.AddHistory(s.o.History.Trend(names))
			}
			view = newPageView(st, idx, filter, show)
			return st
		})
		if !ok {
			return
		}
		defer release()
		var buf bytes.Buffer
		err := pageTmpl.Execute(&buf, pageData{
			S: st, V: view, CSS: template.CSS(pageCSS), JS: template.JS(pageJS), RefreshSeconds: RefreshSeconds,
			PageQueues:    PageQueues,
			TelemetryPath: s.o.TelemetryPath,
			// Relative, so the page also works behind a path-prefix proxy.
			// Escaped: the path is a literal and may hold % or spaces.
			MetricsHref: "." + (&url.URL{Path: s.o.TelemetryPath}).EscapedPath(),
		})
		if err != nil {
			s.o.Logger.Error("rendering the status page failed", "err", err)
			http.Error(w, "cannot render the status page", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		_, _ = w.Write(buf.Bytes())
	})
}
