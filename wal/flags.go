package wal

import (
	"flag"

	"github.com/meshcast/meshcast/internal/flagx"
)

// RegisterFlags registers the command-line flags of r's settings in fs,
// with r's values as their defaults. On the command line 0 turns a limit
// off (the field becomes -1, no bound), as in edge. URL, Handler, Logger
// and Metrics are the command's to set.
func (r *Reader) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&r.Publication, "publication", r.Publication, "Postgres changes: publication whose tables are streamed (created FOR ALL TABLES when missing)")
	fs.StringVar(&r.Slot, "replication-slot", r.Slot, "Postgres changes: permanent logical replication slot (created when missing)")
	flagx.Limit(fs, &r.MaxSlotLag, "max-slot-lag", "Postgres changes: bytes of WAL the slot may hold back for unacknowledged changes before they are confirmed anyway (logged) (0 = off)")
	flagx.Limit(fs, &r.TxMemory, "wal-tx-memory", "Postgres changes: bytes of decoded changes the reading node holds in memory for transactions not yet routed; a transaction's changes past it wait in a temporary file in --wal-spill-dir, and the reader pauses while half of it is taken (0 = off)")
	fs.StringVar(&r.SpillDir, "wal-spill-dir", r.SpillDir, "Postgres changes: directory of the temporary files of transactions larger than --wal-tx-memory (unlinked at once, gone with the process; default $TMPDIR or /tmp)")
}
