package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

var (
	hdrIdempotencyKey = "Idempotency-Key"
	hdrAPIKey         = "X-Api-Key"
	maxIdemKeyLen     = 255
	maxAPIKeyLen      = 255
	// batchOverhead is what a write batch adds to its commands' data in a NATS message.
	batchOverhead = 64 << 10
)

func (e *Edge) putDocument(ctx *fasthttp.RequestCtx, p params) {
	e.write(ctx, wire.OpPut, p, false)
}

func (e *Edge) patchDocument(ctx *fasthttp.RequestCtx, p params) {
	e.write(ctx, wire.OpPatch, p, false)
}

func (e *Edge) deleteDocument(ctx *fasthttp.RequestCtx, p params) {
	e.write(ctx, wire.OpDelete, p, false)
}

func (e *Edge) createDocument(ctx *fasthttp.RequestCtx, p params) {
	p.id = []byte(ulid.Make().String())
	e.write(ctx, wire.OpCreate, p, true)
}

// write validates a write request, turns it into a command, waits until JetStream stored it
// and then for its outcome, and answers: the outcome when it came within the write timeout,
// else 202 with a receipt. A valid write beyond the edge's bound of pending writes
// (Config.MaxPendingWrites) is not queued: 503 overloaded.
func (e *Edge) write(ctx *fasthttp.RequestCtx, op wire.Op, p params, created bool) {
	if e.draining.Load() {
		e.writeProblem(ctx, problem.New(problem.Unavailable, "this edge is shutting down"))
		return
	}
	rule, ok := e.allowWrite(ctx, p)
	if !ok {
		return
	}
	cmd, perr := e.command(ctx, op, p)
	if perr != nil {
		e.writeProblem(ctx, perr)
		return
	}
	cmd.OwnerOnly = rule.Write == AccessOwner
	if !e.enterWrite() {
		e.writeProblem(ctx, problemWritesShed)
		return
	}
	defer e.shield.writes.leave()
	rc := e.requestContext(ctx)
	pd, busy, perr := e.writes.submit(rc, cmd)
	if busy != nil {
		e.answerBusy(ctx, rc, &cmd, busy)
		return
	}
	if perr != nil {
		e.metrics.writes.WithLabelValues("unstored").Inc()
		e.writeProblem(ctx, perr)
		return
	}
	if preferAsync(ctx.Request.Header.Peek(hdrPrefer)) {
		// The client asked for the receipt as soon as the write is durable (RFC 7240).
		ctx.Response.Header.SetCanonical(hdrPreferenceApplied, valRespondAsync)
		e.metrics.writes.WithLabelValues("queued").Inc()
		e.answerQueued(ctx, &cmd, created)
		return
	}
	timer := time.NewTimer(e.cfg.WriteTimeout)
	defer timer.Stop()
	select {
	case out := <-pd.outcome:
		e.countOutcome(&out)
		e.answerOutcome(ctx, &out, rule)
	case <-timer.C:
		e.metrics.writes.WithLabelValues("queued").Inc()
		e.answerQueued(ctx, &cmd, created)
	}
}

var (
	hdrPrefer            = "Prefer"
	hdrPreferenceApplied = []byte("Preference-Applied")
	valRespondAsync      = []byte("respond-async")
)

// preferAsync reports whether a Prefer header (RFC 7240) asks for respond-async.
func preferAsync(h []byte) bool {
	for len(h) > 0 {
		var pref []byte
		if i := bytes.IndexByte(h, ','); i >= 0 {
			pref, h = h[:i], h[i+1:]
		} else {
			pref, h = h, nil
		}
		if i := bytes.IndexByte(pref, ';'); i >= 0 {
			pref = pref[:i]
		}
		if bytes.EqualFold(bytes.TrimSpace(pref), valRespondAsync) {
			return true
		}
	}
	return false
}

