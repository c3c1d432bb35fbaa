package edge

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzRESTBroadcast posts bodies to the REST broadcast endpoints, batch
// (/api/broadcast) or single (/api/broadcast/{topic}/events/{event}),
// with a valid token: every answer is one of the documented statuses, and
// an error's body is JSON.
func FuzzRESTBroadcast(f *testing.F) {
	for _, s := range restSeeds {
		f.Add(true, "application/json", "", []byte(s))
	}
	f.Add(false, "application/json", "room1", []byte(`{"x":42}`))
	f.Add(false, "application/octet-stream", "room1", []byte{0, 0xff, 1})
	f.Add(false, "application/json; charset=utf-8", "ro%2Fom", []byte(`"\ud800"`))
	f.Add(false, "text/plain", "room1", []byte(`x`))
	cfg := DefaultConfig()
	cfg.NodeID = "n1"
	cfg.JWTSecret = testSecret
	cfg.MaxPayloadBytes = 1 << 10
	cfg.MaxBatchMessages = 10
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"role": "authenticated", "exp": time.Now().Add(24 * time.Hour).Unix()}).SignedString(testSecret)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, batch bool, contentType, topic string, body []byte) {
		target := "/api/broadcast"
		if !batch {
			target = "/api/broadcast/" + url.PathEscape(topic) + "/events/e?private=true"
		}
		r := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		switch w.Code {
		case http.StatusAccepted, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			return // accepted, or net/http cleaning the path ("//")
		case http.StatusNotFound, http.StatusMethodNotAllowed:
			return // net/http's routing: a topic of "/" alone makes "///"
		case http.StatusBadRequest, http.StatusUnsupportedMediaType,
			http.StatusUnprocessableEntity, http.StatusTooManyRequests:
		default:
			t.Fatalf("POST %s %q: status %d %s", target, body, w.Code, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("POST %s %q: %d with body %q", target, body, w.Code, w.Body)
		}
	})
}

var restSeeds = []string{
	`{"messages":[{"topic":"room2","event":"e","payload":{"z":1},"private":true}]}`,
	`{"messages":[{"topic":"room1","event":"cursor","payload":{"x":42},"id":"m-1"},{"topic":"room1","event":"e","payload":{}}]}`,
	`{"messages":[{"topic":"","event":"e","payload":{}}]}`,
	`{"messages":[{"topic":"t","payload":[1]}]}`,
	`{"messages":[{"topic":"t","event":"e","payload":{"a":1},"private":"true","id":{"n":1}}]}`,
	`{"messages":[]}`, `{"messages":null}`, `{}`, `[]`, "\xff",
}
