package edge

import (
	"context"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// A user's own data (privacy): GET /v1/me/export returns the account and every document the
// user owns; DELETE /v1/me deletes them all and then the account.

// maxExportDocs bounds the documents of one export, which the edge assembles in memory.
const maxExportDocs = 100_000

type exportJSON struct {
	Account   *wire.Account `json:"account"`
	Documents []docJSON     `json:"documents"`
}

var valExportDisposition = []byte(`attachment; filename="perch-export.json"`)

// exportMe serves GET /v1/me/export: the account (id, email, created_at: never a password
// hash) and every live document the user owns, in every collection.
func (e *Edge) exportMe(ctx *fasthttp.RequestCtx, p params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	if p.user == "" {
		e.refuseAuth(ctx, problemNeedsToken)
		return
	}
	resp, perr := e.askAuth(&wire.AuthRequest{Op: wire.AuthMe, User: p.user}, e.cfg.ReadTimeout)
	if perr != nil {
		e.writeProblem(ctx, perr)
		return
	}
	out := exportJSON{Account: resp.Account, Documents: []docJSON{}}
	perr = e.eachOwned(e.requestContext(ctx), p.user, func(d *wire.Document) *problem.Problem {
		if len(out.Documents) >= maxExportDocs {
			return problem.Newf(problem.TooLarge, "the export holds more than %d documents; export them by collection with GET /v1/collections/{c}/docs", maxExportDocs)
		}
		out.Documents = append(out.Documents, apiDoc(d))
		return nil
	})
	if perr != nil {
		e.writeProblem(ctx, perr)
		return
	}
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	ctx.Response.Header.SetCanonical([]byte("Content-Disposition"), valExportDisposition)
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// eachOwned calls f with every live document of owner, page by page from the core, until f
// returns a problem.
func (e *Edge) eachOwned(rc context.Context, owner string, f func(*wire.Document) *problem.Problem) *problem.Problem {
	q := wire.OwnedQuery{Owner: owner, Limit: wire.MaxListLimit}
	for {
		resp, perr := e.read(rc, &wire.ReadRequest{Kind: wire.ReadOwned, Owned: &q})
		if perr != nil {
			return perr
		}
		if resp.Page == nil {
			return problem.New(problem.Internal, "the core answered without a page")
		}
		for i := range resp.Page.Items {
			if perr := f(&resp.Page.Items[i]); perr != nil {
				return perr
			}
		}
		if !resp.Page.More || len(resp.Page.Items) == 0 {
			return nil
		}
		last := resp.Page.Items[len(resp.Page.Items)-1]
		q.After = &wire.DocRef{Collection: last.Collection, ID: last.ID}
	}
}

// deleteMe serves DELETE /v1/me: it deletes every document the user owns, through the write
// path like any delete (tombstones for sync, change events for every edge), then the account,
// which ends its sessions and access tokens on every edge, then sweeps once more for writes
// the user's other sessions made meanwhile. It answers 204 once all of it is durable. A
// failure part way is answered 503 and leaves the account in place, so the user can retry.
func (e *Edge) deleteMe(ctx *fasthttp.RequestCtx, p params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	if p.user == "" {
		e.refuseAuth(ctx, problemNeedsToken)
		return
	}
	if e.draining.Load() {
		e.writeProblem(ctx, problem.New(problem.Unavailable, "this edge is shutting down"))
		return
	}
	rc := e.requestContext(ctx)
	if perr := e.deleteOwned(rc, p.user); perr != nil {
		e.writeProblem(ctx, perr)
		return
	}
	if _, perr := e.askAuth(&wire.AuthRequest{Op: wire.AuthDelete, User: p.user}, e.cfg.WriteTimeout); perr != nil {
		e.writeProblem(ctx, perr)
		return
	}
	// A write the user's other sessions had in flight when the account went may have been
	// applied since: sweep again, after the time a revocation takes to reach every edge.
	time.Sleep(100 * time.Millisecond)
	if perr := e.deleteOwned(rc, p.user); perr != nil {
		e.log.WarnContext(rc, "documents of a deleted account left after its deletion", "user", p.user, "err", perr)
	}
	e.log.InfoContext(rc, "account and its documents deleted", "user", p.user)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// deleteOwned deletes every live document of owner and returns once JetStream stored every
// delete: many at once, so that they share batches.
func (e *Edge) deleteOwned(rc context.Context, owner string) *problem.Problem {
	const inFlight = 64
	sem := make(chan struct{}, inFlight)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first *problem.Problem
	)
	fail := func(p *problem.Problem) {
		mu.Lock()
		if first == nil {
			first = p
		}
		mu.Unlock()
	}
	perr := e.eachOwned(rc, owner, func(d *wire.Document) *problem.Problem {
		mu.Lock()
		failed := first
		mu.Unlock()
		if failed != nil {
			return failed
		}
		cmd := wire.Command{WriteID: ulid.Make().String(), Op: wire.OpDelete, Collection: d.Collection, ID: d.ID,
			User: owner, OwnerOnly: true}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, _, perr := e.writes.submit(rc, cmd); perr != nil {
				fail(perr)
			}
		}()
		return nil
	})
	wg.Wait()
	if perr != nil {
		return perr
	}
	return first
}
