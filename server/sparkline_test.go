package server

import (
	"math"
	"strings"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

func TestSparkPath(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name  string
		vals  []float64
		reads []string
		want  string
	}{
		{"empty", []float64{nan, nan}, []string{"none", "failed"}, ""},
		{"line", []float64{0, 5, 10}, []string{"ok", "ok", "ok"}, "M2.0 22.0L60.0 12.0L118.0 2.0"},
		// Nobody read in the middle slot: joined.
		{"joined across no read", []float64{0, nan, 10}, []string{"ok", "none", "ok"}, "M2.0 22.0L118.0 2.0"},
		// A failed read or a missing queue: broken, each half a dot.
		{"broken by a failed read", []float64{0, nan, 10}, []string{"ok", "failed", "ok"}, "M2.0 22.0h0 M118.0 2.0h0"},
		{"broken by a missing queue", []float64{4, 4, nan, 10}, []string{"ok", "ok", "ok", "ok"}, "M2.0 14.0L40.7 14.0 M118.0 2.0h0"},
		// Flat runs keep their ends only; zero is the bottom.
		{"flat", []float64{0, 0, 0, 0, 0}, []string{"ok", "ok", "ok", "ok", "ok"}, "M2.0 22.0L118.0 22.0"},
		{"flat then up", []float64{3, 3, 3, 6}, []string{"ok", "ok", "ok", "ok"}, "M2.0 12.0L79.3 12.0L118.0 2.0"},
		{"negative", []float64{-2, 2}, []string{"ok", "ok"}, "M2.0 22.0L118.0 2.0"},
	} {
		d, _, _, _, _ := sparkPath(tc.vals, tc.reads)
		if d != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, d, tc.want)
		}
	}
}

func TestSparkLabels(t *testing.T) {
	s := &status.Status{History: &status.History{Reads: []string{"ok", "ok", "failed"}}}
	q := status.QueueStatus{Name: "default", History: &status.QueueHistory{
		Ready: status.Counts{1500, 40, -1}, DeadLetter: status.Counts{-1, -1, -1},
		OldestMessageAgeSeconds: status.Ages{90, float32(math.NaN()), float32(math.Inf(1))},
	}}
	for kind, want := range map[string]string{
		"ready":       "default: ready messages, last hour: min 40, max 1,500, latest 40",
		"dead_letter": "default: dead-lettered messages, last hour: no data yet",
		"oldest":      "default: oldest message age, last hour: min 1m 30s, max 1m 30s, latest 1m 30s",
	} {
		sp := spark(s, q, kind)
		if sp == nil || sp.Label != want || sp.W != sparkWidth || sp.H != sparkHeight {
			t.Errorf("%s: %+v, want label %q", kind, sp, want)
		}
		if kind == "dead_letter" && sp.D != "" {
			t.Errorf("a series without values draws %q", sp.D)
		}
	}
	if spark(&status.Status{}, q, "ready") != nil || spark(s, status.QueueStatus{}, "ready") != nil {
		t.Error("a sparkline without a history")
	}
	if sp := spark(s, q, "ready"); strings.Contains(sp.D, "NaN") {
		t.Errorf("path %q", sp.D)
	}
}
