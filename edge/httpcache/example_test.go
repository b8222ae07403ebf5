package httpcache_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

func ExampleResponsePolicy() {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	resp := http.Header{}
	resp.Set("Cache-Control", "no-cache")
	resp.Set("CDN-Cache-Control", "max-age=300, stale-while-revalidate=60")
	resp.Set("Vary", "Accept-Encoding")
	p := httpcache.ResponsePolicy("GET", http.Header{}, 200, resp, now)
	fmt.Println(p.Storable, p.Lifetime, p.StaleWhileRevalidate, p.Vary, p.Target)
	// Output: true 5m0s 1m0s [accept-encoding] CDN-Cache-Control
}

func ExampleKey() {
	opts := httpcache.KeyOptions{KeepParams: []string{"page", "id"}}
	fmt.Println(httpcache.Key("WWW.Example.com:443", "/%7Euser/list", "utm_source=x&page=2&id=7", opts))
	// Output: www.example.com/~user/list?id=7&page=2
}

func ExampleAppendStatus() {
	s := httpcache.Status{Cache: "meridian-lon-1", Fwd: "miss", FwdStatus: 200, Stored: true, Detail: "shield"}
	fmt.Println(httpcache.AppendStatus("meridian-fra-1; fwd=uri-miss; fwd-status=200; stored", s))
	// Output: meridian-fra-1; fwd=uri-miss; fwd-status=200; stored, meridian-lon-1; fwd=miss; fwd-status=200; stored; detail=shield
}
