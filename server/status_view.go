package server

import (
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// The status page draws at most a few hundred queue rows, the worst first,
// whatever the broker holds: at 10,000 queues a page of every row was
// 7 to 14 MB of HTML that a browser took seconds to lay out on every
// refresh. The API keeps every queue.
const (
	// PageQueues is how many queues the page shows by default.
	PageQueues = 100
	// MaxPageQueues bounds ?show=, so that no request draws a page of
	// every queue.
	MaxPageQueues = 1000
	// MaxPageFailures and MaxDeadLetterQueues bound the list of failed
	// checks (one per queue over a threshold) and the queues whose recent
	// dead letters the page lists.
	MaxPageFailures     = 20
	MaxDeadLetterQueues = 10
	// maxFilterLen bounds ?q=; a longer filter matches nothing anyway.
	maxFilterLen = 256
)

// pageView is the part of the status the page draws: the queues that match
// the filter, worst first, cut to Show.
type pageView struct {
	Filter string
	Show   int
	// Total queues in the status, Matched by the filter, Shown drawn.
	Total, Matched int
	Shown          []status.QueueStatus
	// DeadLetters are the first MaxDeadLetterQueues of the matching
	// queues with recent dead letters, worst first; DeadMore counts the
	// others.
	DeadLetters []status.QueueStatus
	DeadMore    int
	// Failed is the head of the status's failures; FailedMore counts the
	// others.
	Failed     []status.Failure
	FailedMore int
	// MoreHref shows more queues; empty when all matches are shown.
	MoreHref string
	// AllHref clears the filter; empty without one.
	AllHref string
}

// Hidden is how many matching queues the page leaves out.
func (v *pageView) Hidden() int { return v.Matched - len(v.Shown) }

// pageParams reads ?q= and ?show= leniently: a page link someone edited by
// hand still shows a page.
func pageParams(q url.Values) (filter string, show int) {
	filter = strings.TrimSpace(q.Get("q"))
	if len(filter) > maxFilterLen {
		filter = filter[:maxFilterLen]
	}
	show = PageQueues
	if n, err := strconv.Atoi(q.Get("show")); err == nil && n > 0 {
		show = min(n, MaxPageQueues)
	}
	return filter, show
}

// severity ranks a queue's problems for the page's order: a threshold
// exceeded first, then orphaned or overdue delayed messages, then dead
// letters or a head that could not be read.
func severity(q *status.QueueStatus) int {
	r := 0
	for _, p := range q.Problems {
		switch p {
		case status.CheckMaxReady, status.CheckMaxOldestAge:
			r = max(r, 3)
		case status.ProblemOrphaned, status.ProblemDelayedOverdue:
			r = max(r, 2)
		default:
			r = max(r, 1)
		}
	}
	return r
}

// worse orders queues for the page: the most severe problem, then the
// largest backlog, then the oldest message, then the name.
func worse(a, b *status.QueueStatus) bool {
	if sa, sb := severity(a), severity(b); sa != sb {
		return sa > sb
	}
	if a.Ready != b.Ready {
		return a.Ready > b.Ready
	}
	aa, ab := -1.0, -1.0
	if a.OldestMessageAgeSeconds != nil {
		aa = *a.OldestMessageAgeSeconds
	}
	if b.OldestMessageAgeSeconds != nil {
		ab = *b.OldestMessageAgeSeconds
	}
	if aa != ab {
		return aa > ab
	}
	return a.Name < b.Name
}

// selectQueues returns the indexes in st.Queues of the queues whose name
// contains filter (case-insensitive), worst first.
func selectQueues(st *status.Status, filter string) []int {
	needle := strings.ToLower(filter)
	idx := make([]int, 0, len(st.Queues))
	for i := range st.Queues {
		if needle == "" || strings.Contains(strings.ToLower(st.Queues[i].Name), needle) {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(i, j int) bool { return worse(&st.Queues[idx[i]], &st.Queues[idx[j]]) })
	return idx
}

// newPageView cuts st to what the page draws; idx is selectQueues's.
func newPageView(st *status.Status, idx []int, filter string, show int) *pageView {
	v := &pageView{Filter: filter, Show: show, Total: len(st.Queues), Matched: len(idx)}
	for k, i := range idx {
		q := st.Queues[i]
		if k < show {
			v.Shown = append(v.Shown, q)
		}
		if len(q.RecentDeadLetters) > 0 {
			if len(v.DeadLetters) < MaxDeadLetterQueues {
				v.DeadLetters = append(v.DeadLetters, q)
			} else {
				v.DeadMore++
			}
		}
	}
	v.Failed = st.Failed[:min(len(st.Failed), MaxPageFailures)]
	v.FailedMore = len(st.Failed) - len(v.Failed)
	// Relative links, so the page works behind a path-prefix proxy.
	link := func(filter string, show int) string {
		q := url.Values{}
		if filter != "" {
			q.Set("q", filter)
		}
		if show != PageQueues {
			q.Set("show", strconv.Itoa(show))
		}
		if len(q) == 0 {
			return "./"
		}
		return "?" + q.Encode()
	}
	if v.Hidden() > 0 && show < MaxPageQueues {
		v.MoreHref = link(filter, min(show*2, MaxPageQueues))
	}
	if filter != "" {
		v.AllHref = link("", show)
	}
	return v
}
