// Package bench generates load against meshcast and comparable realtime
// servers from the outside, over WebSocket, the way users would: N
// subscribers and one publisher in one process, so the timestamp the publisher
// writes into each payload can be compared with the subscriber's clock.
//
// Run executes one benchmark (throughput, fixed-rate latency, or idle
// memory per connection) against the Phoenix v2 / Supabase Realtime protocol
// (meshcast) or Centrifugo's JSON protocol, and returns a Result. The pieces
// it is built from are usable alone: the payload codec (AppendPayload,
// ParseSample), the frame codecs (AppendKind3, ParseKind4, AppendPhxBroadcast,
// AppendCentPublish, …), a lock-free log-linear Histogram, and /proc readers.
//
// The client side is built to cost little CPU, because on a small machine it
// shares the cores with the server: one goroutine per subscriber reads frames
// into a reused buffer, and neither the publisher nor a subscriber allocates
// per message.
package bench
