package alerts

import (
	"fmt"
	"strings"
	"unicode"
)

// A small PromQL reader, enough to find every series selector in the shipped
// rules and dashboards with its metric name and matchers. It knows the
// grammar's keywords, aggregations and modifiers, so label names after by/on
// (...), function names, strings, durations and Grafana variables are never
// taken for metric names. Expressions are also parsed by promtool in these
// tests, so this reader can assume they are valid PromQL.

type matcher struct{ Name, Op, Value string }

type selector struct {
	Metric   string
	Matchers []matcher
}

// Label returns the matchers on one label, in order.
func (s selector) Label(name string) []matcher {
	var out []matcher
	for _, m := range s.Matchers {
		if m.Name == name {
			out = append(out, m)
		}
	}
	return out
}

func (s selector) String() string {
	var ms []string
	for _, m := range s.Matchers {
		ms = append(ms, fmt.Sprintf("%s%s%q", m.Name, m.Op, m.Value))
	}
	return s.Metric + "{" + strings.Join(ms, ",") + "}"
}

type tokKind int

const (
	tIdent tokKind = iota
	tString
	tNumber // numbers and durations
	tVar    // Grafana variable: $x, ${x}, $__rate_interval
	tPunct
)

type token struct {
	kind tokKind
	text string // for strings: the unquoted value
}

var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true,
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "offset": true,
}

// Modifiers whose optional parenthesised list holds label names.
var labelListModifiers = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true,
}

var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true,
}

func lexPromQL(s string) ([]token, error) {
	var toks []token
	r := []rune(s)
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '#':
			for i < len(r) && r[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			var b strings.Builder
			j := i + 1
			for ; j < len(r) && r[j] != c; j++ {
				if r[j] == '\\' && c != '`' && j+1 < len(r) {
					j++
				}
				b.WriteRune(r[j])
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated string at %d in %q", i, s)
			}
			toks = append(toks, token{tString, b.String()})
			i = j + 1
		case c == '$':
			j := i + 1
			if j < len(r) && r[j] == '{' {
				for j < len(r) && r[j] != '}' {
					j++
				}
				j++
			} else {
				for j < len(r) && (r[j] == '_' || unicode.IsLetter(r[j]) || unicode.IsDigit(r[j])) {
					j++
				}
			}
			toks = append(toks, token{tVar, string(r[i:j])})
			i = j
		case unicode.IsDigit(c) || (c == '.' && i+1 < len(r) && unicode.IsDigit(r[i+1])):
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '.' ||
				((r[j] == '+' || r[j] == '-') && (r[j-1] == 'e' || r[j-1] == 'E') && !strings.ContainsAny(string(r[i:j-1]), "smhdwy"))) {
				j++
			}
			toks = append(toks, token{tNumber, string(r[i:j])})
			i = j
		case c == '_' || c == ':' || unicode.IsLetter(c):
			j := i
			for j < len(r) && (r[j] == '_' || r[j] == ':' || unicode.IsLetter(r[j]) || unicode.IsDigit(r[j])) {
				j++
			}
			toks = append(toks, token{tIdent, string(r[i:j])})
			i = j
		default:
			// Two-character operators first.
			if i+1 < len(r) {
				two := string(r[i : i+2])
				switch two {
				case "==", "!=", "<=", ">=", "=~", "!~":
					toks = append(toks, token{tPunct, two})
					i += 2
					continue
				}
			}
			if !strings.ContainsRune("{}()[],+-*/%^<>=@!", c) {
				return nil, fmt.Errorf("unexpected %q at %d in %q", c, i, s)
			}
			toks = append(toks, token{tPunct, string(c)})
			i++
		}
	}
	return toks, nil
}

// parseSelectors returns every series selector of a PromQL expression.
func parseSelectors(expr string) ([]selector, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return nil, err
	}
	depth := 0
	for _, t := range toks {
		if t.kind == tPunct && t.text == "(" {
			depth++
		} else if t.kind == tPunct && t.text == ")" {
			if depth--; depth < 0 {
				break
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced parentheses in %q", expr)
	}
	peek := func(i int) token {
		if i < len(toks) {
			return toks[i]
		}
		return token{tPunct, ""}
	}
	// skipGroup returns the index after the bracket group opening at i.
	skipGroup := func(i int, open, close string) (int, error) {
		depth := 0
		for j := i; j < len(toks); j++ {
			if toks[j].kind != tPunct {
				continue
			}
			switch toks[j].text {
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %s in %q", open, expr)
	}
	// matchers parses {name op "value", ...} at i.
	matchers := func(i int) ([]matcher, int, error) {
		var ms []matcher
		j := i + 1
		for {
			t := peek(j)
			if t.kind == tPunct && t.text == "}" {
				return ms, j + 1, nil
			}
			if t.kind == tPunct && t.text == "," {
				j++
				continue
			}
			op, val := peek(j+1), peek(j+2)
			if t.kind != tIdent || op.kind != tPunct || val.kind != tString {
				return nil, 0, fmt.Errorf("bad matcher near %q in %q", t.text, expr)
			}
			switch op.text {
			case "=", "!=", "=~", "!~":
			default:
				return nil, 0, fmt.Errorf("bad matcher operator %q in %q", op.text, expr)
			}
			ms = append(ms, matcher{t.text, op.text, val.text})
			j += 3
		}
	}

	var out []selector
	for i := 0; i < len(toks); {
		t := toks[i]
		switch {
		case t.kind == tPunct && t.text == "[":
			// Range or subquery: durations, a step, Grafana variables.
			j, err := skipGroup(i, "[", "]")
			if err != nil {
				return nil, err
			}
			i = j
		case t.kind == tPunct && t.text == "{":
			ms, j, err := matchers(i)
			if err != nil {
				return nil, err
			}
			sel := selector{Matchers: ms}
			for _, m := range ms {
				if m.Name == "__name__" && m.Op == "=" {
					sel.Metric = m.Value
				}
			}
			out = append(out, sel)
			i = j
		case t.kind == tIdent:
			low := strings.ToLower(t.text)
			next := peek(i + 1)
			switch {
			case labelListModifiers[low]:
				i++
				if next.kind == tPunct && next.text == "(" {
					j, err := skipGroup(i, "(", ")")
					if err != nil {
						return nil, err
					}
					i = j
				}
			case keywords[low], low == "inf", low == "nan":
				i++
			case next.kind == tPunct && next.text == "(":
				i++ // a function call; its arguments are read normally
			case aggregations[t.text] && next.kind == tIdent && (next.text == "by" || next.text == "without"):
				i++
			default:
				sel := selector{Metric: t.text}
				i++
				if next.kind == tPunct && next.text == "{" {
					ms, j, err := matchers(i)
					if err != nil {
						return nil, err
					}
					sel.Matchers = ms
					i = j
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	return out, nil
}
