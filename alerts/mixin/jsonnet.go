package mixin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// The jsonnet mixin (mixin/, for jsonnet-bundler users) is emitted from the
// same Go code as the YAML and JSON files, so there is one source. The rules
// and dashboards are rendered once with a sentinel Config, in which every
// field holds a value that cannot occur elsewhere; the emitter then writes
// each rendering of a sentinel back as the jsonnet expression that computes
// it from $._config. A field that the emitter does not know how to write
// makes it panic, and alerts/mixin's tests render the emitted mixin with
// go-jsonnet and compare it with the Go output, so a value hard-coded by
// mistake is caught.

// MixinDir is where the mixin is written, relative to the repository root.
const MixinDir = "mixin"

// A substitution turns a rendering of a sentinel into a jsonnet expression.
type substitution struct {
	text string // as it appears inside a rendered string or as a JSON number
	expr string
}

type sentinels struct {
	cfg Config
	// inString are found inside strings, longest first.
	inString []substitution
	// numbers are whole JSON numbers (dashboard thresholds).
	numbers map[string]string
	// arrays are whole string arrays (dashboard tags), by their JSON.
	arrays map[string]string
}

// jsonnetName is a Config field's name in _config.
func jsonnetName(goName string) string {
	r := []rune(goName)
	r[0] = unicode.ToLower(r[0])
	return string(r)
}

// sentinelConfig returns a Config whose every field (but ForScale, a test
// knob that the mixin has no use for) holds a unique sentinel, and how to
// write each rendering of it in jsonnet.
func sentinelConfig() sentinels {
	s := sentinels{numbers: map[string]string{}, arrays: map[string]string{}}
	s.cfg.ForScale = 1
	v := reflect.ValueOf(&s.cfg).Elem()
	durationType := reflect.TypeOf(time.Duration(0))
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if f.Name == "ForScale" {
			continue
		}
		ref := "$._config." + jsonnetName(f.Name)
		fv := v.Field(i)
		switch {
		case f.Type == durationType:
			// Whole seconds and days, so both renderings are exact.
			d := time.Duration(7000+i)*24*time.Hour + time.Second
			fv.SetInt(int64(d))
			s.add(promDuration(d), ref)
			s.add(secs(d), "std.toString(u.seconds("+ref+"))")
			s.numbers[secs(d)] = "u.seconds(" + ref + ")"
		case f.Type.Kind() == reflect.String:
			fv.SetString("@@" + jsonnetName(f.Name) + "@@")
			s.add(fv.String(), ref)
		case f.Type.Kind() == reflect.Int:
			n := 987600 + i
			fv.SetInt(int64(n))
			s.add(strconv.Itoa(n), "std.toString("+ref+")")
			s.numbers[strconv.Itoa(n)] = ref
		case f.Type.Kind() == reflect.Float64:
			// Six decimals: its four-decimal rounding (ActorErrorMinRate's
			// format) differs from every other field's.
			x := float64(6000+10*i)/1e4 + 1e-6
			fv.SetFloat(x)
			s.add(strconv.FormatFloat(x, 'f', -1, 64), "u.num("+ref+")")
			s.add(strconv.FormatFloat(x, 'f', 4, 64), "std.format('%.4f', "+ref+")")
			s.numbers[strconv.FormatFloat(x, 'f', -1, 64)] = ref
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			def := reflect.ValueOf(DefaultConfig()).Field(i)
			var elems []string
			for k := 0; k < def.Len(); k++ {
				e := fmt.Sprintf("@@%s.%d@@", jsonnetName(f.Name), k)
				elems = append(elems, e)
				s.add(e, fmt.Sprintf("%s[%d]", ref, k))
			}
			fv.Set(reflect.ValueOf(elems))
			b, _ := json.Marshal(elems)
			s.arrays[string(b)] = ref
		case f.Type.Kind() == reflect.Struct:
			for k := 0; k < f.Type.NumField(); k++ {
				sub := f.Type.Field(k)
				if sub.Type.Kind() != reflect.String {
					panic("mixin: no jsonnet form for " + f.Name + "." + sub.Name)
				}
				e := fmt.Sprintf("@@%s.%s@@", jsonnetName(f.Name), jsonnetName(sub.Name))
				fv.Field(k).SetString(e)
				s.add(e, ref+"."+jsonnetName(sub.Name))
			}
		default:
			panic("mixin: no jsonnet form for Config." + f.Name)
		}
	}
	sort.SliceStable(s.inString, func(a, b int) bool { return len(s.inString[a].text) > len(s.inString[b].text) })
	return s
}

