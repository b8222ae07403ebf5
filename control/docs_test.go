package control

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocumentedCurlSendsJSON: every curl command in the docs that sends a body to the API
// says it is JSON (-H 'Content-Type: application/json', or --json). curl -d labels a body
// application/x-www-form-urlencoded, which the API refuses with 415 (DecodeJSON), so an
// operator who copied a documented purge or host PUT got a 415 and nothing done.
func TestDocumentedCurlSendsJSON(t *testing.T) {
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	sendsBody := regexp.MustCompile(`(^|\s)(-d|--data|--data-binary|--data-raw|--data-urlencode)(\s|=)`)
	found := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// One command per line once continuation lines are joined.
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for i, line := range strings.Split(text, "\n") {
			if !strings.Contains(line, "curl ") || !sendsBody.MatchString(line) || !strings.Contains(line, "/v1/") {
				continue
			}
			found++
			if !strings.Contains(line, "Content-Type: application/json") && !strings.Contains(line, "--json") {
				t.Errorf("%s (command %d): curl sends a body without a JSON content type (the API answers 415): %s",
					filepath.Base(f), i+1, strings.TrimSpace(line))
			}
		}
	}
	if found == 0 {
		t.Fatal("no curl command with a body found in the docs: the test reads the wrong files")
	}
}
