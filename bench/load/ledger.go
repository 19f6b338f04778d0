package load

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// LedgerEntry is one acknowledged write: a write the API answered 2xx, which Perch promises
// is never lost and is applied exactly once. A ledger file holds one entry per line, as JSON.
type LedgerEntry struct {
	// Key is the write's Idempotency-Key, unique in the run. The edge scopes it by APIKey,
	// the request's X-Api-Key, and the core records the write's outcome under it.
	Key    string `json:"key"`
	APIKey string `json:"api_key,omitempty"`
	// Method, Collection and ID name the write (ID is the server-made one for POST).
	Method     string `json:"method"`
	Collection string `json:"collection"`
	ID         string `json:"id"`
	// Status is the answer's status: 200 or 201 (applied; Version is the document's version
	// then) or 202 (stored; WriteID is the receipt's write id).
	Status  int    `json:"status"`
	Version int64  `json:"version,omitempty"`
	WriteID string `json:"write_id,omitempty"`
	// Phase is when the write was sent: "seed", "warmup" or "run" (a capacity search's
	// steps are "run" too).
	Phase string `json:"phase"`
}

// Ledger records acknowledged writes to a writer, one JSON line each. It is safe for
// concurrent use; Flush must be called once the writes are done.
type Ledger struct {
	mu  sync.Mutex
	w   *bufio.Writer
	n   int64
	err error
}

// NewLedger returns a ledger writing to w.
func NewLedger(w io.Writer) *Ledger { return &Ledger{w: bufio.NewWriterSize(w, 64<<10)} }

// Add records e. A write error is kept and returned by Flush.
func (l *Ledger) Add(e LedgerEntry) {
	line, err := json.Marshal(e)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		_, err = l.w.Write(append(line, '\n'))
	}
	if err != nil && l.err == nil {
		l.err = err
	}
	l.n++
}

// Len returns the number of entries added.
func (l *Ledger) Len() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Flush writes out what is buffered and returns the first error of any write.
func (l *Ledger) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.w.Flush(); err != nil && l.err == nil {
		l.err = err
	}
	return l.err
}

// maxLedgerLine bounds one line of a ledger file.
const maxLedgerLine = 64 << 10

// ReadLedger decodes a ledger file. Blank lines are skipped; any other line that is not an
// entry with a key and a 2xx status is an error naming its line.
func ReadLedger(r io.Reader) ([]LedgerEntry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLedgerLine)
	var out []LedgerEntry
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e LedgerEntry
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("ledger line %d: %w", n, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("ledger line %d: more than one entry", n)
		}
		if e.Key == "" || e.Collection == "" || e.Status < 200 || e.Status > 299 {
			return nil, fmt.Errorf("ledger line %d: an entry needs a key, a collection and a 2xx status", n)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("ledger: a line longer than %d bytes", maxLedgerLine)
		}
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return out, nil
}
