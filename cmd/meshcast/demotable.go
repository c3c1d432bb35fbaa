package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// demoTable is the HTTP side of the demo page's live table panel under
// make run-pg (--demo-todos): it lists the rows of the throwaway
// database's todos table and inserts, updates and deletes them for the
// page. The page never shows what these requests return: it shows the
// rows as they come back through postgres_changes, in every open tab, as
// a psql INSERT does. It writes to the database with the URL's user and
// without auth, so it exists only on the open demo node run-pg starts.
type demoTable struct {
	pool   *pgxpool.Pool
	mux    *http.ServeMux
	secret []byte // the node's JWT secret: the private room's tokens (demoroom.go); nil: none
}

const (
	demoTablePath = "/demo/todos"
	// demoTableRows is how many of the newest rows a listing returns.
	demoTableRows = 100
	// demoTitleMax bounds a title, in characters.
	demoTitleMax = 200
)

func newDemoTable(dbURL, secret string, log *slog.Logger) (*demoTable, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	d := &demoTable{pool: pool, mux: http.NewServeMux()}
	d.mux.HandleFunc("GET "+demoTablePath+"/token", d.token) // 204 without a secret
	if secret != "" {
		d.secret = []byte(secret)
		d.mux.HandleFunc("POST "+demoTablePath+"/members", d.membership)
		log.Warn("demo private room on: /demo/todos/token signs a token for any name, /demo/todos/members makes anyone a member (make run-pg only)")
	}
	d.mux.HandleFunc("GET "+demoTablePath, d.list)
	d.mux.HandleFunc("POST "+demoTablePath, d.insert)
	d.mux.HandleFunc("PATCH "+demoTablePath+"/{id}", d.update)
	d.mux.HandleFunc("DELETE "+demoTablePath+"/{id}", d.remove)
	log.Warn("demo table panel on: " + demoTablePath + " lists, inserts, updates and deletes rows of table todos of --database-url, without auth (make run-pg only)")
	return d, nil
}

func (d *demoTable) close() { d.pool.Close() }

func (d *demoTable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Only the demo page, on this node's origin, may write: a write must
	// be JSON (a cross-origin page cannot send that without a preflight,
	// which is never answered) and an Origin, when sent, must be ours.
	if r.Method != http.MethodGet {
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			demoError(w, http.StatusForbidden, "writes come from the demo page only")
			return
		}
		if r.Method != http.MethodDelete {
			if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
				demoError(w, http.StatusUnsupportedMediaType, "send application/json")
				return
			}
		}
	}
	d.mux.ServeHTTP(w, r)
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host == host
}

// list answers the newest rows, oldest first, each as to_jsonb gives it:
// the same values the rows' changes carry.
func (d *demoTable) list(w http.ResponseWriter, r *http.Request) {
	var rows []byte
	err := d.query(r, `SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]')::text
		FROM (SELECT * FROM todos ORDER BY id DESC LIMIT $1) t`, []any{demoTableRows}, &rows)
	if err != nil {
		demoError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(rows)
}

func (d *demoTable) insert(w http.ResponseWriter, r *http.Request) {
	var body struct{ Title string }
	if !readDemoBody(w, r, &body) {
		return
	}
	title := strings.TrimSpace(body.Title)
	if title == "" || utf8.RuneCountInString(title) > demoTitleMax {
		demoError(w, http.StatusBadRequest, "a title is 1 to "+strconv.Itoa(demoTitleMax)+" characters")
		return
	}
	d.write(w, r, http.StatusCreated, "INSERT INTO todos (title) VALUES ($1) RETURNING to_jsonb(todos)::text", title)
}

func (d *demoTable) update(w http.ResponseWriter, r *http.Request) {
	id, ok := demoID(w, r)
	var body struct{ Done *bool }
	if !ok || !readDemoBody(w, r, &body) {
		return
	}
	if body.Done == nil {
		demoError(w, http.StatusBadRequest, `send {"done": true|false}`)
		return
	}
	d.write(w, r, http.StatusOK, "UPDATE todos SET done = $2 WHERE id = $1 RETURNING to_jsonb(todos)::text", id, *body.Done)
}

func (d *demoTable) remove(w http.ResponseWriter, r *http.Request) {
	id, ok := demoID(w, r)
	if ok {
		d.write(w, r, http.StatusOK, "DELETE FROM todos WHERE id = $1 RETURNING to_jsonb(todos)::text", id)
	}
}

// write runs a statement returning the row it wrote, and answers that row
// with status, or 404 when there was none.
func (d *demoTable) write(w http.ResponseWriter, r *http.Request, status int, sql string, args ...any) {
	var row []byte
	switch err := d.query(r, sql, args, &row); {
	case errors.Is(err, pgx.ErrNoRows):
		demoError(w, http.StatusNotFound, "no such row")
	case err != nil:
		demoError(w, http.StatusInternalServerError, err.Error())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(row)
	}
}

func (d *demoTable) query(r *http.Request, sql string, args []any, dst *[]byte) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var s string
	err := d.pool.QueryRow(ctx, sql, args...).Scan(&s)
	*dst = []byte(s)
	return err
}

func readDemoBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(v); err != nil {
		demoError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return false
	}
	return true
}

func demoID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		demoError(w, http.StatusBadRequest, "the id is a number")
	}
	return id, err == nil
}

func demoError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
