package load

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// plan is a scenario made ready to send: the ids and pages its seed made, the devices'
// cursors, and the counters that make every write's Idempotency-Key unique. A plan is shared
// by every worker of every phase of a run (and by the baselines); its methods are safe for
// concurrent use.
type plan struct {
	s     *Scenario
	runID string
	// cum are the cumulative weights of s.Mix; total is the last.
	cum   []int
	total int
	// docPaths are the paths of the seeded documents, by index.
	docPaths []string
	ids      []string
	// listPaths are the list pages the seed found (path and query), first page first.
	listPaths []string
	// syncStart is the cursor of the end of the seed's full sync.
	syncStart string
	devices   []device
	writes    atomic.Int64
	pad       string
	base      string // "/v1/collections/<c>/docs"
}

type device struct {
	mu     sync.Mutex
	cursor string
}

func newPlan(s *Scenario, runID string) *plan {
	p := &plan{s: s, runID: runID, base: "/v1/collections/" + s.Collection + "/docs"}
	for _, st := range s.Mix {
		p.total += st.Weight
		p.cum = append(p.cum, p.total)
	}
	p.ids = make([]string, s.Docs)
	p.docPaths = make([]string, s.Docs)
	for i := range p.ids {
		p.ids[i] = fmt.Sprintf("d%06d", i)
		p.docPaths[i] = p.base + "/" + p.ids[i]
	}
	p.listPaths = []string{p.base + "?limit=" + strconv.Itoa(s.ListLimit)}
	p.devices = make([]device, s.Devices)
	// A body is {"run":"<id>","seq":"<n>","pad":"xxx…"}; the pad brings it to DocBytes.
	n := max(s.DocBytes-len(`{"run":"","seq":"","pad":""}`)-len(runID)-10, 0)
	p.pad = strings.Repeat("x", n)
	return p
}

// writesOnly returns a plan that sends only the scenario's writes (with their weights),
// sharing this plan's seeded state, or nil when the scenario has none.
func (p *plan) writesOnly() *plan {
	s := *p.s
	s.Mix = nil
	for _, st := range p.s.Mix {
		if st.Kind.write() {
			s.Mix = append(s.Mix, st)
		}
	}
	if len(s.Mix) == 0 {
		return nil
	}
	q := &plan{s: &s, runID: p.runID, docPaths: p.docPaths, ids: p.ids, listPaths: p.listPaths,
		syncStart: p.syncStart, devices: p.devices, pad: p.pad, base: p.base}
	for _, st := range s.Mix {
		q.total += st.Weight
		q.cum = append(q.cum, q.total)
	}
	return q
}

// op is one request to send.
type op struct {
	kind   Kind
	doc    int    // get, put: the seeded document
	id     string // create: the new id
	page   int    // list
	device int    // sync
	// key is the Idempotency-Key of a write.
	key string
}

// worker is the state of one sending goroutine: its random source and buffers.
type worker struct {
	rng  *rand.Rand
	zipf *rand.Zipf
	body []byte
	// path is the scratch buffer of a request's path.
	path []byte
	// http is the HTTP target's per-worker state.
	http *httpWorker
}

func (p *plan) newWorker(seed int64) *worker {
	w := &worker{rng: rand.New(rand.NewSource(seed))}
	if p.s.Zipf > 1 && p.s.Docs > 1 {
		w.zipf = rand.NewZipf(w.rng, p.s.Zipf, 1, uint64(p.s.Docs-1))
	}
	return w
}

func (w *worker) pick(n int) int {
	if w.zipf != nil {
		return int(w.zipf.Uint64())
	}
	return w.rng.Intn(n)
}

// next draws the next request of the mix.
func (p *plan) next(w *worker) op {
	r := w.rng.Intn(p.total)
	k := p.s.Mix[len(p.s.Mix)-1].Kind
	for i, c := range p.cum {
		if r < c {
			k = p.s.Mix[i].Kind
			break
		}
	}
	o := op{kind: k}
	switch k {
	case KindGet, KindPut:
		o.doc = w.pick(len(p.docPaths))
	case KindList:
		if len(p.listPaths) > 1 && w.rng.Intn(10) < 3 {
			o.page = 1 + w.rng.Intn(len(p.listPaths)-1)
		}
	case KindSync:
		o.device = w.rng.Intn(len(p.devices))
	}
	if k.write() {
		n := strconv.FormatInt(p.writes.Add(1), 10)
		o.key = p.runID + "-" + n
		if k == KindCreate {
			o.id = "n-" + p.runID + "-" + n
		}
	}
	return o
}

// path appends the path and query of o to b.
func (p *plan) path(b []byte, o *op) []byte {
	switch o.kind {
	case KindGet, KindPut:
		return append(b, p.docPaths[o.doc]...)
	case KindCreate:
		b = append(b, p.base...)
		return append(append(b, '/'), o.id...)
	case KindPost:
		return append(b, p.base...)
	case KindList:
		return append(b, p.listPaths[o.page]...)
	case KindSync:
		d := &p.devices[o.device]
		d.mu.Lock()
		c := d.cursor
		d.mu.Unlock()
		b = append(b, "/v1/sync?collections="...)
		b = append(b, p.s.Collection...)
		b = append(b, "&limit="...)
		b = strconv.AppendInt(b, int64(p.s.SyncLimit), 10)
		if c != "" {
			b = append(b, "&cursor="...)
			b = append(b, url.QueryEscape(c)...)
		}
		return b
	}
	return b
}

// writeBody appends the body of a write to b.
func (p *plan) writeBody(b []byte, o *op) []byte {
	b = append(b, `{"run":"`...)
	b = append(b, p.runID...)
	b = append(b, `","seq":"`...)
	b = append(b, o.key[len(p.runID)+1:]...)
	b = append(b, `","pad":"`...)
	b = append(b, p.pad...)
	return append(b, `"}`...)
}

// observe takes what a scenario needs from an answer: a sync poll's next cursor, and the
// ledger entry of an acknowledged write. body is valid only during the call.
func (p *plan) observe(o *op, status int, body []byte, ledger *Ledger, phase string) {
	switch {
	case o.kind == KindSync && status == 200:
		var page struct {
			NextCursor string `json:"next_cursor"`
		}
		if json.Unmarshal(body, &page) == nil && page.NextCursor != "" {
			d := &p.devices[o.device]
			d.mu.Lock()
			d.cursor = page.NextCursor
			d.mu.Unlock()
		}
	case o.kind.write() && ledger != nil && status >= 200 && status < 300:
		e := LedgerEntry{Key: o.key, APIKey: p.s.APIKey, Collection: p.s.Collection, Status: status, Phase: phase}
		switch o.kind {
		case KindPost:
			e.Method = "POST"
		default:
			e.Method = "PUT"
			e.ID = p.idOf(o)
		}
		var ans struct {
			ID      string `json:"id"`
			Version int64  `json:"version"`
			WriteID string `json:"write_id"`
		}
		if json.Unmarshal(body, &ans) == nil {
			if ans.ID != "" {
				e.ID = ans.ID
			}
			if status == 202 {
				e.WriteID = ans.WriteID
			} else {
				e.Version = ans.Version
			}
		}
		ledger.Add(e)
	}
}

func (p *plan) idOf(o *op) string {
	if o.kind == KindCreate {
		return o.id
	}
	return p.ids[o.doc]
}