func (s *sentinels) add(text, expr string) {
	s.inString = append(s.inString, substitution{text, expr})
}

// configJsonnet writes c as the _config object.
func configJsonnet(c Config) string {
	var b strings.Builder
	v := reflect.ValueOf(c)
	durationType := reflect.TypeOf(time.Duration(0))
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if f.Name == "ForScale" {
			continue
		}
		fv := v.Field(i)
		var val string
		switch {
		case f.Type == durationType:
			val = jsonnetString(promDuration(time.Duration(fv.Int())))
		case f.Type.Kind() == reflect.String:
			val = jsonnetString(fv.String())
		case f.Type.Kind() == reflect.Int:
			val = strconv.FormatInt(fv.Int(), 10)
		case f.Type.Kind() == reflect.Float64:
			val = strconv.FormatFloat(fv.Float(), 'f', -1, 64)
		case f.Type.Kind() == reflect.Slice:
			var parts []string
			for k := 0; k < fv.Len(); k++ {
				parts = append(parts, jsonnetString(fv.Index(k).String()))
			}
			val = "[" + strings.Join(parts, ", ") + "]"
		case f.Type.Kind() == reflect.Struct:
			var parts []string
			for k := 0; k < fv.NumField(); k++ {
				parts = append(parts, jsonnetName(f.Type.Field(k).Name)+": "+jsonnetString(fv.Field(k).String()))
			}
			val = "{ " + strings.Join(parts, ", ") + " }"
		}
		fmt.Fprintf(&b, "    %s: %s,\n", jsonnetName(f.Name), val)
	}
	return b.String()
}

func jsonnetString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// jsonnetKeywords may not be written as bare field names.
var jsonnetKeywords = map[string]bool{
	"assert": true, "else": true, "error": true, "false": true, "for": true, "function": true,
	"if": true, "import": true, "importstr": true, "importbin": true, "in": true, "local": true,
	"null": true, "tailstrict": true, "then": true, "self": true, "super": true, "true": true,
}

// emit writes v (decoded JSON or YAML) as jsonnet, with the sentinels
// replaced by their expressions.
func (s *sentinels) emit(b *strings.Builder, v any, indent string) {
	in := indent + "  "
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			b.WriteString("{}")
			return
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("{\n")
		for _, k := range keys {
			b.WriteString(in)
			if identRE.MatchString(k) && !jsonnetKeywords[k] {
				b.WriteString(k)
			} else {
				b.WriteString(jsonnetString(k))
			}
			b.WriteString(": ")
			s.emit(b, v[k], in)
			b.WriteString(",\n")
		}
		b.WriteString(indent + "}")
	case []any:
		if j, err := json.Marshal(v); err == nil {
			if expr, ok := s.arrays[string(j)]; ok {
				b.WriteString(expr)
				return
			}
		}
		if len(v) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for _, e := range v {
			b.WriteString(in)
			s.emit(b, e, in)
			b.WriteString(",\n")
		}
		b.WriteString(indent + "]")
	case string:
		b.WriteString(s.str(v))
	case json.Number:
		if expr, ok := s.numbers[v.String()]; ok {
			b.WriteString(expr)
		} else {
			b.WriteString(v.String())
		}
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case nil:
		b.WriteString("null")
	default:
		panic(fmt.Sprintf("mixin: no jsonnet form for %T", v))
	}
}

// str writes a string as a concatenation of literals and expressions.
func (s *sentinels) str(v string) string {
	var parts []string
	lit := 0
	for i := 0; i < len(v); {
		matched := false
		for _, sub := range s.inString {
			if strings.HasPrefix(v[i:], sub.text) {
				if lit < i {
					parts = append(parts, jsonnetString(v[lit:i]))
				}
				parts = append(parts, sub.expr)
				i += len(sub.text)
				lit = i
				matched = true
				break
			}
		}
		if !matched {
			i++
		}
	}
	if lit < len(v) || len(parts) == 0 {
		parts = append(parts, jsonnetString(v[lit:]))
	}
	return strings.Join(parts, " + ")
}

