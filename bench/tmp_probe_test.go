package bench

import (
	"fmt"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/clustertest"
)

func BenchmarkProbeSQLite(b *testing.B) {
	c := clustertest.Start(b, clustertest.Options{Regions: []string{"bench"}})
	base := c.Edge(0) + "/v1/collections/bench/docs/"
	hc := &fasthttp.Client{MaxConnsPerHost: clients}
	run(b, func(i int) error {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod(fasthttp.MethodPut)
		req.SetRequestURI(base + key())
		req.Header.SetContentType("application/json")
		req.SetBodyString(fmt.Sprintf(`{"n":%d}`, i))
		return hc.Do(req, resp)
	})
	mfs, _ := c.Metrics().Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case "perch_edge_write_publish_seconds", "perch_core_apply_seconds", "perch_core_batch_commands":
			for _, m := range mf.Metric {
				h := m.GetHistogram()
				if h.GetSampleCount() > 10 {
					fmt.Printf("%s count=%d mean=%.4f\n", mf.GetName(), h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()))
				}
			}
		}
	}
}
