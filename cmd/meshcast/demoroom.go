package main

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// The demo's private room (make run-pg with a JWT secret): tokens for
// names typed into the page, and the membership rows that the room's
// policy on realtime.messages reads (deploy/local/demo-private.sql). Like
// the table panel, it exists only on make run-pg's local demo node.

// demoUser is the uuid of a demo name: the sub of its tokens and the key of
// its membership rows.
func demoUser(name string) string {
	h := sha256.Sum256([]byte("meshcast-demo:" + name))
	x := hex.EncodeToString(h[:16])
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

func demoName(w http.ResponseWriter, name string) (string, bool) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > 40 {
		demoError(w, http.StatusBadRequest, "a name is 1 to 40 characters")
		return "", false
	}
	return name, true
}

// token answers a day's JWT of role authenticated for ?user=name; 204
// (no error in the page's console) on a node without a secret.
func (d *demoTable) token(w http.ResponseWriter, r *http.Request) {
	if d.secret == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	name, ok := demoName(w, r.URL.Query().Get("user"))
	if !ok {
		return
	}
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"role": "authenticated", "sub": demoUser(name),
		"name": name, "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()}).SignedString(d.secret)
	if err != nil {
		demoError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"token":"` + tok + `"}`))
}

// membership adds ({"user","room","member":true}) or removes a member of
// a demo room.
func (d *demoTable) membership(w http.ResponseWriter, r *http.Request) {
	var body struct {
		User, Room string
		Member     bool
	}
	if !readDemoBody(w, r, &body) {
		return
	}
	name, ok := demoName(w, body.User)
	if !ok {
		return
	}
	sql := "INSERT INTO room_members VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 'true'"
	if !body.Member {
		sql = "DELETE FROM room_members WHERE user_id = $1 AND room = $2 RETURNING 'false'"
	}
	var out []byte
	if err := d.query(r, sql, []any{demoUser(name), body.Room}, &out); err != nil && !strings.Contains(err.Error(), "no rows") {
		demoError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"ok":true}`))
}
