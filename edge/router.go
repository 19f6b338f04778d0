package edge

import (
	"strings"

	"github.com/valyala/fasthttp"
)

// params are the values of a route's path parameters. They alias the request's buffers and
// are valid only until the handler returns.
type params struct {
	collection []byte
	id         []byte
	// user is who the request acts for, from its verified access token; empty when it has
	// none.
	user user
	// app is the id of the request's API key when the edge checks them (Config.APIKeys) and
	// it has one; empty otherwise.
	app string
}

type handler func(ctx *fasthttp.RequestCtx, p params)

// route is one path of the API with the methods it answers. The table of routes is the single
// source for dispatch, for the Allow header of 405 answers, and for the test that checks the
// OpenAPI description covers every route.
type route struct {
	// pattern is the path in OpenAPI form: literal segments and {collection} or {id}.
	pattern string
	methods []routeMethod
	segs    []string
	allow   []byte
	// index is the route's place in the table, -1 for requests no route matched.
	index int
}

// unknownRoute stands for every request no route matched, in metrics.
var unknownRoute = &route{pattern: "unknown", index: -1}

type routeMethod struct {
	method string
	h      handler
}

func newRoute(pattern string, methods ...routeMethod) route {
	r := route{pattern: pattern, methods: methods, segs: strings.Split(strings.TrimPrefix(pattern, "/"), "/")}
	names := make([]string, 0, len(methods)+1)
	for _, m := range methods {
		names = append(names, m.method)
		if m.method == fasthttp.MethodGet {
			names = append(names, fasthttp.MethodHead)
		}
	}
	r.allow = []byte(strings.Join(names, ", "))
	return r
}

func get(h handler) routeMethod    { return routeMethod{fasthttp.MethodGet, h} }
func put(h handler) routeMethod    { return routeMethod{fasthttp.MethodPut, h} }
func post(h handler) routeMethod   { return routeMethod{fasthttp.MethodPost, h} }
func patch(h handler) routeMethod  { return routeMethod{fasthttp.MethodPatch, h} }
func remove(h handler) routeMethod { return routeMethod{fasthttp.MethodDelete, h} }

// match reports whether path matches r, and the parameters it binds.
func (r *route) match(path []byte) (params, bool) {
	var p params
	if len(path) == 0 || path[0] != '/' {
		return p, false
	}
	path = path[1:]
	for i, seg := range r.segs {
		end := 0
		for end < len(path) && path[end] != '/' {
			end++
		}
		part := path[:end]
		switch seg {
		case "{collection}":
			p.collection = part
		case "{id}":
			p.id = part
		default:
			if string(part) != seg {
				return p, false
			}
		}
		if i == len(r.segs)-1 {
			return p, end == len(path)
		}
		if end == len(path) {
			return p, false
		}
		path = path[end+1:]
	}
	return p, false
}

// dispatch finds the route and method of a request and calls its handler, and returns the
// route; unknown paths get 404 and known paths with another method 405 with Allow.
func (e *Edge) dispatch(ctx *fasthttp.RequestCtx, u user) *route { return e.dispatchApp(ctx, u, "") }

// dispatchApp is dispatch for a request of the app whose API key has the id app.
func (e *Edge) dispatchApp(ctx *fasthttp.RequestCtx, u user, app string) *route {
	r := e.route(ctx, u, app)
	e.metrics.observe(r, ctx)
	return r
}

// route serves the request and returns the route that answered it.
func (e *Edge) route(ctx *fasthttp.RequestCtx, u user, app string) *route {
	path := ctx.Path()
	method := ctx.Method()
	head := string(method) == fasthttp.MethodHead
	for i := range e.routes {
		r := &e.routes[i]
		p, ok := r.match(path)
		if !ok {
			continue
		}
		p.user, p.app = u, app
		for _, m := range r.methods {
			if m.method == string(method) || head && m.method == fasthttp.MethodGet {
				m.h(ctx, p)
				return r
			}
		}
		ctx.Response.Header.SetCanonical(hdrAllow, r.allow)
		ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
		e.logRejected(ctx, fasthttp.StatusMethodNotAllowed)
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
		ctx.SetContentTypeBytes(ctProblem)
		ctx.SetBody(methodNotAllowBody)
		return r
	}
	e.logRejected(ctx, fasthttp.StatusNotFound)
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	ctx.SetStatusCode(fasthttp.StatusNotFound)
	ctx.SetContentTypeBytes(ctProblem)
	ctx.SetBody(notFoundRouteBody)
	return unknownRoute
}