// command builds the command of a write request, or the problem with it.
func (e *Edge) command(ctx *fasthttp.RequestCtx, op wire.Op, p params) (wire.Command, *problem.Problem) {
	if !wire.ValidCollection(p.collection) || !wire.ValidName(p.id) {
		return wire.Command{}, problem.New(problem.BadName,
			"collection and id are 1 to 128 characters of A-Z a-z 0-9 . _ ~ - (collections without dots)")
	}
	cmd := wire.Command{
		WriteID:    ulid.Make().String(),
		Op:         op,
		Collection: string(p.collection),
		ID:         string(p.id),
		User:       p.user,
	}
	if op != wire.OpDelete {
		body, perr := jsonObject(ctx, op)
		if perr != nil {
			return cmd, perr
		}
		cmd.Data = body
	}
	if im := bytes.TrimSpace(ctx.Request.Header.Peek(fasthttp.HeaderIfMatch)); len(im) > 0 {
		if string(im) == "*" {
			cmd.IfMatch = wire.AnyVersion
		} else if v, ok := parseETag(im); ok {
			cmd.IfMatch = v
		} else {
			return cmd, problem.New(problem.PreconditionFailed, "If-Match names no version of this document")
		}
	}
	if key := ctx.Request.Header.Peek(hdrIdempotencyKey); len(key) > 0 {
		if len(key) > maxIdemKeyLen {
			return cmd, problem.Newf(problem.BadRequest, "Idempotency-Key longer than %d bytes", maxIdemKeyLen)
		}
		if !printableASCII(key) {
			return cmd, problem.New(problem.BadRequest, "Idempotency-Key must be printable ASCII")
		}
		app := ctx.Request.Header.Peek(hdrAPIKey)
		if p.app != "" {
			// A checked key is a secret: its id stands for the app in what is stored.
			app = []byte(p.app)
		}
		if len(app) > maxAPIKeyLen {
			return cmd, problem.Newf(problem.BadRequest, "X-Api-Key longer than %d bytes", maxAPIKeyLen)
		}
		if !printableASCII(app) {
			return cmd, problem.New(problem.BadRequest, "X-Api-Key must be printable ASCII")
		}
		// Keys are scoped to the calling app, so two apps cannot collide: "<len(app)>:<app>:<key>",
		// and to the user, so that nobody replays another's answer: "u<len(user)>:<user>:" before
		// that (the prefix of an anonymous key is a digit).
		cmd.IdemKey = strconv.Itoa(len(app)) + ":" + string(app) + ":" + string(key)
		if p.user != "" {
			cmd.IdemKey = "u" + strconv.Itoa(len(p.user)) + ":" + p.user + ":" + cmd.IdemKey
		}
		cmd.Fingerprint = fingerprint(ctx, p, cmd.Data, cmd.IfMatch)
	}
	// The core drops a batch it cannot apply; nothing it would drop may be published.
	// jsonObject made the checks of the data (with their own problems).
	if err := cmd.ValidateFields(); err != nil {
		return cmd, problem.New(problem.BadRequest, err.Error())
	}
	return cmd, nil
}

// printableASCII reports whether b holds only printable ASCII (space to tilde), what an
// Idempotency-Key may hold (a Structured Fields string, RFC 8941) and what keeps a key the
// same bytes through the batch's JSON and in every store.
func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// jsonObject returns the request body, without surrounding white space, after checking its
// media type and that it is one JSON object. It copies the body: fasthttp reuses the request buffer after the handler returns.
func jsonObject(ctx *fasthttp.RequestCtx, op wire.Op) (json.RawMessage, *problem.Problem) {
	ct := ctx.Request.Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	switch {
	case bytes.EqualFold(ct, ctJSON):
	case op == wire.OpPatch && bytes.EqualFold(ct, []byte("application/merge-patch+json")):
	default:
		want := "application/json"
		if op == wire.OpPatch {
			want += " or application/merge-patch+json"
		}
		return nil, problem.Newf(problem.UnsupportedMedia, "Content-Type must be %s", want)
	}
	body := bytes.Trim(ctx.Request.Body(), " \t\r\n")
	if len(body) == 0 {
		return nil, problem.New(problem.BadJSON, "the body is empty; send a JSON object")
	}
	if !wire.Valid(body) {
		return nil, problem.New(problem.BadJSON, "the body is not valid JSON")
	}
	if body[0] != '{' {
		return nil, problem.New(problem.NotObject, "the body must be a JSON object")
	}
	err := wire.StorableJSON(body)
	if err == nil {
		err = wire.CheckNesting(body)
	}
	if err != nil {
		return nil, problem.New(problem.BadJSON, "the body cannot be stored: "+err.Error())
	}
	return bytes.Clone(body), nil
}

