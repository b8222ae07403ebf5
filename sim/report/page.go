package report

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/net/html"
)

// PlotIDs are the ids of the page's plots, in page order.
var PlotIDs = []string{PlotLatencyCDF, PlotHitRatio, PlotOrigin, PlotPurge, PlotRouting, PlotSaturation, PlotShed, PlotLatencyGain}

// CheckPage reads a report.html back, as a reader of the file would see it: the page must
// parse, load nothing from outside (no scripts, frames or links; images are data URLs) and
// hold every plot as a well-formed inline SVG image that draws something. It returns, per
// plot id, how many SVG paths the plot draws, and every problem found.
func CheckPage(page []byte) (map[string]int, error) {
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		return nil, fmt.Errorf("report.html does not parse: %w", err)
	}
	var errs []error
	figures := map[string]*html.Node{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script", "link", "iframe", "object":
				errs = append(errs, fmt.Errorf("report.html has a <%s> element; it must be self-contained", n.Data))
			}
			for _, a := range n.Attr {
				if a.Key == "id" {
					figures[a.Val] = n
				}
				if (a.Key == "src" || a.Key == "href") && !strings.HasPrefix(a.Val, "data:") {
					errs = append(errs, fmt.Errorf("<%s %s=%q> loads an outside resource", n.Data, a.Key, a.Val))
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	counts := map[string]int{}
	for _, id := range PlotIDs {
		paths, err := plotPaths(figures[id], id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		counts[id] = paths
	}
	return counts, errors.Join(errs...)
}

// plotPaths checks the figure of plot id and counts the paths its SVG image draws.
func plotPaths(fig *html.Node, id string) (int, error) {
	if fig == nil {
		return 0, fmt.Errorf("report.html has no element with id %q", id)
	}
	img := find(fig, "img")
	if img == nil {
		return 0, fmt.Errorf("#%s has no <img>", id)
	}
	src := attr(img, "src")
	b64, ok := strings.CutPrefix(src, "data:image/svg+xml;base64,")
	if !ok {
		return 0, fmt.Errorf("#%s img src starts %.40q, want an inline SVG data URL", id, src)
	}
	svg, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return 0, fmt.Errorf("#%s image is not base64: %w", id, err)
	}
	paths, err := countSVG(svg)
	if err != nil {
		return 0, fmt.Errorf("#%s image is not well-formed SVG: %w", id, err)
	}
	if paths < 1 {
		return 0, fmt.Errorf("#%s SVG draws nothing", id)
	}
	return paths, nil
}

func find(n *html.Node, tag string) *html.Node {
	if n.Type == html.ElementNode && n.Data == tag {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if f := find(c, tag); f != nil {
			return f
		}
	}
	return nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// countSVG checks the SVG is well-formed XML with an <svg> root and counts its <path>s.
func countSVG(data []byte) (int, error) {
	dec := xml.NewDecoder(bytes.NewReader(data))
	paths, root := 0, ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "path" {
				paths++
			}
		}
	}
	if root != "svg" {
		return 0, fmt.Errorf("root element is %q, want svg", root)
	}
	return paths, nil
}