const mixinNote = "// Generated by `go run ./alerts/gen` from alerts/mixin. Do not edit: change\n" +
	"// alerts/mixin in Go and run it again. Override _config to adapt it.\n"

// utilsJsonnet holds the helpers the emitted expressions use.
const utilsJsonnet = mixinNote + `{
  // seconds('1h30m') is 5400: durations in _config are Prometheus durations
  // (units d, h, m, s).
  seconds(d)::
    local units = { d: 86400, h: 3600, m: 60, s: 1 };
    local step(acc, c) =
      if std.member('0123456789', c) then acc { n: acc.n * 10 + std.parseInt(c), digits: true }
      else if std.objectHas(units, c) && acc.digits then { n: 0, total: acc.total + acc.n * units[c], digits: false }
      else error 'duration %s: want a Prometheus duration such as 1h30m' % d;
    local r = std.foldl(step, std.stringChars(d), { n: 0, total: 0, digits: false });
    if r.digits || d == '' then error 'duration %s: want a Prometheus duration such as 1h30m' % d else r.total,

  // num(0.8) is '0.8': the shortest decimal that reads back as the number
  // (std.toString writes 0.80000000000000004).
  num(x)::
    local fit = [p for p in std.range(0, 15) if std.parseJson(std.format('%.' + p + 'f', x)) == x];
    if fit == [] then std.toString(x) else std.format('%.' + fit[0] + 'f', x),
}
`

const mixinJsonnet = mixinNote + `// prometheusAlerts, prometheusRules and grafanaDashboards, as monitoring
// mixins give them; see docs/mixin.md.
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'rules.libsonnet') +
(import 'dashboards.libsonnet')
`

const jsonnetfileJSON = `{
  "version": 1,
  "dependencies": [],
  "legacyImports": true
}
`

// MixinFiles returns the files of mixin/, by path relative to the
// repository root. Their _config holds c's values.
func (c Config) MixinFiles() map[string][]byte {
	s := sentinelConfig()
	var rf struct {
		Groups []map[string]any `yaml:"groups"`
	}
	if err := yaml.Unmarshal(s.cfg.RulesYAML(), &rf); err != nil {
		panic("mixin: generated rules are not YAML: " + err.Error())
	}
	var alerts, records []any
	for _, g := range rf.Groups {
		rules, _ := g["rules"].([]any)
		if len(rules) > 0 {
			if _, ok := rules[0].(map[string]any)["record"]; ok {
				records = append(records, g)
				continue
			}
		}
		alerts = append(alerts, g)
	}
	dashboards := map[string]any{}
	for name, b := range s.cfg.Dashboards() {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var d any
		if err := dec.Decode(&d); err != nil {
			panic("mixin: generated dashboard is not JSON: " + err.Error())
		}
		dashboards[name] = d
	}
	file := func(field string, v any) []byte {
		var b strings.Builder
		b.WriteString(mixinNote + "local u = import 'lib/utils.libsonnet';\n\n{\n  " + field + "+:: ")
		s.emit(&b, v, "  ")
		b.WriteString(",\n}\n")
		return []byte(b.String())
	}
	group := func(groups []any) map[string]any { return map[string]any{"groups": groups} }
	d := MixinDir + "/"
	return map[string][]byte{
		d + "mixin.libsonnet":      []byte(mixinJsonnet),
		d + "config.libsonnet":     []byte(mixinNote + "{\n  _config+:: {\n" + configJsonnet(c) + "  },\n}\n"),
		d + "alerts.libsonnet":     file("prometheusAlerts", group(alerts)),
		d + "rules.libsonnet":      file("prometheusRules", group(records)),
		d + "dashboards.libsonnet": file("grafanaDashboards", dashboards),
		d + "lib/utils.libsonnet":  []byte(utilsJsonnet),
		d + "jsonnetfile.json":     []byte(jsonnetfileJSON),
	}
}
