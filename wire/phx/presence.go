package phx

import (
	"bytes"
	"encoding/json"
)

// AppendPresenceMeta appends one presence meta: the user's JSON object with
// phx_ref (and phx_ref_prev when prevRef is set) added. The refs go last, so
// a user field of the same name cannot override them (JSON.parse keeps the
// last duplicate). meta must be a JSON object; anything else becomes {}.
// It is checked here, not trusted: metas also come from other nodes, and
// one that is not JSON would make every client of the topic fail to parse
// its presence_state.
func AppendPresenceMeta(dst, meta []byte, ref, prevRef string) []byte {
	meta = bytes.TrimSpace(meta)
	body := []byte(nil)
	if len(meta) >= 2 && meta[0] == '{' && meta[len(meta)-1] == '}' && json.Valid(meta) {
		body = bytes.TrimSpace(meta[1 : len(meta)-1])
	}
	dst = append(dst, '{')
	if len(body) > 0 {
		dst = append(dst, body...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"phx_ref":`...)
	dst = AppendString(dst, ref)
	if prevRef != "" {
		dst = append(dst, `,"phx_ref_prev":`...)
		dst = AppendString(dst, prevRef)
	}
	return append(dst, '}')
}
