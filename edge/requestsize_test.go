package edge

import (
	"testing"
	"unsafe"
)

// TestRequestSizeClass: a request's state is allocated for each request on a connection that
// keeps none for its handler (HTTP/2, HTTP/3; edge/http1 reuses one), so it stays within Go's
// 512-byte size class, the next being 576: a field added after needSeq instead of in padding
// (untrustedAnswer) cost every such hit 64 bytes (BenchmarkHit: 580 to 645 B/op).
func TestRequestSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(request{}); size > 512 {
		t.Errorf("request is %d bytes, over its 512-byte size class: put a new field in padding, or say why it must grow", size)
	}
}
