package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagDocs are the pages (under docs/) that document each command's flags, by the command's
// path without "meridian"; a command not listed takes its parent's pages.
var flagDocs = map[string][]string{
	"edge":          {"edge.md"},
	"origin":        {"origin.md"},
	"control":       {"control.md"},
	"control creds": {"control.md", "security.md"},
	"dns":           {"dns.md"},
	"deploy":        {"deploy.md"},
	"purge":         {"purge.md"},
	"sim":           {"sim.md"},
}

// TestCommandFlagsDocumented: every flag of every command is named by its long name
// (`--name`) in the docs page of that command, so a flag added to a command reaches the page
// operators read. (A shorthand alone does not count: `-v` is also `go test -v`.)
func TestCommandFlagsDocumented(t *testing.T) {
	pages := map[string]string{}
	checked := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.TrimPrefix(strings.TrimPrefix(c.CommandPath(), "meridian"), " ")
		if c.Hidden || path == "completion" || strings.HasPrefix(path, "completion ") || path == "help" {
			return
		}
		var docs []string
		for p := path; p != ""; p = strings.TrimSuffix(strings.TrimRight(p, "abcdefghijklmnopqrstuvwxyz-"), " ") {
			if d, ok := flagDocs[p]; ok {
				docs = d
				break
			}
		}
		check := func(f *pflag.Flag) {
			if f.Hidden || f.Name == "help" {
				return
			}
			if docs == nil {
				t.Errorf("meridian %s has flag --%s but no docs page in flagDocs", path, f.Name)
				return
			}
			checked++
			named := regexp.MustCompile(`--` + regexp.QuoteMeta(f.Name) + `\b`)
			for _, d := range docs {
				text, ok := pages[d]
				if !ok {
					b, err := os.ReadFile(filepath.Join("docs", d))
					if err != nil {
						t.Fatal(err)
					}
					text = string(b)
					pages[d] = text
				}
				if named.MatchString(text) {
					return
				}
			}
			t.Errorf("meridian %s --%s is not named in %s", path, f.Name, strings.Join(docs, " or "))
		}
		c.LocalNonPersistentFlags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := newRoot()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		walk(c)
	}
	if checked < 50 {
		t.Fatalf("only %d flags checked: the walk misses commands", checked)
	}
}
