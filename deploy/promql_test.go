package deploy_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

// This file reads just enough PromQL to say which series a dashboard query selects and which
// labels it relies on. The project has no PromQL parser among its dependencies, and the
// dashboards' queries are simple: selectors, functions, aggregations with by/without, binary
// operators with on/ignoring.

// selector is one vector selector: the series name, the job it names (if a matcher does),
// the labels its matchers use, and the values its equality matchers want.
type selector struct {
	name   string
	job    string
	labels []string
	equals map[string]string // label -> value of each label="value" with a literal value
}

// grouping is a by/without/on/ignoring/group_* label list and the selectors it applies to.
type grouping struct {
	labels []string
	scope  []selector
}

type promQuery struct {
	selectors []selector
	groupings []grouping
}

type tokKind int

const (
	tokIdent tokKind = iota
	tokNumber
	tokString
	tokVar // a Grafana template variable: $x, ${x}, [[x]]
	tokPunct
)

type token struct {
	kind tokKind
	text string
}

var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "offset": true, "bool": true, "atan2": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// labelLists are the keywords followed by a parenthesised list of label names.
var labelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

func lexPromQL(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := rune(s[i])
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '#': // a comment runs to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '_' || c == ':' || unicode.IsLetter(c):
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == ':' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
				j++
			}
			out = append(out, token{tokIdent, s[i:j]})
			i = j
		case unicode.IsDigit(c) || (c == '.' && i+1 < len(s) && unicode.IsDigit(rune(s[i+1]))):
			// Numbers and durations (5m, 1h30m, 1e3) are one token.
			j := i
			for j < len(s) && (s[j] == '.' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
				j++
			}
			out = append(out, token{tokNumber, s[i:j]})
			i = j
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != s[i] {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			out = append(out, token{tokString, s[i+1 : j]})
			i = j + 1
		case c == '$':
			j := i + 1
			if j < len(s) && s[j] == '{' {
				for j < len(s) && s[j] != '}' {
					j++
				}
				j++
			} else {
				for j < len(s) && (s[j] == '_' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
					j++
				}
			}
			out = append(out, token{tokVar, s[i:min(j, len(s))]})
			i = j
		default:
			// Two-character operators first: the matchers' != =~ !~ matter, the rest are skipped.
			if i+1 < len(s) && strings.Contains("!= =~ !~ == >= <=", s[i:i+2]) {
				out = append(out, token{tokPunct, s[i : i+2]})
				i += 2
				continue
			}
			out = append(out, token{tokPunct, s[i : i+1]})
			i++
		}
	}
	return out, nil
}

func parsePromQL(expr string) (promQuery, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return promQuery{}, err
	}
	if err := balanced(toks); err != nil {
		return promQuery{}, err
	}
	var q promQuery
	if err := extract(toks, &q, true); err != nil {
		return promQuery{}, err
	}
	return q, nil
}

