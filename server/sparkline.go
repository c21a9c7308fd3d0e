package server

import (
	"math"
	"strconv"
	"strings"

	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// A sparkline is an inline SVG drawn on the server, so the page needs no
// script and no other origin to show it, and the CSP needs no exception:
// it is markup, styled by the page's own stylesheet. assets/status.js
// draws the same from the API on every refresh; the two must agree.
const (
	sparkWidth  = 120
	sparkHeight = 24
	sparkPad    = 2
)

// sparkline is what the "spark" template renders.
type sparkline struct {
	W, H int
	// Label is the text alternative: what is drawn, and its min, max and
	// latest value.
	Label string
	// D is the path; empty when there is nothing to draw.
	D string
}

// sparkKinds are the series drawn per queue, by the data-field of the cell
// they sit in.
var sparkKinds = map[string]struct {
	what   string
	format func(float64) string
}{
	"ready":       {"ready messages", func(v float64) string { return formatInt(int64(v)) }},
	"dead_letter": {"dead-lettered messages", func(v float64) string { return formatInt(int64(v)) }},
	"oldest":      {"oldest message age", formatDuration},
}

// spark builds one queue's sparkline of kind; nil when the status carries
// no history for it (the API without ?history=1, `check`).
func spark(s *status.Status, q status.QueueStatus, kind string) *sparkline {
	if s.History == nil || q.History == nil {
		return nil
	}
	k, ok := sparkKinds[kind]
	if !ok {
		return nil
	}
	vals := make([]float64, len(s.History.Reads))
	for i := range vals {
		vals[i] = math.NaN()
		switch kind {
		case "ready":
			if i < len(q.History.Ready) && q.History.Ready[i] >= 0 {
				vals[i] = float64(q.History.Ready[i])
			}
		case "dead_letter":
			if i < len(q.History.DeadLetter) && q.History.DeadLetter[i] >= 0 {
				vals[i] = float64(q.History.DeadLetter[i])
			}
		case "oldest":
			if i < len(q.History.OldestMessageAgeSeconds) {
				vals[i] = float64(q.History.OldestMessageAgeSeconds[i])
			}
		}
	}
	d, lo, hi, last, n := sparkPath(vals, s.History.Reads)
	label := q.Name + ": " + k.what + ", last hour: "
	if n == 0 {
		label += "no data yet"
	} else {
		label += "min " + k.format(lo) + ", max " + k.format(hi) + ", latest " + k.format(last)
	}
	return &sparkline{W: sparkWidth, H: sparkHeight, Label: label, D: d}
}

// coord rounds half up to a tenth, as status.js does (Math.round), so the
// server's and the script's paths are the same text.
func coord(v float64) string {
	return strconv.FormatFloat(math.Floor(v*10+0.5)/10, 'f', 1, 64)
}

// sparkPath draws vals (NaN: no value) as one path. Values are joined
// across slots nobody read in, and broken where a read had no value for
// the queue (it failed, or did not list the queue), so a line never
// claims a value that was not seen. A lone value is a dot. The y axis
// starts at 0 (or the minimum, if negative), so a flat line near zero
// does not look like a crowd. It returns the min, max and latest value
// and how many values there are.
func sparkPath(vals []float64, reads []string) (d string, lo, hi, last float64, n int) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		lo, hi, last = min(lo, v), max(hi, v), v
		n++
	}
	if n == 0 {
		return "", 0, 0, 0, 0
	}
	base, top := min(lo, 0), hi
	if top <= base {
		top = base + 1
	}
	step := float64(sparkWidth-2*sparkPad) / float64(max(len(vals)-1, 1))
	var b strings.Builder
	type point struct{ x, y string }
	var seg []point
	flush := func() {
		if len(seg) == 0 {
			return
		}
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		for k, p := range seg {
			// A point between two at its height adds nothing to the line:
			// an idle queue is one short path, not 240 points.
			if k > 0 && k < len(seg)-1 && p.y == seg[k-1].y && p.y == seg[k+1].y {
				continue
			}
			if k == 0 {
				b.WriteString("M")
			} else {
				b.WriteString("L")
			}
			b.WriteString(p.x)
			b.WriteString(" ")
			b.WriteString(p.y)
		}
		if len(seg) == 1 {
			b.WriteString("h0") // a lone value: round caps make it a dot
		}
		seg = seg[:0]
	}
	for i, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if i < len(reads) && reads[i] != history.ReadNone.String() {
				flush()
			}
			continue
		}
		x := sparkPad + float64(i)*step
		y := sparkHeight - sparkPad - (v-base)/(top-base)*float64(sparkHeight-2*sparkPad)
		seg = append(seg, point{coord(x), coord(y)})
	}
	flush()
	return b.String(), lo, hi, last, n
}
