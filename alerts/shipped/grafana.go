package shipped

import (
	"fmt"
	"regexp"
	"strings"
)

// VariableExpr returns the PromQL inside a Grafana variable query: the
// selector of label_values(<selector>, <label>), or the query itself when it
// is plain PromQL. label_values(<label>) has none.
func VariableExpr(q string) (string, bool) {
	q = strings.TrimSpace(q)
	if !strings.HasPrefix(q, "label_values(") || !strings.HasSuffix(q, ")") {
		return q, true
	}
	inner := q[len("label_values(") : len(q)-1]
	depth := 0
	for i := len(inner) - 1; i >= 0; i-- {
		switch inner[i] {
		case ')', '}', ']':
			depth++
		case '(', '{', '[':
			depth--
		case ',':
			if depth == 0 {
				return strings.TrimSpace(inner[:i]), true
			}
		}
	}
	return "", false // label_values(label): no selector
}

var grafanaVarRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// ExpandGrafanaVars replaces Grafana variables in a dashboard query the way
// Grafana would before sending it to Prometheus, for tests that run the
// shipped queries against a real Prometheus: vars maps names (job, instance,
// queue, __rate_interval) to values. A variable missing from vars is an
// error: the test would otherwise send something Grafana never would.
func ExpandGrafanaVars(expr string, vars map[string]string) (string, error) {
	var missing []string
	out := grafanaVarRE.ReplaceAllStringFunc(expr, func(m string) string {
		sm := grafanaVarRE.FindStringSubmatch(m)
		name := sm[1] + sm[2]
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for %s in %q", strings.Join(missing, ", "), expr)
	}
	return out, nil
}
