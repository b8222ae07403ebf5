package fetch

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestStatusBelow100Refused: a status code below 100 ("HTTP/1.1 099 ...", three digits as the
// grammar asks, but no status: RFC 9110 §15 has them from 100 to 599) is a malformed answer,
// refused as one (a breaker failure; a 502 at the edge). http.ReadResponse reads "099" as 99:
// the HTTP/1.1 client took it for a 1xx (below 200) and handed it to the Got1xxResponse hook,
// whose WriteHeader(99) panicked in the edge's fill (a 502 carrying the origin's
// Content-Length and no body); net/http's Transport (a POST) returned it as the final answer,
// which no ResponseWriter writes either. A 600, which net/http's server writes, and a
// 1xx the edge forwards, still pass.
func TestStatusBelow100Refused(t *testing.T) {
	answers := map[string]string{
		"/099":       "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
		"/000":       "HTTP/1.1 000\r\nContent-Length: 2\r\n\r\nok",
		"/hint-050":  hint + "HTTP/1.1 050 Odd\r\nContent-Length: 2\r\n\r\nok",
		"/http10-09": "HTTP/1.0 009 Odd\r\nContent-Length: 2\r\n\r\nok",
		"/600":       "HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok",
		"/hint-200":  hint + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
	srv := answering(t, "127.0.9.1", answers)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, tt := range []struct {
			path string
			code int // 0: refused with errStatusBelow100
			n1xx int // the 1xx heads the hook sees
		}{
			{"/099", 0, 0},
			{"/000", 0, 0},
			{"/hint-050", 0, 1},
			{"/http10-09", 0, 0},
			{"/600", 600, 0},
			{"/hint-200", 200, 1},
		} {
			t.Run(fmt.Sprintf("%s%s", method, tt.path), func(t *testing.T) {
				u := New(Config{Name: "status", ResponseHeaderTimeout: 5 * time.Second})
				t.Cleanup(u.Close)
				resp, body, n1xx, err := doHostile(t, u, method, "http://"+srv.addr+tt.path, true)
				switch {
				case tt.code == 0 && !errors.Is(err, errStatusBelow100):
					t.Fatalf("%s %s: %v, %v; want %v", method, tt.path, err, resp, errStatusBelow100)
				case tt.code != 0 && (err != nil || resp.StatusCode != tt.code || body != "ok"):
					t.Fatalf("%s %s: %v, %v %q; want %d ok", method, tt.path, err, resp, body, tt.code)
				}
				if n1xx != tt.n1xx {
					t.Errorf("the hook saw %d 1xx heads, want %d", n1xx, tt.n1xx)
				}
				if st := u.Stats(); tt.code == 0 && st.Failures != 1 {
					t.Errorf("Stats() = %+v; want the malformed answer counted as 1 failure", st)
				}
			})
		}
	} // A WebSocket upgrade answered so, through UpgradeTransport: ReverseProxy's WriteHeader
	// would panic as the fill's did.
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr+"/099", nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	resp, err := Config{Name: "upgrade"}.UpgradeTransport().RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("upgrade answered by a 099: %s, want an error", resp.Status)
	}
	if !errors.Is(err, errStatusBelow100) {
		t.Errorf("upgrade answered by a 099: %v, want %v", err, errStatusBelow100)
	}
}
