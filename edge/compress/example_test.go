package compress_test

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/meridian-cdn/meridian/edge/compress"
)

func ExampleTransform() {
	h := http.Header{}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("ETag", `"v1"`)
	h.Set("Vary", "Origin")
	body := []byte(strings.Repeat("<p>hello, edge</p>\n", 200))

	if compress.ShouldCompress(http.StatusOK, h, int64(len(body)), 0, nil) {
		out, enc, err := compress.Transform(h, body, "gzip", 0)
		if err != nil {
			panic(err)
		}
		// The tag ends in this build's encoder mark, which depends on the libraries' versions.
		tag := strings.TrimSuffix(out.Get("ETag"), compress.Mark()+`"`)
		fmt.Println(out.Get("Content-Encoding"), tag, out.Get("Vary"), len(enc) < len(body)/10)
	}
	// Output: gzip "v1-gzip. Origin, Accept-Encoding true
}
