package deploy

import (
	"os"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// TestDockerfileParses reads deploy/Dockerfile with BuildKit's own parser, as `docker build`
// does: two stages, a static build and an empty final image. A line continuation in the wrong
// place (a RUN ending in `\` swallowing `FROM scratch`) shows up here as a missing stage.
func TestDockerfileParses(t *testing.T) {
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile line %d: %s", w.Location.Start.Line, w.Short)
	}
	var froms []string
	var runs, last []string
	for _, n := range res.AST.Children {
		switch strings.ToLower(n.Value) {
		case "from":
			froms = append(froms, n.Next.Value)
			last = nil
		case "run":
			runs = append(runs, n.Original)
		}
		last = append(last, strings.ToLower(n.Value))
	}
	if len(froms) != 2 || froms[1] != "scratch" {
		t.Fatalf("Dockerfile stages FROM %q, want a build stage then scratch", froms)
	}
	for _, r := range runs {
		if strings.Contains(strings.ToLower(r), "from ") {
			t.Errorf("RUN swallowed a FROM line: %q", r)
		}
		if strings.Contains(r, "go build") && !strings.Contains(r, "CGO_ENABLED=0") {
			t.Errorf("build step %q is not static (CGO_ENABLED=0)", r)
		}
	}
	want := map[string]bool{"copy": true, "user": true, "entrypoint": true}
	for _, k := range last {
		delete(want, k)
	}
	if len(want) > 0 {
		t.Errorf("final stage lacks %v (has %v)", want, last)
	}
}
