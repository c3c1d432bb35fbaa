package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// --demo-todos writes to a database without auth, for make run-pg's node.
func TestDemoTodosFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--demo-todos"}, false},
		{[]string{"--demo-todos", "--database-url", "postgres://x@127.0.0.1/db", "--jwt-secret", "s"}, true},
		{[]string{"--demo-todos", "--database-url", "postgres://x@127.0.0.1/db"}, true},
	} {
		_, err := parseFlags(c.args, io.Discard)
		if (err == nil) != c.ok {
			t.Errorf("%v: error %v, want ok=%v", c.args, err, c.ok)
		}
	}
}

// The demo's table endpoint on the table make run-pg creates: it lists,
// inserts, updates and deletes rows, and takes writes only as JSON from
// its own origin (a page elsewhere cannot write to the database).
func TestDemoTable(t *testing.T) {
	pg := pgtest.Start(t)
	sql, err := os.ReadFile("../../deploy/local/todos.sql")
	if err != nil {
		t.Fatal(err)
	}
	pg.Exec(string(sql))
	d, err := newDemoTable(pg.URL(), "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ts := httptest.NewServer(d)
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	do := func(method, path, contentType, origin, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	type row struct {
		ID    int64
		Title string
		Done  bool
	}
	rows := func() []row {
		t.Helper()
		code, body := do("GET", "/demo/todos", "", "", "")
		var rs []row
		if code != 200 || json.Unmarshal([]byte(body), &rs) != nil {
			t.Fatalf("GET /demo/todos: %d %s", code, body)
		}
		return rs
	}
	if rs := rows(); len(rs) != 2 || rs[0].Title != "try meshcast" {
		t.Fatalf("the seeded rows: %+v", rs)
	}

	const js = "application/json"
	self := ts.URL // the Origin a page served by this node sends
	for _, c := range []struct {
		method, path, contentType, origin, body string
		code                                    int
	}{
		{"POST", "/demo/todos", js, self, `{"title":"from the page"}`, 201},
		{"POST", "/demo/todos", js, "", `{"title":"from curl"}`, 201},
		{"POST", "/demo/todos", "application/x-www-form-urlencoded", "", `title=form`, 415},
		{"POST", "/demo/todos", "text/plain", "", `{"title":"no-cors fetch"}`, 415},
		{"POST", "/demo/todos", js, "http://elsewhere.example", `{"title":"another site"}`, 403},
		{"DELETE", "/demo/todos/1", "", "http://elsewhere.example", ``, 403},
		{"POST", "/demo/todos", js, "", `{"title":"   "}`, 400},
		{"POST", "/demo/todos", js, "", `{"title":"` + strings.Repeat("x", 201) + `"}`, 400},
		{"PATCH", "/demo/todos/1", js, self, `{"done":true}`, 200},
		{"PATCH", "/demo/todos/1", js, self, `{}`, 400},
		{"PATCH", "/demo/todos/x", js, self, `{"done":true}`, 400},
		{"DELETE", "/demo/todos/2", "", self, ``, 200},
		{"DELETE", "/demo/todos/2", "", self, ``, 404},
	} {
		if code, body := do(c.method, c.path, c.contentType, c.origin, c.body); code != c.code {
			t.Errorf("%s %s %s origin %q %s: %d %s, want %d", c.method, c.path, c.contentType, c.origin, c.body, code, body, c.code)
		}
	}
	want := []row{{1, "try meshcast", true}, {3, "from the page", false}, {4, "from curl", false}}
	if rs := rows(); len(rs) != len(want) || rs[0] != want[0] || rs[1] != want[1] || rs[2] != want[2] {
		t.Fatalf("rows %+v, want %+v", rs, want)
	}
}
