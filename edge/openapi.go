package edge

import (
	_ "embed"

	"github.com/valyala/fasthttp"
)

// openAPI is the OpenAPI 3.1 description of the edge's HTTP API. A test checks that it
// describes every route of routeTable with every method.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(ctx *fasthttp.RequestCtx, _ params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentTypeBytes(ctJSON)
	ctx.Response.SetBodyRaw(openAPI)
}
