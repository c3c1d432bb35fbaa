// Package phx encodes and decodes the Phoenix Channels frames that
// @supabase/realtime-js speaks: the vsn=1.0.0 JSON object serializer, the
// vsn=2.0.0 JSON array serializer, and the v2 binary user-broadcast frames
// (kind 3 from the client, kind 4 to the client).
//
// It is pure code: no I/O, no goroutines, no knowledge of nodes or sockets.
// Decoders never trust lengths and return errors for anything malformed;
// encoders append to a caller-owned buffer so that a frame that goes to many
// subscribers is encoded once.
package phx
