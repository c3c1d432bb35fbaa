package edge

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/meshcast/meshcast/wire/phx"
)

// restBodyLimit bounds REST bodies when MaxFrameBytes is off.
const restBodyLimit = 64 << 20

func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Headers", "apikey, authorization, content-type, x-client-info")
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
}

func serveCORSPreflight(w http.ResponseWriter, r *http.Request) {
	setCORS(w.Header())
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func jsonMessage(msg string) string {
	return `{"message":` + string(phx.AppendString(nil, msg)) + `}`
}

// restAuth authenticates a REST request as Supabase does: the bearer
// token, else the apikey header.
func (s *Server) restAuth(r *http.Request) (*claims, bool) {
	if s.auth.open() {
		return openClaims, true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		tok = r.Header.Get("apikey")
	}
	c, err := s.auth.verify(tok)
	return c, err == nil
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := int64(s.cfg.MaxFrameBytes)
	if limit <= 0 {
		limit = restBodyLimit
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

type restMessage struct {
	Topic   string          `json:"topic"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
	Private phx.Flag        `json:"private"`
	ID      json.RawMessage `json:"id"`
}

// serveBatchBroadcast is POST /api/broadcast: {"messages":[...]}. It is
// what realtime-js's send() falls back to on a channel that isn't joined.
func (s *Server) serveBatchBroadcast(w http.ResponseWriter, r *http.Request) {
	setCORS(w.Header())
	cl, ok := s.restAuth(r)
	if !ok {
		s.metrics.errorReason("unauthorized")
		writeJSON(w, http.StatusUnauthorized, jsonMessage("Unauthorized"))
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.restTooLarge(w, err)
		return
	}
	if !utf8.Valid(body) {
		s.badUTF8(w)
		return
	}
	var req struct {
		Messages []restMessage `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Messages == nil {
		s.metrics.errorReason("bad_request")
		writeJSON(w, http.StatusUnprocessableEntity, `{"errors":{"messages":["can't be blank"]}}`)
		return
	}
	if max := s.cfg.MaxBatchMessages; max > 0 && len(req.Messages) > max {
		s.metrics.errorReason("rate_limited")
		writeJSON(w, http.StatusTooManyRequests, jsonMessage("Too many messages to broadcast, please reduce the batch size"))
		return
	}
	for _, m := range req.Messages {
		if m.Topic == "" || !phx.IsObject(m.Payload) {
			s.metrics.errorReason("bad_request")
			writeJSON(w, http.StatusUnprocessableEntity, `{"errors":{"messages":["each message needs a topic and an object payload"]}}`)
			return
		}
		if max := s.cfg.MaxPayloadBytes; max > 0 && len(m.Payload) > max {
			s.metrics.errorReason("payload_too_large")
			writeJSON(w, http.StatusUnprocessableEntity, `{"errors":{"messages":["Payload size exceeds tenant limit"]}}`)
			return
		}
	}
	if !s.rest.allow(r.RemoteAddr, len(req.Messages)) {
		s.restRateLimited(w)
		return
	}
	denied := s.restDenied(r, cl, req.Messages)
	for _, m := range req.Messages {
		if bool(m.Private) && denied[m.Topic] {
			continue // dropped without a word, as Supabase drops them
		}
		var meta []byte
		if len(m.ID) > 0 && string(m.ID) != "null" {
			meta = append(append([]byte(`{"id":`), compactJSON(m.ID)...), '}')
		}
		s.restPublish(m.Topic, bool(m.Private), &outMsg{event: m.Event, data: compactJSON(m.Payload), enc: phx.EncJSON, meta: meta})
	}
	w.WriteHeader(http.StatusAccepted)
}

// serveSingleBroadcast is POST /api/broadcast/{topic}/events/{event}, the
// endpoint of realtime-js's channel.httpSend(). The body is the payload:
// JSON, or raw bytes with application/octet-stream.
func (s *Server) serveSingleBroadcast(w http.ResponseWriter, r *http.Request) {
	setCORS(w.Header())
	cl, ok := s.restAuth(r)
	if !ok {
		s.metrics.errorReason("unauthorized")
		writeJSON(w, http.StatusUnauthorized, jsonMessage("Unauthorized"))
		return
	}
	enc := phx.EncJSON
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json", "":
	case "application/octet-stream":
		enc = phx.EncBytes
	default:
		writeJSON(w, http.StatusUnsupportedMediaType, `{"error":"Unsupported Media Type. Use application/json or application/octet-stream"}`)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.restTooLarge(w, err)
		return
	}
	if max := s.cfg.MaxPayloadBytes; max > 0 && len(body) > max {
		s.restTooLarge(w, nil)
		return
	}
	topic, event := r.PathValue("topic"), r.PathValue("event")
	if !utf8.ValidString(topic) || !utf8.ValidString(event) || (enc == phx.EncJSON && !utf8.Valid(body)) {
		s.badUTF8(w)
		return
	}
	if enc == phx.EncJSON {
		if !json.Valid(body) {
			writeJSON(w, http.StatusUnprocessableEntity, `{"error":"payload is not valid JSON"}`)
			return
		}
		body = compactJSON(body)
	}
	private := r.URL.Query().Get("private") == "true"
	if private && !s.auth.open() {
		allowed, err := s.check(r.Context(), true, identity(cl, headersJSON(r.Header, "")), topic, ExtBroadcast)
		if rf := decideRESTWrite(allowed, err, true); rf != nil {
			s.restRefused(w, r, topic, rf)
			return
		}
	}
	if !s.rest.allow(r.RemoteAddr, 1) {
		s.restRateLimited(w)
		return
	}
	s.restPublish(topic, private, &outMsg{event: event, data: body, enc: enc, binary: true})
	w.WriteHeader(http.StatusAccepted)
}

// restRateLimited refuses a request over --rest-events-per-sec.
func (s *Server) restRateLimited(w http.ResponseWriter) {
	s.metrics.errorReason("rate_limited")
	writeJSON(w, http.StatusTooManyRequests, jsonMessage("Too many messages per second"))
}

// badUTF8 refuses a request whose JSON or path is not UTF-8: relayed in a
// text frame it would make every subscriber's client fail its connection.
func (s *Server) badUTF8(w http.ResponseWriter) {
	s.metrics.errorReason("bad_request")
	writeJSON(w, http.StatusBadRequest, jsonMessage("Request is not valid UTF-8"))
}

func (s *Server) restTooLarge(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	if err != nil && !errors.As(err, &mbe) {
		writeJSON(w, http.StatusBadRequest, jsonMessage("could not read body"))
		return
	}
	s.metrics.errorReason("payload_too_large")
	writeJSON(w, http.StatusUnprocessableEntity, `{"errors":{"messages":["Payload size exceeds tenant limit"]}}`)
}

// restPublish delivers one REST message (private ones are authorized).
func (s *Server) restPublish(topic string, private bool, m *outMsg) {
	m.topic = topicPrefix + topic
	s.metrics.restBroadcasts.Inc()
	k := topicKey{name: m.topic, private: private}
	s.publish(k, s.hub.lookup(k), m, nil)
}

// restDenied asks the policy, once per private topic of a batch and all
// at once, whether the request's JWT may write broadcasts there, and
// returns the topics it may not.
func (s *Server) restDenied(r *http.Request, cl *claims, msgs []restMessage) map[string]bool {
	if s.auth.open() {
		return nil
	}
	var topics []string
	seen := map[string]bool{}
	for _, m := range msgs {
		if bool(m.Private) && !seen[m.Topic] {
			seen[m.Topic] = true
			topics = append(topics, m.Topic)
		}
	}
	if len(topics) == 0 {
		return nil
	}
	id := identity(cl, headersJSON(r.Header, ""))
	refused := make([]*refusal, len(topics))
	decide := func(i int) {
		allowed, err := s.check(r.Context(), true, id, topics[i], ExtBroadcast)
		refused[i] = decideRESTWrite(allowed, err, false)
	}
	if !s.policyBlocks {
		for i := range topics {
			decide(i)
		}
	} else {
		// Asked together, so that a batching policy answers them in few
		// round trips; at most restChecks at once.
		var wg sync.WaitGroup
		sem := make(chan struct{}, restChecks)
		for i := range topics {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer wg.Done(); decide(i); <-sem }()
		}
		wg.Wait()
	}
	denied := map[string]bool{}
	for i, rf := range refused {
		if rf != nil {
			denied[topics[i]] = true
			s.restRefusalSeen(r, topics[i], rf)
		}
	}
	return denied
}

// restChecks bounds the policy checks one REST batch has in flight.
const restChecks = 64

// restRefused answers a refused REST request.
func (s *Server) restRefused(w http.ResponseWriter, r *http.Request, topic string, rf *refusal) {
	s.restRefusalSeen(r, topic, rf)
	writeJSON(w, rf.status, jsonMessage(rf.text))
}

// restRefusalSeen counts and logs a REST refusal.
func (s *Server) restRefusalSeen(r *http.Request, topic string, rf *refusal) {
	if rf.metric != "" {
		s.metrics.errorReason(rf.metric)
	}
	if rf.logCode != "" {
		s.logLimited.Warn("channel policy failed", "code", rf.logCode, "topic", topicPrefix+topic, "remote", r.RemoteAddr, "err", rf.cause)
	}
}
