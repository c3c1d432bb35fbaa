package edge

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// --allowed-origins holds for WebSocket as for WebTransport: a page from
// another origin is refused before the upgrade, with the reason and the
// origin metric; browsers' allowed origins and non-browsers (no Origin)
// get in; without a list every origin does.
func TestWebSocketOrigin(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
	})
	origin := func(o string) http.Header { return http.Header{"Origin": {o}} }
	long := "https://" + strings.Repeat("a", 500) + ".example.com"
	refused := []struct {
		origin, body string
	}{
		{"https://evil.example.com", `{"error":"Origin not allowed: https://evil.example.com"}`},
		{"https://evilexample.org", `{"error":"Origin not allowed: https://evilexample.org"}`},
		{"http://app.example.com", `{"error":"Origin not allowed: http://app.example.com"}`},
		{long, `{"error":"Origin not allowed: ` + long[:maxQuotedOrigin] + `"}`},
	}
	for _, path := range []string{"/realtime/v1/websocket", "/socket/websocket"} {
		for _, tc := range refused {
			_, err := ts.dialHeader(t, path, "apikey=test&vsn=2.0.0", origin(tc.origin))
			var ref *upgradeRefused
			if !errors.As(err, &ref) || ref.status != http.StatusForbidden || !jsonEq([]byte(ref.body), tc.body) {
				t.Errorf("%s from %.40s: %v, want 403 %.80s", path, tc.origin, err, tc.body)
			}
		}
	}
	if v, _ := ts.metric(`meshcast_errors_total{reason="origin"}`); v != "8" {
		t.Errorf(`errors_total{reason="origin"} = %q, want 8`, v)
	}
	for _, o := range []string{"https://app.example.com", "https://APP.example.com", "https://a.b.example.org"} {
		c, err := ts.dialHeader(t, "/realtime/v1/websocket", "apikey=test&vsn=2.0.0", origin(o))
		if err != nil {
			t.Errorf("allowed origin %s: %v", o, err)
			continue
		}
		c.nc.Close()
	}
	if c, err := ts.dial(t, "/realtime/v1/websocket", "apikey=test&vsn=2.0.0"); err != nil {
		t.Errorf("no Origin (not a browser): %v", err)
	} else {
		c.nc.Close()
	}

	open := startServer(t, nil)
	if c, err := open.dialHeader(t, "/realtime/v1/websocket", "apikey=test&vsn=2.0.0", origin("https://anywhere.example")); err != nil {
		t.Errorf("no --allowed-origins: %v, want any origin allowed", err)
	} else {
		c.nc.Close()
	}
}
