package edge

import (
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/problem"
)

// Access rules at the edge (rules.go). The edge checks what it can: that a rule needing a
// user has one (401 otherwise), and, for a collection read by owner, that a cached or fetched
// document is the user's (404 otherwise: a stranger learns nothing of it, not even that it
// exists). Ownership of writes is decided by the core, against the stored owner, since only
// it sees the document as the write applies (wire.Command.OwnerOnly).

// rule is the access rule of a collection.
func (e *Edge) rule(collection []byte) Rule { return e.cfg.Rules.For(collection) }

// needsUser reports whether a (a read or write rule) needs a verified user.
func needsUser(a Access) bool { return a != AccessPublic }

// allowRead checks the read rule of the collection for the request's user, answering 401
// when it needs one and there is none. It returns the rule.
func (e *Edge) allowRead(ctx *fasthttp.RequestCtx, p params) (Rule, bool) {
	r := e.rule(p.collection)
	if needsUser(r.Read) && p.user == "" {
		e.refuseAuth(ctx, problemNeedsToken)
		return r, false
	}
	return r, true
}

// allowWrite is allowRead for the write rule.
func (e *Edge) allowWrite(ctx *fasthttp.RequestCtx, p params) (Rule, bool) {
	r := e.rule(p.collection)
	if needsUser(r.Write) && p.user == "" {
		e.refuseAuth(ctx, problemNeedsToken)
		return r, false
	}
	return r, true
}

// hidden reports whether ent, a document's answer, must not be shown to u: its collection is
// read by owner and the document is someone else's.
func hidden(r Rule, ent *entry, u user) bool {
	return r.Read == AccessOwner && ent.status == fasthttp.StatusOK && ent.owner() != u
}

// notMine answers a document that is someone else's in a collection read by owner: as a
// document that does not exist.
func (e *Edge) notMine(ctx *fasthttp.RequestCtx, cacheStatus []byte) {
	e.serveEntry(ctx, hiddenEntry, cacheStatus, valNoCache)
}

var hiddenEntry = &entry{status: fasthttp.StatusNotFound, body: notFoundString}

// hiddenStandIn is how a stale entry of someone else's document is shown on the stale paths
// (stale-while-revalidate, stale-if-error): as an absent document cached at the same time,
// which those paths answer alike.
func hiddenStandIn(prior *entry) *entry {
	return &entry{status: fasthttp.StatusNotFound, body: notFoundString, epoch: prior.epoch, expires: prior.expires}
}

// cacheControlOf is the Cache-Control of the collection's cacheable answers: as configured
// when anyone may read it, else made private, since the answer depends on who asks.
func (e *Edge) cacheControlOf(r Rule, collection []byte) []byte {
	if r.Read == AccessPublic {
		return e.cc.of(collection)
	}
	return e.cc.ofPrivate(collection)
}

// forbiddenOutcome is how a write refused by the owner rule is answered: 403, or 404 when
// the collection is read by owner too (a stranger must not learn the document exists).
func forbiddenOutcome(r Rule, p *problem.Problem) *problem.Problem {
	if p.Code == problem.Forbidden && r.Read == AccessOwner {
		return problem.New(problem.NotFound, "document not found")
	}
	return p
}
