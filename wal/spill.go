package wal

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// Bounded memory per transaction. Postgres hands a transaction to the
// reader only once it committed, whole, however large: a backfill of
// millions of rows arrives as one. The reader holds the transactions it
// read until its Handler releases them, within a budget (Reader.TxMemory)
// shared by the transaction being read and those handed over:
//
//   - a change no subscription matches is dropped as it is read
//     (Reader.Keep), and costs nothing but its decoding;
//   - a change that does not fit the budget goes to a temporary file, with
//     every later change of its transaction (order is kept), and Range
//     reads them back in chunks when the transaction is routed;
//   - the reader starts no new transaction while the unreleased ones hold
//     half the budget, or number maxOpenTx: a Handler that falls behind
//     (its subscribers are slow) paces the reader, which keeps reporting
//     its position meanwhile, so Postgres keeps the connection.

// maxOpenTx bounds the transactions handed to the Handler and not
// released.
const maxOpenTx = 256

// txBudget is what a Reader's transactions hold until they are released.
// The reader's goroutine reserves; any goroutine releases.
type txBudget struct {
	limit int64        // bytes of changes in memory; <= 0: no bound
	held  atomic.Int64 // bytes of changes in memory, read and not released
	open  atomic.Int64 // transactions handed over and not released
	freed chan struct{}
}

func newTxBudget(limit int64) *txBudget {
	return &txBudget{limit: limit, freed: make(chan struct{}, 1)}
}

// reserve takes n bytes of the budget if they fit.
func (b *txBudget) reserve(n int64) bool {
	if b == nil {
		return true
	}
	for {
		held := b.held.Load()
		if b.limit > 0 && held+n > b.limit {
			return false
		}
		if b.held.CompareAndSwap(held, held+n) {
			return true
		}
	}
}

func (b *txBudget) release(n int64, open bool) {
	if b == nil {
		return
	}
	b.held.Add(-n)
	if open {
		b.open.Add(-1)
	}
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// mayRead is the reader's pacing rule: it starts reading another
// transaction only while those handed over and not released hold less
// than half the budget and number fewer than maxOpenTx. Half: the next
// transaction has the other half before it spills, so a Handler that
// keeps up never makes a small transaction go to disk.
func (b *txBudget) mayRead() bool {
	if b == nil {
		return true
	}
	return b.open.Load() < maxOpenTx && (b.limit <= 0 || b.held.Load() < b.limit/2)
}

// txHold is what a transaction holds until Release.
type txHold struct {
	budget   *txBudget
	mem      int64 // bytes of Changes reserved in budget
	open     bool  // handed to the Handler: counted in budget.open
	spill    *spillFile
	xid      uint32
	skipped  int // changes Keep left out
	released atomic.Bool
}

// Len returns the number of changes tx carries: those in Changes and
// those waiting in its file.
func (tx *Transaction) Len() int {
	n := len(tx.Changes)
	if tx.hold != nil && tx.hold.spill != nil {
		n += tx.hold.spill.n
	}
	return n
}

// Release gives back what tx holds: its share of the reader's memory
// budget and its file. The Handler calls it once done with tx (HandlerFunc
// does when its function returns); the reader starts no new transaction
// while too much is held. Changes stay usable; Range cannot read spilled
// changes after it. Release may be called more than once.
func (tx *Transaction) Release() {
	h := tx.hold
	if h == nil || !h.released.CompareAndSwap(false, true) {
		return
	}
	if h.spill != nil {
		h.spill.close()
	}
	h.budget.release(h.mem, h.open)
}

// Range calls f with tx's changes in order, in chunks of at most
// maxChanges changes and about maxBytes (a single larger change is a
// chunk of its own): first those in Changes, then those read back from
// its file. f must not keep or modify a chunk's slice; it may keep the
// changes. Range stops at f's first error and returns it.
func (tx *Transaction) Range(maxChanges int, maxBytes int64, f func([]*Change) error) error {
	start, size := 0, int64(0)
	for i, c := range tx.Changes {
		n := c.memSize()
		if i > start && (i-start >= maxChanges || size+n > maxBytes) {
			if err := f(tx.Changes[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	if start < len(tx.Changes) {
		if err := f(tx.Changes[start:]); err != nil {
			return err
		}
	}
	if tx.hold == nil || tx.hold.spill == nil {
		return nil
	}
	if tx.hold.released.Load() {
		return errors.New("wal: Range of a released transaction")
	}
	return tx.hold.spill.each(maxChanges, maxBytes, func(chunk []*Change) error {
		for _, c := range chunk {
			c.LSN, c.CommitTime, c.xid = tx.LSN, tx.CommitTime, tx.hold.xid
		}
		return f(chunk)
	})
}

// memSize estimates the memory a decoded change takes: its values, the
// row slices, the struct and its place in a slice.
func (c *Change) memSize() int64 {
	n := int64(200)
	for _, row := range [2][]json.RawMessage{c.Record, c.OldRecord} {
		n += int64(24 * cap(row))
		for _, v := range row {
			n += int64(len(v)) + int64(len(v))/8
		}
	}
	return n
}

// spillFile holds the changes of one transaction that did not fit in
// memory, in their binary form (AppendBinary), each after its length as a
// uvarint. It is unlinked as soon as it is made: it takes disk only while
// open, and a crash leaves nothing behind.
type spillFile struct {
	f     *os.File
	w     *bufio.Writer
	n     int   // changes written
	bytes int64 // bytes written
	buf   []byte
}

func newSpillFile(dir string) (*spillFile, error) {
	f, err := os.CreateTemp(dir, "meshcast-wal-*.spill")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return &spillFile{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

func (s *spillFile) write(c *Change) error {
	s.buf = c.AppendBinary(s.buf[:0])
	var head [binary.MaxVarintLen64]byte
	h := binary.PutUvarint(head[:], uint64(len(s.buf)))
	if _, err := s.w.Write(head[:h]); err != nil {
		return err
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	s.n++
	s.bytes += int64(h + len(s.buf))
	if cap(s.buf) > 1<<20 {
		s.buf = nil // don't keep one large row's buffer
	}
	return nil
}

// finish flushes what was written: the file is complete.
func (s *spillFile) finish() error {
	err := s.w.Flush()
	s.w, s.buf = nil, nil
	return err
}

func (s *spillFile) close() { s.f.Close() }

// maxSpilledChange bounds one record read back: Postgres's values are at
// most 1 GB, and a length past this is a damaged file.
const maxSpilledChange = 4 << 30

// each reads the changes back in order, in chunks as Range makes them.
func (s *spillFile) each(maxChanges int, maxBytes int64, f func([]*Change) error) error {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(s.f, 256<<10)
	var chunk []*Change
	var size int64
	var buf []byte
	for i := 0; i < s.n; i++ {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > maxSpilledChange {
			return fmt.Errorf("wal: spilled change %d of %d: length %d: %v", i, s.n, n, err)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("wal: spilled change %d of %d: %w", i, s.n, err)
		}
		c, err := DecodeChange(buf)
		if err != nil {
			return fmt.Errorf("wal: spilled change %d of %d: %w", i, s.n, err)
		}
		if cap(buf) > 1<<20 {
			buf = nil
		}
		sz := c.memSize()
		if len(chunk) > 0 && (len(chunk) >= maxChanges || size+sz > maxBytes) {
			if err := f(chunk); err != nil {
				return err
			}
			clear(chunk)
			chunk, size = chunk[:0], 0
		}
		chunk = append(chunk, c)
		size += sz
	}
	if len(chunk) > 0 {
		return f(chunk)
	}
	return nil
}
