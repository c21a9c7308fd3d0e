package server

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestScrapeTimeout(t *testing.T) {
	cases := []struct {
		header string
		want   time.Duration
	}{
		{"", 10 * time.Second},
		{"5", 4500 * time.Millisecond},
		{"0.3", 100 * time.Millisecond},
		{"120", 10 * time.Second},
		{"garbage", 10 * time.Second},
		{"-1", 10 * time.Second},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/metrics", nil)
		if tc.header != "" {
			r.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", tc.header)
		}
		if got := ScrapeTimeout(r, 10*time.Second, 500*time.Millisecond); got != tc.want {
			t.Errorf("header %q: %s, want %s", tc.header, got, tc.want)
		}
	}
}

// Headers too large for a time.Duration, or not numbers at all, give the
// cap: once they overflowed into a 100 ms deadline.
func TestScrapeTimeoutOverflow(t *testing.T) {
	const limit = 10 * time.Second
	for _, offset := range []time.Duration{0, 500 * time.Millisecond} {
		for _, h := range []string{"9.3e9", "1e10", "9.3e18", "1e308", "Inf", "+Inf", "-Inf", "NaN", "-1", "-0", "0", "-9.3e9", "0x1p80"} {
			r := httptest.NewRequest("GET", "/metrics", nil)
			r.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", h)
			if got := ScrapeTimeout(r, limit, offset); got != limit {
				t.Errorf("offset %s, header %q: %s, want the cap %s", offset, h, got, limit)
			}
		}
	}
	// Just under the cap plus the offset, the header still wins.
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10.4")
	if got := ScrapeTimeout(r, limit, 500*time.Millisecond); got != 9900*time.Millisecond {
		t.Errorf("10.4 s - 0.5 s: %s", got)
	}
}