// fingerprint identifies a request for Idempotency-Key: the same key with another request is
// refused.
func fingerprint(ctx *fasthttp.RequestCtx, p params, body []byte, ifMatch int64) string {
	h := sha256.New()
	h.Write(ctx.Method())
	h.Write([]byte{0})
	h.Write(p.collection)
	h.Write([]byte{0})
	if string(ctx.Method()) != fasthttp.MethodPost {
		h.Write(p.id)
	}
	h.Write([]byte{0})
	var n [8]byte
	for i := range n {
		n[i] = byte(ifMatch >> (8 * i))
	}
	h.Write(n[:])
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func (e *Edge) countOutcome(out *wire.Outcome) {
	switch {
	case out.Replayed:
		e.metrics.writes.WithLabelValues("replayed").Inc()
	case out.Problem != nil:
		e.metrics.writes.WithLabelValues("rejected").Inc()
	default:
		e.metrics.writes.WithLabelValues("applied").Inc()
	}
}

// answerOutcome renders the core's outcome of a write to a collection of rule r: a refusal by
// the owner rule as forbiddenOutcome says.
func (e *Edge) answerOutcome(ctx *fasthttp.RequestCtx, out *wire.Outcome, r Rule) {
	if out.Replayed {
		ctx.Response.Header.SetCanonical(hdrReplayed, valTrue)
	}
	if out.Problem != nil {
		e.writeProblem(ctx, forbiddenOutcome(r, out.Problem))
		return
	}
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	if out.Doc == nil || out.Status == fasthttp.StatusNoContent {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	d := out.Doc
	ctx.Response.Header.SetCanonical(hdrETag, etag(d.Version))
	if out.Status == fasthttp.StatusCreated {
		ctx.Response.Header.SetCanonical(hdrLocation, []byte("/v1/collections/"+d.Collection+"/docs/"+d.ID))
	}
	writeBody(ctx, out.Status, renderDocument(responseBuffer(ctx), d))
}

// answerBusy answers a write whose Idempotency-Key another request through this edge still
// waits on: 422 when the requests differ; otherwise the first one's outcome as a replay when
// the core has applied it (its outcome may still be on its way to this edge), else 409.
func (e *Edge) answerBusy(ctx *fasthttp.RequestCtx, rc context.Context, cmd *wire.Command, first *wire.Command) {
	if first.Fingerprint != cmd.Fingerprint {
		e.writeProblem(ctx, problem.New(problem.IdempotencyMismatch, "this Idempotency-Key was used with another request"))
		return
	}
	if resp, perr := e.read(rc, &wire.ReadRequest{Kind: wire.ReadWrite, WriteID: first.WriteID}); perr == nil && resp.Write != nil && resp.Write.Status != 0 {
		out := *resp.Write
		out.Replayed = true
		e.answerOutcome(ctx, &out, e.rule([]byte(cmd.Collection)))
		return
	}
	e.writeProblem(ctx, problem.New(problem.IdempotencyInFlight, "a request with this Idempotency-Key is still in flight"))
}

type receiptJSON struct {
	WriteID    string `json:"write_id"`
	Status     string `json:"status"`
	StatusURL  string `json:"status_url"`
	Collection string `json:"collection"`
	ID         string `json:"id"`
}

// answerQueued answers 202: the command is durable in JetStream and will be applied; the
// receipt says where to ask what became of it.
func (e *Edge) answerQueued(ctx *fasthttp.RequestCtx, cmd *wire.Command, _ bool) {
	url := "/v1/writes/" + cmd.WriteID
	ctx.Response.Header.SetCanonical(hdrLocation, []byte(url))
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	r := receiptJSON{WriteID: cmd.WriteID, Status: string(wire.WriteQueued), StatusURL: url,
		Collection: cmd.Collection, ID: cmd.ID}
	writeBody(ctx, fasthttp.StatusAccepted, r.appendJSON(responseBuffer(ctx)))
}

// appendJSON appends r as json.Marshal encodes it (FuzzRenderDocument checks it).
func (r *receiptJSON) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"write_id":`...)
	dst = wire.AppendString(dst, r.WriteID)
	dst = append(dst, `,"status":`...)
	dst = wire.AppendString(dst, r.Status)
	dst = append(dst, `,"status_url":`...)
	dst = wire.AppendString(dst, r.StatusURL)
	dst = append(dst, `,"collection":`...)
	dst = wire.AppendString(dst, r.Collection)
	dst = append(dst, `,"id":`...)
	dst = wire.AppendString(dst, r.ID)
	return append(dst, '}')
}

// pending is a write between its request and its outcome.
type pending struct {
	cmd wire.Command
	// enc is cmd's encoding in the batch (Command.AppendJSON): batches are sized by it, since
	// it can be several times the data (JSON escapes), and publish reuses it.
	enc     []byte
	created time.Time
	// trace is the span context of the request, when it is traced: the batch that carries
	// the command is traced too (publish).
	trace trace.SpanContext
	// durable receives the result of publishing the command's batch: nil once JetStream
	// stored it.
	durable chan error
	// outcome receives the core's outcome; buffered so that delivery never blocks.
	outcome chan wire.Outcome
	// epoch is the cache's epoch when the write was taken: its outcome's document is stamped
	// with it (onOutcomes), so that a distrust while the write was under way (change events
	// lost that may be later than it) leaves that document distrusted too, as a fill's.
	epoch uint32
}

// writer gathers write commands into batches per partition and publishes them, and routes the
// core's outcomes back to the requests waiting for them.
//
// Lock order: writer.mu is a leaf lock.
type writer struct {
	e     *Edge
	lanes []*lane
	stopc chan struct{}
	// done is closed once every lane has stopped: a command queued after that will never
	// be published.
	done chan struct{}
	wg   sync.WaitGroup

	mu sync.Mutex
	// waiting maps a write id to its request, until the outcome comes or it expires.
	waiting map[string]*pending
	// inflight maps the scoped Idempotency-Keys of the writes waiting here to their writes.
	inflight map[string]*pending
	stopped  bool
}

func newWriter(e *Edge) *writer {
	w := &writer{
		e:        e,
		lanes:    make([]*lane, e.cfg.Partitions),
		stopc:    make(chan struct{}),
		done:     make(chan struct{}),
		waiting:  make(map[string]*pending),
		inflight: make(map[string]*pending),
	}
	for i := range w.lanes {
		w.lanes[i] = newLane(4 * e.cfg.BatchMax)
	}
	return w
}

func (w *writer) start() {
	for p, l := range w.lanes {
		w.wg.Add(1)
		go w.runPartition(p, l)
	}
	w.wg.Add(1)
	go w.expireWaiting()
}

// stop ends the publishers after the requests in flight were answered (the HTTP server is
// shut down first).
func (w *writer) stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.mu.Unlock()
	close(w.stopc)
	w.wg.Wait()
	close(w.done)
}

// submit queues cmd and returns once JetStream stored it, or the problem that kept it from
// being stored (then nothing was promised and the client may retry). When another write with
// the same Idempotency-Key waits here, nothing is queued and that write's command comes back.
// rc is the request's requestContext.
func (w *writer) submit(rc context.Context, cmd wire.Command) (*pending, *wire.Command, *problem.Problem) {
	enc, err := cmd.AppendJSON(make([]byte, 0, len(cmd.Data)+256))
	if err != nil {
		return nil, nil, problem.New(problem.BadJSON, "the body cannot be encoded: "+err.Error())
	}
	if len(enc) > w.e.cfg.BatchBytes {
		// A batch of this one command would not fit in a NATS message: refused for good, not
		// a 503 to retry for ever.
		return nil, nil, problem.Newf(problem.TooLarge, "the write takes %d bytes encoded, more than the %d a write batch carries", len(enc), w.e.cfg.BatchBytes)
	}
	pd := &pending{cmd: cmd, enc: enc, created: time.Now(), trace: trace.SpanContextFromContext(rc),
		durable: make(chan error, 1), outcome: make(chan wire.Outcome, 1), epoch: w.e.cache.epoch.Load()}
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return nil, nil, problem.New(problem.Unavailable, "this edge is shutting down")
	}
	if cmd.IdemKey != "" {
		if first := w.inflight[cmd.IdemKey]; first != nil {
			w.mu.Unlock()
			return nil, &first.cmd, nil
		}
		w.inflight[cmd.IdemKey] = pd
	}
	w.waiting[cmd.WriteID] = pd
	w.mu.Unlock()

	if p := w.queue(w.lanes[wire.WritePartition(w.e.cfg.ID, cmd.Collection, cmd.ID, w.e.cfg.WriteLanes, w.e.cfg.Partitions)], pd); p != nil {
		w.forget(cmd.WriteID)
		return nil, nil, p
	}
	select {
	case err = <-pd.durable:
	case <-w.done:
		err = errors.New("edge stopped")
	}
	if err != nil {
		w.forget(cmd.WriteID)
		w.e.log.WarnContext(rc, "write not confirmed stored by JetStream", "write_id", cmd.WriteID, "err", err)
		return nil, nil, problem.New(problem.Unavailable,
			"the write was not confirmed stored; retry it (with the same Idempotency-Key to be safe)")
	}
	// The stream has the data now; the wait for the outcome needs only the command's names.
	pd.cmd.Data, pd.enc = nil, nil
	return pd, nil, nil
}

// queue puts pd on lane l, waiting up to the write timeout for room (a timer only when the
// lane is full), or returns why it could not.
func (w *writer) queue(l *lane, pd *pending) *problem.Problem {
	select {
	case l.q <- pd:
		return nil
	default:
	}
	full := time.NewTimer(w.e.cfg.WriteTimeout)
	defer full.Stop()
	select {
	case l.q <- pd:
		return nil
	case <-full.C:
		// The lane stayed full for the whole write timeout: the stream cannot keep up.
		w.e.shed(shedWrite, &w.e.shield.writes)
		return problem.New(problem.Overloaded, "too many writes waiting to be stored; nothing was stored; retry after Retry-After")
	case <-w.stopc:
		return problem.New(problem.Unavailable, "this edge is shutting down")
	}
}

// deliver hands an outcome to the request waiting for it, if any.
func (w *writer) deliver(out wire.Outcome) {
	w.mu.Lock()
	pd := w.waiting[out.WriteID]
	if pd != nil {
		w.removeLocked(pd)
	}
	w.mu.Unlock()
	if pd != nil {
		pd.outcome <- out
	}
}

// epochOf returns the epoch of the write writeID (pending.epoch), if it waits here.
func (w *writer) epochOf(writeID string) (uint32, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pd := w.waiting[writeID]; pd != nil {
		return pd.epoch, true
	}
	return 0, false
}

func (w *writer) forget(writeID string) {
	w.mu.Lock()
	if pd := w.waiting[writeID]; pd != nil {
		w.removeLocked(pd)
	}
	w.mu.Unlock()
}

func (w *writer) removeLocked(pd *pending) {
	delete(w.waiting, pd.cmd.WriteID)
	if pd.cmd.IdemKey != "" && w.inflight[pd.cmd.IdemKey] == pd {
		delete(w.inflight, pd.cmd.IdemKey)
	}
}

// expireWaiting forgets writes whose outcome never came (a core that answered while this
// edge was disconnected): their requests were answered 202 long ago.
func (w *writer) expireWaiting() {
	defer w.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-w.stopc:
			return
		case now := <-t.C:
			limit := 10*time.Minute + w.e.cfg.WriteTimeout
			w.mu.Lock()
			for _, pd := range w.waiting {
				if now.Sub(pd.created) > limit {
					w.removeLocked(pd)
				}
			}
			w.mu.Unlock()
		}
	}
}