// balanced checks that every bracket is closed by its own kind.
func balanced(toks []token) error {
	var open []string
	pairs := map[string]string{")": "(", "}": "{", "]": "["}
	for _, t := range toks {
		switch t.text {
		case "(", "{", "[":
			open = append(open, t.text)
		case ")", "}", "]":
			if len(open) == 0 || open[len(open)-1] != pairs[t.text] {
				return fmt.Errorf("unbalanced %q", t.text)
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) > 0 {
		return fmt.Errorf("unclosed %q", open[len(open)-1])
	}
	return nil
}

// extract finds the selectors in toks (and, with groups, the label lists and their scopes).
func extract(toks []token, q *promQuery, groups bool) error {
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		next := func(k int) string {
			if i+k < len(toks) {
				return toks[i+k].text
			}
			return ""
		}
		switch {
		case t.kind == tokIdent && labelLists[t.text]:
			if next(1) != "(" {
				if t.text == "group_left" || t.text == "group_right" {
					continue // the list is optional
				}
				return fmt.Errorf("%s without a label list", t.text)
			}
			end := closing(toks, i+1)
			if end < 0 {
				return fmt.Errorf("%s: unbalanced parentheses", t.text)
			}
			var labels []string
			for _, l := range toks[i+2 : end] {
				if l.kind == tokIdent {
					labels = append(labels, l.text)
				}
			}
			if groups {
				scope, err := groupScope(toks, i, end, t.text)
				if err != nil {
					return err
				}
				q.groupings = append(q.groupings, grouping{labels: labels, scope: scope})
			}
			i = end
		case t.kind == tokIdent && keywords[t.text]:
			if t.text == "offset" && next(1) != "" {
				i++ // the offset's duration
			}
		case t.kind == tokIdent && (next(1) == "(" || next(1) == "by" || next(1) == "without"):
			// A function or an aggregation: its arguments are read as the loop goes on.
		case t.kind == tokIdent:
			s := selector{name: t.text}
			if next(1) == "{" {
				end, err := matchers(toks, i+1, &s)
				if err != nil {
					return err
				}
				i = end
			}
			q.selectors = append(q.selectors, s)
		case t.text == "{":
			var s selector
			end, err := matchers(toks, i, &s)
			if err != nil {
				return err
			}
			if s.name == "" {
				return fmt.Errorf("a selector without a metric name")
			}
			q.selectors = append(q.selectors, s)
			i = end
		case t.text == "[": // a range or subquery: durations and step only
			for i < len(toks) && toks[i].text != "]" {
				i++
			}
		}
	}
	return nil
}

// groupScope returns the selectors a label list at toks[kw] (closed at end) applies to: the
// aggregation's argument for by/without (before or after the list), the whole expression for
// the binary operator modifiers.
func groupScope(toks []token, kw, end int, word string) ([]selector, error) {
	var arg []token
	switch {
	case word != "by" && word != "without":
		arg = toks
	case end+1 < len(toks) && toks[end+1].text == "(": // sum by (x) (arg)
		c := closing(toks, end+1)
		if c < 0 {
			return nil, fmt.Errorf("%s: unbalanced parentheses", word)
		}
		arg = toks[end+2 : c]
	case kw > 0 && toks[kw-1].text == ")": // sum (arg) by (x)
		o := opening(toks, kw-1)
		if o < 0 {
			return nil, fmt.Errorf("%s: unbalanced parentheses", word)
		}
		arg = toks[o+1 : kw-1]
	default:
		return nil, fmt.Errorf("%s: no aggregation argument next to it", word)
	}
	var q promQuery
	if err := extract(arg, &q, false); err != nil {
		return nil, err
	}
	return q.selectors, nil
}

var matchOps = map[string]bool{"=": true, "!=": true, "=~": true, "!~": true}

// matchers reads {label op "value", ...} from toks[open]; it returns the index of "}".
func matchers(toks []token, open int, s *selector) (int, error) {
	i := open + 1
	for ; i < len(toks) && toks[i].text != "}"; i++ {
		if toks[i].text == "," {
			continue
		}
		if i+2 >= len(toks) || toks[i].kind != tokIdent || !matchOps[toks[i+1].text] ||
			(toks[i+2].kind != tokString && toks[i+2].kind != tokVar) {
			return 0, fmt.Errorf("bad label matcher near %q", toks[i].text)
		}
		l, op, v := toks[i].text, toks[i+1].text, toks[i+2].text
		switch {
		case l == "__name__" && op == "=":
			s.name = v
		case l == "job" && op == "=":
			s.job = v
			s.labels = append(s.labels, l)
		case op == "=" && toks[i+2].kind == tokString:
			if s.equals == nil {
				s.equals = map[string]string{}
			}
			s.equals[l] = v
			s.labels = append(s.labels, l)
		default:
			s.labels = append(s.labels, l)
		}
		i += 2
	}
	if i >= len(toks) {
		return 0, fmt.Errorf("unterminated label matchers")
	}
	return i, nil
}

// closing returns the index of the parenthesis that closes toks[open], or -1.
func closing(toks []token, open int) int {
	depth := 0
	for i := open; i < len(toks); i++ {
		switch toks[i].text {
		case "(":
			depth++
		case ")":
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// opening returns the index of the parenthesis that toks[close] closes, or -1.
func opening(toks []token, close int) int {
	depth := 0
	for i := close; i >= 0; i-- {
		switch toks[i].text {
		case ")":
			depth++
		case "(":
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// TestParsePromQL checks the reader on the forms dashboards use, so that a metric the check
// cannot see is a failure of the dashboard, not of the reader.
func TestParsePromQL(t *testing.T) {
	for _, tt := range []struct {
		expr      string
		selectors []selector
		groupings [][]string // labels of each grouping, in order
	}{
		{
			expr:      `sum(rate(a_total[1m]))`,
			selectors: []selector{{name: "a_total"}},
		},
		{
			expr:      `sum by (pop) (rate(a_total{cache="hit",code!~"5.."}[$__rate_interval])) / sum by (pop) (rate(a_total[5m]))`,
			selectors: []selector{{name: "a_total", labels: []string{"cache", "code"}, equals: map[string]string{"cache": "hit"}}, {name: "a_total"}},
			groupings: [][]string{{"pop"}, {"pop"}},
		},
		{
			expr:      `histogram_quantile(0.99, sum(rate(h_bucket{job="meridian-edge"}[5m] offset 1h)) by (le, tier))`,
			selectors: []selector{{name: "h_bucket", job: "meridian-edge", labels: []string{"job"}}},
			groupings: [][]string{{"le", "tier"}},
		},
		{
			expr:      `1 - sum(rate(b_total[5m])) / ignoring(x) group_left sum({__name__="c_total"})`,
			selectors: []selector{{name: "b_total"}, {name: "c_total"}},
			groupings: [][]string{{"x"}},
		},
		{
			expr:      `max by (pop, node, upstream) (g) > bool 0.5 and on (pop) h`,
			selectors: []selector{{name: "g"}, {name: "h"}},
			groupings: [][]string{{"pop", "node", "upstream"}, {"pop"}},
		},
	} {
		q, err := parsePromQL(tt.expr)
		if err != nil {
			t.Errorf("parsePromQL(%q) = %v", tt.expr, err)
			continue
		}
		if !reflect.DeepEqual(q.selectors, tt.selectors) {
			t.Errorf("parsePromQL(%q) selectors = %+v, want %+v", tt.expr, q.selectors, tt.selectors)
		}
		var gl [][]string
		for _, g := range q.groupings {
			gl = append(gl, g.labels)
			if len(g.scope) == 0 {
				t.Errorf("parsePromQL(%q): grouping %v applies to no selector", tt.expr, g.labels)
			}
		}
		if !reflect.DeepEqual(gl, tt.groupings) {
			t.Errorf("parsePromQL(%q) groupings = %v, want %v", tt.expr, gl, tt.groupings)
		}
	}
	for _, bad := range []string{`sum(rate(a[5m])`, `a{b=}`, `{x="y"}`, `a{b="c"`} {
		if _, err := parsePromQL(bad); err == nil {
			t.Errorf("parsePromQL(%q) = nil error, want one", bad)
		}
	}
}
