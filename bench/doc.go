// Package bench generates load against meshcast (and Centrifugo) from the
// outside, the way users would: clients over WebSocket or WebTransport,
// publishers and subscribers in one process, so that the time a publisher
// stamps into each payload can be compared with the subscriber's clock.
// cmd/meshbench is its command line.
//
// One runner (run.go) carries every scenario through the same phases:
// connect the subscribers at a rate, publish on a schedule or within a
// window of outstanding deliveries, drain, collect what each subscriber
// counted. A scenario says what a connection joins, what a subscriber
// counts and what is published:
//
//	fanout.go     Run: N subscribers, one publisher, against a running server
//	              (target.go: meshcast or Centrifugo; result.go)
//	regions.go    RunRegions: clients placed in regions, latency per region pair
//	              (broadcast.go: fanout and rooms; presence.go; connect.go;
//	              local.go: the cluster on an emulated WAN)
//	wal.go        RunWAL: Postgres changes from writers to subscribers
//	detect.go     RunDetect: kill -9 → presence leave; false deaths under load
//	slow.go       RunSlow: one slow subscriber's effect on the others
//	soak.go       RunSoak: a cluster under mixed load, growth bounded
//
// The parts they share are packages of their own: client (connections,
// holders that read thousands of them, Phoenix frames from wire/phx),
// cluster (meshcast processes, Postgres, /metrics), measure (payload,
// histogram, /proc) and report (text, JSON, HTML, tables).
package bench
