package resp

import (
	"errors"
	"strings"
	"testing"
)

// small are limits a fuzzer can reach the edges of.
var small = Limits{MaxLine: 12, MaxBulk: 20, MaxElements: 10, MaxDepth: 3, MaxReply: 64}

// feed runs the whole input through a new Validator in pieces of the
// given sizes (cycled), and returns the bytes it accepted and its error.
func feed(l Limits, in []byte, sizes []int) (int, error) {
	v := NewValidator(l)
	total := 0
	for i := 0; len(in) > 0; i++ {
		k := len(in)
		if len(sizes) > 0 {
			k = min(max(sizes[i%len(sizes)], 1), len(in))
		}
		n, err := v.Feed(in[:k])
		total += n
		if err != nil {
			return total, err
		}
		in = in[k:]
	}
	return total, nil
}

// check asserts that the Validator agrees with the reference on in, fed
// whole, byte by byte and in uneven pieces, and that what it accepts of
// a refused input is a valid prefix.
func check(t *testing.T, l Limits, in []byte) {
	t.Helper()
	want := refAccepts(in, l)
	for _, sizes := range [][]int{nil, {1}, {3, 1, 7}, {2, 5}} {
		n, err := feed(l, in, sizes)
		if got := err == nil; got != want {
			t.Fatalf("pieces %v: validator accepts=%v (%v), reference accepts=%v, input %q", sizes, got, err, want, in)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if n > len(in) || !refAccepts(in[:n], l) {
				t.Fatalf("pieces %v: accepted %d bytes that are not a valid prefix of %q", sizes, n, in)
			}
		}
	}
}

var cases = []struct {
	name string
	in   string
	ok   bool // under small
}{
	{"status", "+OK\r\n", true},
	{"error", "-ERR x\r\n", true},
	{"integer", ":-12\r\n", true},
	{"null", "_\r\n", true},
	{"bulk", "$3\r\nabc\r\n", true},
	{"empty bulk", "$0\r\n\r\n", true},
	{"null bulk", "$-1\r\n", true},
	{"null array", "*-1\r\n", true},
	{"bulk with CRLF inside", "$4\r\n\r\n\r\n\r\n", true},
	{"pipeline", "+OK\r\n:1\r\n$1\r\nx\r\n*2\r\n:1\r\n:2\r\n", true},
	{"map", "%1\r\n+k\r\n:1\r\n", true},
	{"attribute then value", "|1\r\n+k\r\n+v\r\n:1\r\n", true},
	{"null attribute then value", "|-1\r\n:1\r\n", true},
	{"push", ">2\r\n+message\r\n+x\r\n", true},
	{"CR inside a simple string", "+a\rb\r\n", true},
	{"unfinished bulk", "$10\r\nabc", true},
	{"unfinished header", "*1", true},
	{"bare LF", "+OK\n", false},
	{"empty line", "\r\n", false},
	{"unknown type", "X\r\n", false},
	{"bulk not ended by CRLF", "$1\r\nab\r\n", false},
	{"length not a number", "$x\r\n", false},
	{"empty length", "$\r\n", false},
	{"minus two", "*-2\r\n", false},
	{"minus zero", "$-0\r\n", false},
	{"bulk over cap", "$21\r\n", false},
	{"bulk near int64 max", "$9223372036854775807\r\n", false},
	{"bulk over int64", "$99999999999999999999999\r\n", false},
	{"aggregate over cap", "*11\r\n", false},
	{"map over cap", "%6\r\n", false},
	{"elements over cap in total", "*2\r\n*5\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n*4\r\n", false},
	{"elements reset between replies", "*9\r\n" + strings.Repeat(":1\r\n", 9) + "*9\r\n", true},
	{"deep", "*1\r\n*1\r\n*1\r\n:1\r\n", true},
	{"too deep", "*1\r\n*1\r\n*1\r\n*1\r\n", false},
	{"empty aggregate at the depth limit", "*1\r\n*1\r\n*1\r\n*0\r\n", true},
	{"attribute chain too deep", "|0\r\n|0\r\n|0\r\n|0\r\n", false},
	{"line at cap", "+" + strings.Repeat("a", 11) + "\r\n", true},
	{"line over cap", "+" + strings.Repeat("a", 12) + "\r\n", false},
	{"endless line", "+" + strings.Repeat("a", 100), false},
	{"reply over cap", "*3\r\n$20\r\n" + strings.Repeat("a", 20) + "\r\n$20\r\n" + strings.Repeat("a", 20) + "\r\n$20\r\naa", false},
	{"replies each under cap", strings.Repeat("$20\r\n"+strings.Repeat("a", 20)+"\r\n", 10), true},
}

func TestValidator(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := refAccepts([]byte(c.in), small); got != c.ok {
				t.Fatalf("reference accepts=%v, want %v", got, c.ok)
			}
			check(t, small, []byte(c.in))
		})
	}
}

// The review's hostile replies, under the real limits: each is refused
// after a few bytes, without reading on.
func TestDefaultLimitsRefuseHostileReplies(t *testing.T) {
	for _, c := range []struct{ name, in string }{
		{"bulk near int64 max", "$9223372036854775800\r\n"},
		{"bulk of 1e12", "$1000000000000\r\n"},
		{"array near int64 max", "*9223372036854775807\r\n"},
		{"array of 1e12", "*1000000000000\r\n"},
		{"map of 1e12", "%1000000000000\r\n"},
		{"nested arrays", strings.Repeat("*1\r\n", 1000)},
		{"attribute chain", strings.Repeat("|0\r\n", 1000)},
		{"endless line", "+" + strings.Repeat("a", 1<<20)},
		{"endless header", "*" + strings.Repeat("0", 1<<20)},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := feed(Default, []byte(c.in), nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if n > 10<<10 {
				t.Fatalf("accepted %d bytes first", n)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("error text of %d bytes", len(err.Error()))
			}
			t.Log(err)
		})
	}
}

// Feed keeps nothing of what it reads: no allocation, whatever the input.
func TestValidatorDoesNotAllocate(t *testing.T) {
	in := []byte("*3\r\n%1\r\n+k\r\n$5\r\nhello\r\n|1\r\n+a\r\n+b\r\n*2\r\n:1\r\n_\r\n>1\r\n=8\r\ntxt:abcd\r\n")
	v := NewValidator(Default)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := v.Feed(in); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per Feed", n)
	}
}

// FuzzValidator checks the streaming Validator against the recursive
// reference parser: for any input, fed in any pieces, it accepts exactly
// what the reference accepts, under small limits (so that the fuzzer
// reaches every bound) and under the real ones, and never panics.
func FuzzValidator(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		check(t, small, in)
		if got, want := func() bool { _, err := feed(Default, in, nil); return err == nil }(), refAccepts(in, Default); got != want {
			t.Fatalf("default limits: validator accepts=%v, reference accepts=%v, input %q", got, want, in)
		}
	})
}

// The cost per byte of a scrape's typical replies: many short counts and
// ids, a few bodies.
func BenchmarkValidator(b *testing.B) {
	var in []byte
	for range 1000 {
		in = append(in, ":12345\r\n*2\r\n$36\r\n0f8c5a52-8b3e-4c7d-9d1e-2f3a4b5c6d7e\r\n,1765000000000\r\n"...)
	}
	in = append(in, "$1048576\r\n"...)
	in = append(in, make([]byte, 1<<20)...)
	in = append(in, "\r\n"...)
	b.SetBytes(int64(len(in)))
	v := NewValidator(Default)
	for b.Loop() {
		if _, err := v.Feed(in); err != nil {
			b.Fatal(err)
		}
	}
}
