package mesh

import (
	"bytes"
	"log/slog"

	"github.com/VictoriaMetrics/metrics"
)

// gossipEvents is memberlist's log output. memberlist has no callback for
// its failure detector's steps (a member suspected, a suspicion timing
// out, an accusation of this node refuted) and reports them only in log
// lines, so this writer counts those lines as metrics and logs them at
// info or warn; everything else memberlist says goes to the debug log.
// The texts are memberlist v0.7.0's; TestGossipEventsCounted fails if an
// upgrade changes them.
type gossipEvents struct {
	log     *slog.Logger // memberlist's own lines, at debug
	limited *slog.Logger // the failure detector's, rate-limited

	suspicions     *metrics.Counter
	declaredDead   *metrics.Counter
	refutedSuspect *metrics.Counter
	refutedDead    *metrics.Counter
}

func newGossipEvents(set *metrics.Set, log, limited *slog.Logger) *gossipEvents {
	return &gossipEvents{
		log:            log.With("component", "memberlist"),
		limited:        limited.With("component", "memberlist"),
		suspicions:     set.NewCounter("meshcast_gossip_suspicions_total"),
		declaredDead:   set.NewCounter("meshcast_gossip_declared_dead_total"),
		refutedSuspect: set.NewCounter(`meshcast_gossip_refuted_total{accusation="suspect"}`),
		refutedDead:    set.NewCounter(`meshcast_gossip_refuted_total{accusation="dead"}`),
	}
}

var (
	mlSuspect       = []byte("memberlist: Suspect ")
	mlSuspectEnd    = []byte(" has failed, no acks received")
	mlMarkDead      = []byte("memberlist: Marking ")
	mlMarkDeadEnd   = []byte(" as failed, suspect timeout reached")
	mlRefuteSuspect = []byte("memberlist: Refuting a suspect message")
	mlRefuteDead    = []byte("memberlist: Refuting a dead message")
)

// Write takes one line of memberlist's log.Logger.
func (g *gossipEvents) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	switch {
	case bytes.Contains(line, mlSuspect) && bytes.Contains(line, mlSuspectEnd):
		g.suspicions.Inc()
		g.limited.Info("gossip: member suspected (no answer to a probe)", "member", between(line, mlSuspect, mlSuspectEnd))
	case bytes.Contains(line, mlMarkDead) && bytes.Contains(line, mlMarkDeadEnd):
		g.declaredDead.Inc()
		g.limited.Info("gossip: member declared dead (suspicion not refuted)", "member", between(line, mlMarkDead, mlMarkDeadEnd))
	case bytes.Contains(line, mlRefuteSuspect):
		g.refutedSuspect.Inc()
		g.limited.Warn("gossip: another node suspected this one; refuted (is this node or its network overloaded?)", "line", string(line))
	case bytes.Contains(line, mlRefuteDead):
		g.refutedDead.Inc()
		g.limited.Warn("gossip: another node declared this one dead; refuted, the cluster re-adds it", "line", string(line))
	default:
		g.log.Debug(string(line))
	}
	return len(p), nil
}

// between returns what lies between the first a and the following b.
func between(line, a, b []byte) string {
	i := bytes.Index(line, a)
	rest := line[i+len(a):]
	if j := bytes.Index(rest, b); j >= 0 {
		rest = rest[:j]
	}
	return string(rest)
}
