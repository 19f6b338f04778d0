package edge_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/wire"
)

type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// expectProblem checks that r is an RFC 9457 problem with the status and code.
func expectProblem(t *testing.T, r clustertest.Response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if ct := r.Header["Content-Type"]; ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	var p problemBody
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.Body, err)
	}
	if p.Status != status || p.Code != code || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v, want status %d code %s with type, title and detail", p, status, code)
	}
}

func TestBadInput(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	base := c.Edge(0)
	doc := base + "/v1/collections/notes/docs/"
	// A document to be stale against and a key to reuse.
	if r := clustertest.Do(t, "PUT", doc+"existing", nil, []byte(`{"a":1}`)); r.Status != 201 {
		t.Fatalf("seed: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "POST", base+"/v1/collections/notes/docs", map[string]string{"Idempotency-Key": "k-1"}, []byte(`{"a":1}`)); r.Status != 201 {
		t.Fatalf("seed: %d %s", r.Status, r.Body)
	}
	ctText := map[string]string{"Content-Type": "text/plain"}
	cases := []struct {
		name    string
		method  string
		url     string
		headers map[string]string
		body    []byte
		status  int
		code    string
	}{
		{"bad JSON", "PUT", doc + "a", nil, []byte(`{"a":`), 400, "bad_json"},
		{"empty body", "PUT", doc + "a", nil, []byte(``), 400, "bad_json"},
		{"array body", "PUT", doc + "a", nil, []byte(`[1,2]`), 400, "not_object"},
		{"string body", "POST", base + "/v1/collections/notes/docs", nil, []byte(`"x"`), 400, "not_object"},
		{"trailing garbage", "PUT", doc + "a", nil, []byte(`{"a":1} x`), 400, "bad_json"},
		{"wrong content type", "PUT", doc + "a", ctText, []byte(`{"a":1}`), 415, "unsupported_media_type"},
		{"merge patch type on PUT", "PUT", doc + "a", map[string]string{"Content-Type": "application/merge-patch+json"}, []byte(`{}`), 415, "unsupported_media_type"},
		{"unknown route", "GET", base + "/v2/nothing", nil, nil, 404, "route_not_found"},
		{"unknown nested route", "GET", doc + "a/extra", nil, nil, 404, "route_not_found"},
		{"wrong method on document", "POST", doc + "a", nil, []byte(`{}`), 405, "method_not_allowed"},
		{"wrong method on list", "DELETE", base + "/v1/collections/notes/docs", nil, nil, 405, "method_not_allowed"},
		{"bad collection name", "GET", base + "/v1/collections/no%20pe/docs/a", nil, nil, 400, "bad_name"},
		{"dotted collection", "PUT", base + "/v1/collections/a.b/docs/a", nil, []byte(`{}`), 400, "bad_name"},
		{"absent document", "GET", doc + "absent", nil, nil, 404, "not_found"},
		{"patch absent", "PATCH", doc + "absent", nil, []byte(`{"a":1}`), 404, "not_found"},
		{"delete absent", "DELETE", doc + "absent", nil, nil, 404, "not_found"},
		{"bad cursor", "GET", base + "/v1/collections/notes/docs?cursor=!!!", nil, nil, 400, "bad_cursor"},
		{"cursor of another query", "GET", base + "/v1/collections/notes/docs?order=-id&cursor=" + listCursor(t, base), nil, nil, 400, "bad_cursor"},
		{"bad sync cursor", "GET", base + "/v1/sync?collections=notes&cursor=e30", nil, nil, 400, "bad_cursor"},
		{"bad limit", "GET", base + "/v1/collections/notes/docs?limit=0", nil, nil, 400, "bad_request"},
		{"limit too large", "GET", base + "/v1/collections/notes/docs?limit=100000", nil, nil, 400, "bad_request"},
		{"bad order", "GET", base + "/v1/collections/notes/docs?order=name", nil, nil, 400, "bad_request"},
		{"sync without collections", "GET", base + "/v1/sync", nil, nil, 400, "bad_request"},
		{"stale If-Match", "PUT", doc + "existing", map[string]string{"If-Match": `"7"`}, []byte(`{"a":2}`), 412, "precondition_failed"},
		{"malformed If-Match", "PATCH", doc + "existing", map[string]string{"If-Match": `W/"1"`}, []byte(`{"a":2}`), 412, "precondition_failed"},
		{"If-Match on absent", "PUT", doc + "absent", map[string]string{"If-Match": `"1"`}, []byte(`{"a":2}`), 412, "precondition_failed"},
		{"If-Match * on absent", "PUT", doc + "absent", map[string]string{"If-Match": "*"}, []byte(`{"a":2}`), 412, "precondition_failed"},
		{"Idempotency-Key reused with another body", "POST", base + "/v1/collections/notes/docs", map[string]string{"Idempotency-Key": "k-1"}, []byte(`{"a":2}`), 422, "idempotency_key_reused"},
		{"unknown write", "GET", base + "/v1/writes/nope", nil, nil, 404, "not_found"},
		// What the batch's JSON or a store would change or refuse is refused here, before it
		// can be published: the core would drop the whole batch, or stall its partition.
		{"Idempotency-Key not ASCII", "PUT", doc + "existing", map[string]string{"Idempotency-Key": strings.Repeat("\xff", 200)}, []byte(`{"a":2}`), 400, "bad_request"},
		{"X-Api-Key not ASCII", "PUT", doc + "existing", map[string]string{"Idempotency-Key": "k-2", "X-Api-Key": "app-\xe9"}, []byte(`{"a":2}`), 400, "bad_request"},
		{"body not UTF-8", "PUT", doc + "existing", nil, []byte("{\"a\":\"\xff\"}"), 400, "bad_json"},
		{"number beyond numeric's decimals", "PUT", doc + "existing", nil, []byte(`{"n":1e-400000}`), 400, "bad_json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := clustertest.Do(t, tc.method, tc.url, tc.headers, tc.body)
			expectProblem(t, r, tc.status, tc.code)
			if tc.status == 405 && r.Header["Allow"] == "" {
				t.Error("405 without Allow")
			}
		})
	}
	t.Run("oversized body", func(t *testing.T) {
		// The edge answers from the headers, before the body: a client that sent the whole
		// body first could find the connection closed under it.
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "PUT /v1/collections/notes/docs/existing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", 2<<20)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		hdr := map[string]string{}
		for k := range resp.Header {
			hdr[k] = resp.Header.Get(k)
		}
		expectProblem(t, clustertest.Response{Status: resp.StatusCode, Header: hdr, Body: body}, 413, "body_too_large")
	})
	// Nothing that was refused changed the document.
	r := clustertest.Do(t, "GET", doc+"existing", nil, nil)
	if !strings.Contains(string(r.Body), `"version":1`) || !strings.Contains(string(r.Body), `"data":{"a":1}`) {
		t.Fatalf("refused writes changed the document: %s", r.Body)
	}
}

func listCursor(t *testing.T, base string) string {
	t.Helper()
	for i := range 3 {
		clustertest.Do(t, "PUT", fmt.Sprintf("%s/v1/collections/paged/docs/p%d", base, i), nil, []byte(`{}`))
	}
	r := clustertest.Do(t, "GET", base+"/v1/collections/paged/docs?limit=1", nil, nil)
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	if err := json.Unmarshal(r.Body, &page); err != nil || page.NextCursor == "" {
		t.Fatalf("no cursor in %s", r.Body)
	}
	return page.NextCursor
}

func TestConditionalRequests(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	url := c.Edge(0) + "/v1/collections/notes/docs/n"
	r := clustertest.Do(t, "PUT", url, nil, []byte(`{"v":1}`))
	tag := r.Header["Etag"]
	if r.Status != 201 || tag != `"1"` {
		t.Fatalf("create: %d ETag %q", r.Status, tag)
	}
	if r := clustertest.Do(t, "GET", url, map[string]string{"If-None-Match": tag}, nil); r.Status != 304 || len(r.Body) != 0 {
		t.Fatalf("If-None-Match current: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "GET", url, map[string]string{"If-None-Match": `"0", ` + tag}, nil); r.Status != 304 {
		t.Fatalf("If-None-Match list: %d", r.Status)
	}
	if r := clustertest.Do(t, "GET", url, map[string]string{"If-None-Match": `"9"`}, nil); r.Status != 200 {
		t.Fatalf("If-None-Match other: %d", r.Status)
	}
	r = clustertest.Do(t, "PATCH", url, map[string]string{"If-Match": tag}, []byte(`{"w":2}`))
	if r.Status != 200 || r.Header["Etag"] != `"2"` || !strings.Contains(string(r.Body), `"data":{"v":1,"w":2}`) {
		t.Fatalf("patch If-Match current: %d %s %s", r.Status, r.Header["Etag"], r.Body)
	}
	if r := clustertest.Do(t, "PUT", url, map[string]string{"If-Match": "*"}, []byte(`{"v":1,"w":3}`)); r.Status != 200 || r.Header["Etag"] != `"3"` {
		t.Fatalf("put with If-Match * on a live document: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "DELETE", url, map[string]string{"If-Match": tag}, nil); r.Status != 412 {
		t.Fatalf("delete with stale If-Match: %d", r.Status)
	}
	if r := clustertest.Do(t, "DELETE", url, map[string]string{"If-Match": `"3"`}, nil); r.Status != 204 {
		t.Fatalf("delete with current If-Match: %d %s", r.Status, r.Body)
	}
}

func TestIdempotencyKey(t *testing.T) {
	ecfg := edge.DefaultConfig()
	ecfg.WriteTimeout = 300 * time.Millisecond
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"a", "b"}, Edge: &ecfg})
	list := c.Edge(0) + "/v1/collections/orders/docs"
	key := map[string]string{"Idempotency-Key": "order-42"}

	first := clustertest.Do(t, "POST", list, key, []byte(`{"total":42}`))
	if first.Status != 201 || first.Header["Idempotent-Replayed"] != "" {
		t.Fatalf("first: %d %v", first.Status, first.Header)
	}
	// The same request again, through either edge, replays the first answer.
	for i := range 2 {
		again := clustertest.Do(t, "POST", c.Edge(i)+"/v1/collections/orders/docs", key, []byte(`{"total":42}`))
		if again.Status != 201 || again.Header["Idempotent-Replayed"] != "true" || string(again.Body) != string(first.Body) {
			t.Fatalf("replay through edge %d: %d %v %s, want %s", i, again.Status, again.Header, again.Body, first.Body)
		}
	}
	// Another app's key of the same name is another key.
	other := clustertest.Do(t, "POST", list, map[string]string{"Idempotency-Key": "order-42", "X-Api-Key": "app-2"}, []byte(`{"total":1}`))
	if other.Status != 201 || other.Header["Idempotent-Replayed"] != "" {
		t.Fatalf("other app: %d %v", other.Status, other.Header)
	}

	// While the first request with a key is still in flight, a second one is refused.
	if err := c.StopCore(); err != nil {
		t.Fatal(err)
	}
	slow := map[string]string{"Idempotency-Key": "slow-1"}
	queued := clustertest.Do(t, "POST", list, slow, []byte(`{"total":7}`))
	if queued.Status != 202 {
		t.Fatalf("with the core stopped: %d %s", queued.Status, queued.Body)
	}
	var receipt struct {
		WriteID   string `json:"write_id"`
		Status    string `json:"status"`
		StatusURL string `json:"status_url"`
		ID        string `json:"id"`
	}
	if err := json.Unmarshal(queued.Body, &receipt); err != nil || receipt.Status != "queued" || receipt.StatusURL != "/v1/writes/"+receipt.WriteID {
		t.Fatalf("receipt %s: %v", queued.Body, err)
	}
	expectProblem(t, clustertest.Do(t, "POST", list, slow, []byte(`{"total":7}`)), 409, "idempotency_key_in_flight")
	expectProblem(t, clustertest.Do(t, "POST", list, slow, []byte(`{"total":8}`)), 422, "idempotency_key_reused")
	if err := c.StartCore(); err != nil {
		t.Fatal(err)
	}
	status := c.Edge(1) + receipt.StatusURL
	clustertest.Eventually(t, 30*time.Second, func() error {
		r := clustertest.Do(t, "GET", status, nil, nil)
		if !strings.Contains(string(r.Body), `"status":"applied"`) {
			return fmt.Errorf("write status %d %s", r.Status, r.Body)
		}
		if !strings.Contains(string(r.Body), `"id":"`+receipt.ID+`"`) {
			return fmt.Errorf("write status without the document: %s", r.Body)
		}
		return nil
	})
	replay := clustertest.Do(t, "POST", list, slow, []byte(`{"total":7}`))
	if replay.Status != 201 || replay.Header["Idempotent-Replayed"] != "true" || !strings.Contains(string(replay.Body), receipt.ID) {
		t.Fatalf("replay after apply: %d %v %s", replay.Status, replay.Header, replay.Body)
	}
}

func TestListAndSync(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	base := c.Edge(0)
	for i := range 7 {
		clustertest.Do(t, "PUT", fmt.Sprintf("%s/v1/collections/tasks/docs/t%d", base, i), nil, fmt.Appendf(nil, `{"i":%d}`, i))
	}
	clustertest.Do(t, "DELETE", base+"/v1/collections/tasks/docs/t3", nil, nil)

	type page struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
		NextCursor string `json:"next_cursor"`
	}
	var ids []string
	url := base + "/v1/collections/tasks/docs?limit=2&order=-id"
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		r := clustertest.Do(t, "GET", url, nil, nil)
		var p page
		if err := json.Unmarshal(r.Body, &p); err != nil || r.Status != 200 {
			t.Fatalf("list %d %s: %v", r.Status, r.Body, err)
		}
		for _, it := range p.Items {
			ids = append(ids, it.ID)
		}
		if p.NextCursor == "" {
			break
		}
		url = base + "/v1/collections/tasks/docs?limit=2&order=-id&cursor=" + p.NextCursor
	}
	if got := strings.Join(ids, ","); got != "t6,t5,t4,t2,t1,t0" {
		t.Fatalf("listed %s", got)
	}
	// A cached page is retired by a change to its collection.
	first := clustertest.Do(t, "GET", base+"/v1/collections/tasks/docs?limit=1", nil, nil)
	clustertest.Do(t, "PUT", base+"/v1/collections/tasks/docs/a0", nil, []byte(`{}`))
	after := clustertest.Do(t, "GET", base+"/v1/collections/tasks/docs?limit=1", nil, nil)
	if !strings.Contains(string(after.Body), `"id":"a0"`) {
		t.Fatalf("stale page after a write: before %s after %s", first.Body, after.Body)
	}

	type syncPage struct {
		Changes []struct {
			ID      string          `json:"id"`
			Deleted bool            `json:"deleted"`
			Data    json.RawMessage `json:"data"`
		} `json:"changes"`
		NextCursor string `json:"next_cursor"`
		HasMore    bool   `json:"has_more"`
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("sync does not end")
		}
		r := clustertest.Do(t, "GET", base+"/v1/sync?collections=tasks,other&limit=3&cursor="+cursor, nil, nil)
		var p syncPage
		if err := json.Unmarshal(r.Body, &p); err != nil || r.Status != 200 {
			t.Fatalf("sync %d %s: %v", r.Status, r.Body, err)
		}
		for _, ch := range p.Changes {
			if seen[ch.ID] {
				t.Fatalf("sync returned %s twice", ch.ID)
			}
			seen[ch.ID] = true
			if ch.ID == "t3" && (!ch.Deleted || string(ch.Data) != "null") {
				t.Fatalf("tombstone %+v", ch)
			}
		}
		cursor = p.NextCursor
		if !p.HasMore {
			break
		}
	}
	if len(seen) != 8 {
		t.Fatalf("sync saw %d documents, want 8: %v", len(seen), seen)
	}
	// Resuming from the end yields only what changed since.
	clustertest.Do(t, "PATCH", base+"/v1/collections/tasks/docs/t1", nil, []byte(`{"done":true}`))
	r := clustertest.Do(t, "GET", base+"/v1/sync?collections=tasks,other&cursor="+cursor, nil, nil)
	var p syncPage
	if err := json.Unmarshal(r.Body, &p); err != nil || len(p.Changes) != 1 || p.Changes[0].ID != "t1" {
		t.Fatalf("resumed sync: %s", r.Body)
	}
}

func TestEdgesAndHealth(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	clustertest.Eventually(t, 10*time.Second, func() error {
		r := clustertest.Do(t, "GET", c.Edge(1)+"/v1/edges", nil, nil)
		var out struct {
			Edges []struct {
				ID      string `json:"id"`
				Region  string `json:"region"`
				URL     string `json:"url"`
				Healthy bool   `json:"healthy"`
			} `json:"edges"`
		}
		if err := json.Unmarshal(r.Body, &out); err != nil {
			return err
		}
		if len(out.Edges) != 3 {
			return fmt.Errorf("%d edges: %s", len(out.Edges), r.Body)
		}
		urls := map[string]bool{}
		for _, e := range out.Edges {
			if !e.Healthy || e.ID == "" || e.Region == "" {
				return fmt.Errorf("edge %+v", e)
			}
			urls[e.URL] = true
		}
		for _, u := range c.EdgeURLs() {
			if !urls[u] {
				return fmt.Errorf("edge %s not listed: %s", u, r.Body)
			}
		}
		return nil
	})
	// Every GET says how the edge's cache took part (RFC 9211), for the API's own routes too.
	for _, path := range []string{"/healthz", "/readyz", "/v1/edges", "/v1/openapi.json", "/v1/sync?collections=a", "/v1/collections/a/docs", "/v1/collections/a/docs/x"} {
		r := clustertest.Do(t, "GET", c.Edge(0)+path, nil, nil)
		if !strings.HasPrefix(r.Header["Cache-Status"], "perch;") {
			t.Errorf("GET %s: %d without Cache-Status", path, r.Status)
		}
	}
	if r := clustertest.Do(t, "GET", c.Edge(0)+"/healthz", nil, nil); r.Status != 200 {
		t.Fatalf("healthz %d", r.Status)
	}
	if r := clustertest.Do(t, "GET", c.Edge(0)+"/readyz", nil, nil); r.Status != 200 {
		t.Fatalf("readyz %d", r.Status)
	}
	// A killed edge leaves the list within 5 s.
	c.KillEdge(2)
	gone := c.EdgeURLs()[2]
	clustertest.Eventually(t, 5*time.Second, func() error {
		r := clustertest.Do(t, "GET", c.Edge(0)+"/v1/edges", nil, nil)
		if strings.Contains(string(r.Body), gone) {
			return fmt.Errorf("killed edge still listed: %s", r.Body)
		}
		return nil
	})
}

// TestRespondAsync: with Prefer: respond-async the edge answers 202 as soon as the write is
// durable, and the write is applied all the same.
func TestRespondAsync(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	base := c.Edge(0)
	for _, prefer := range []string{"respond-async", "return=minimal, respond-async; wait=0"} {
		r := clustertest.Do(t, "PUT", base+"/v1/collections/async/docs/a", map[string]string{"Prefer": prefer}, []byte(`{"p":1}`))
		if r.Status != 202 || r.Header["Preference-Applied"] != "respond-async" {
			t.Fatalf("Prefer %q: %d %v %s", prefer, r.Status, r.Header, r.Body)
		}
		var receipt struct {
			StatusURL string `json:"status_url"`
		}
		if err := json.Unmarshal(r.Body, &receipt); err != nil || receipt.StatusURL == "" {
			t.Fatalf("receipt %s: %v", r.Body, err)
		}
		clustertest.Eventually(t, 10*time.Second, func() error {
			s := clustertest.Do(t, "GET", base+receipt.StatusURL, nil, nil)
			if !strings.Contains(string(s.Body), `"status":"applied"`) {
				return fmt.Errorf("%d %s", s.Status, s.Body)
			}
			return nil
		})
	}
	// Other preferences are ignored: the write waits for its outcome.
	r := clustertest.Do(t, "PUT", base+"/v1/collections/async/docs/b", map[string]string{"Prefer": "return=representation"}, []byte(`{}`))
	if r.Status != 201 || r.Header["Preference-Applied"] != "" {
		t.Fatalf("Prefer return=representation: %d %v", r.Status, r.Header)
	}
}

func TestUnstorableBodies(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	deep := `{"a":` + strings.Repeat("[", wire.MaxNesting) + strings.Repeat("]", wire.MaxNesting) + `}`
	for _, body := range []string{`{"a":"\u0000"}`, `{"a":"\ud800"}`, `{"n":1e400000}`, deep} {
		r := clustertest.Do(t, "PUT", c.Edge(0)+"/v1/collections/u/docs/x", nil, []byte(body))
		expectProblem(t, r, 400, "bad_json")
	}
}

// TestReadyzWhileDraining: an edge asked to stop answers /readyz 503 (so that load balancers
// take it out) while it still serves, for its drain delay.
func TestReadyzWhileDraining(t *testing.T) {
	ecfg := edge.DefaultConfig()
	ecfg.DrainDelay = 3 * time.Second
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"a"}, Edge: &ecfg})
	url := c.Edge(0)
	stopped := make(chan error, 1)
	go func() { stopped <- c.StopEdge(0) }()
	clustertest.Eventually(t, 5*time.Second, func() error {
		r, err := clustertest.Send("GET", url+"/readyz", nil, nil)
		if err != nil {
			return err
		}
		if r.Status != 503 {
			return fmt.Errorf("readyz %d while draining", r.Status)
		}
		return nil
	})
	// Still serving: liveness holds, writes are refused with a problem rather than lost.
	if r, err := clustertest.Send("GET", url+"/healthz", nil, nil); err != nil || r.Status != 200 {
		t.Fatalf("healthz while draining: %v %v", r.Status, err)
	}
	if r, err := clustertest.Send("PUT", url+"/v1/collections/d/docs/x", nil, []byte(`{}`)); err != nil || r.Status != 503 {
		t.Fatalf("write while draining: %v %v", r.Status, err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// TestCompression: documents and list pages of at least CompressMinBytes go out in the coding
// the client prefers, made once per cache entry and coding; smaller answers and problems go
// out as they are.
func TestCompression(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	base := c.Edge(0)
	big := base + "/v1/collections/comp/docs/big"
	small := base + "/v1/collections/comp/docs/small"
	data := fmt.Appendf(nil, `{"text":%q}`, strings.Repeat("Perch compresses repetitive JSON. ", 100))
	for url, body := range map[string][]byte{big: data, small: []byte(`{"a":1}`)} {
		if r := clustertest.Do(t, "PUT", url, nil, body); r.Status != 201 {
			t.Fatalf("PUT %s: %d %s", url, r.Status, r.Body)
		}
	}
	// Every request below meets the entry the cache keeps, not a fill's of its own.
	var plain clustertest.Response
	clustertest.Eventually(t, 10*time.Second, func() error {
		plain = clustertest.Do(t, "GET", big, nil, nil)
		if cs := plain.Header["Cache-Status"]; cs != "perch; hit" {
			return fmt.Errorf("Cache-Status %q", cs)
		}
		return nil
	})
	if plain.Header["Content-Encoding"] != "" || plain.Header["Vary"] != "Accept-Encoding" || plain.Header["Etag"] != `"1"` {
		t.Fatalf("without Accept-Encoding: %v", plain.Header)
	}

	gunzip := func(b []byte) ([]byte, error) {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	}
	unbrotli := func(b []byte) ([]byte, error) { return fasthttp.AppendUnbrotliBytes(nil, b) }
	for _, tc := range []struct {
		accept, coding, etag string
		decode               func([]byte) ([]byte, error)
	}{
		{"br", "br", `"1-br"`, unbrotli},
		{"gzip;q=0.5, identity;q=0.1, br;q=0", "gzip", `"1-gz"`, gunzip},
	} {
		t.Run(tc.coding, func(t *testing.T) {
			ae := map[string]string{"Accept-Encoding": tc.accept}
			r := clustertest.Do(t, "GET", big, ae, nil)
			if r.Status != 200 || r.Header["Content-Encoding"] != tc.coding || r.Header["Vary"] != "Accept-Encoding" || r.Header["Etag"] != tc.etag {
				t.Fatalf("%d %v", r.Status, r.Header)
			}
			if r.Header["Content-Type"] != "application/json" || len(r.Body) >= len(plain.Body) {
				t.Fatalf("Content-Type %q, %d bytes for %d", r.Header["Content-Type"], len(r.Body), len(plain.Body))
			}
			if body, err := tc.decode(r.Body); err != nil || !bytes.Equal(body, plain.Body) {
				t.Fatalf("decoded %q: %v", body, err)
			}
			head := clustertest.Do(t, "HEAD", big, ae, nil)
			if head.Status != 200 || head.Header["Content-Length"] != strconv.Itoa(len(r.Body)) {
				t.Errorf("HEAD: %d Content-Length %q for a body of %d", head.Status, head.Header["Content-Length"], len(r.Body))
			}
			for _, h := range []string{"Content-Encoding", "Vary", "Etag", "Content-Type", "Content-Length"} {
				if head.Header[h] != r.Header[h] {
					t.Errorf("HEAD %s %q, GET %q", h, head.Header[h], r.Header[h])
				}
			}
			// The form's ETag revalidates, and the 304 names it and varies too.
			inm := map[string]string{"Accept-Encoding": tc.accept, "If-None-Match": tc.etag}
			if r := clustertest.Do(t, "GET", big, inm, nil); r.Status != 304 || r.Header["Etag"] != tc.etag || r.Header["Vary"] != "Accept-Encoding" || len(r.Body) != 0 {
				t.Fatalf("If-None-Match %s: %d %v", tc.etag, r.Status, r.Header)
			}
		})
	}
	// Any form's ETag revalidates, whatever this request would get: the client has the
	// version; the 304 names the form the client has.
	for inm, want := range map[string]string{`"1-br"`: `"1-br"`, `"0", "1-gz"`: `"1-gz"`, `"1-gz", "1"`: `"1"`} {
		r := clustertest.Do(t, "GET", big, map[string]string{"If-None-Match": inm}, nil)
		if r.Status != 304 || r.Header["Etag"] != want {
			t.Errorf("If-None-Match %s without Accept-Encoding: %d ETag %q, want 304 %s", inm, r.Status, r.Header["Etag"], want)
		}
	}
	if r := clustertest.Do(t, "GET", big, map[string]string{"If-None-Match": `"2-br"`, "Accept-Encoding": "br"}, nil); r.Status != 200 {
		t.Errorf("If-None-Match of another version: %d", r.Status)
	}

	// Each coding was made once for the entry, however many answers it served.
	made := c.Metric("perch_edge_compressions_total", "encoding", "result")
	if made["br,kept"] != 1 || made["gzip,kept"] != 1 || made["br,not_smaller"]+made["gzip,not_smaller"] != 0 {
		t.Errorf("compressions %v, want one kept per coding", made)
	}
	// GET, HEAD and GET (the one of another version) with br; GET and HEAD with gzip.
	if sent := c.Metric("perch_edge_compressed_responses_total", "encoding"); sent["br"] != 3 || sent["gzip"] != 2 {
		t.Errorf("compressed answers %v, want br 3, gzip 2", sent)
	}

	// Small bodies and problems are sent as they are, without Vary.
	for _, url := range []string{small, base + "/v1/collections/comp/docs/absent"} {
		r := clustertest.Do(t, "GET", url, map[string]string{"Accept-Encoding": "br, gzip"}, nil)
		if r.Header["Content-Encoding"] != "" || r.Header["Vary"] != "" {
			t.Errorf("GET %s: %d %v", url, r.Status, r.Header)
		}
	}

	// A list page is compressed too; it has no ETag.
	list := clustertest.Do(t, "GET", base+"/v1/collections/comp/docs", map[string]string{"Accept-Encoding": "gzip, br"}, nil)
	// It is the fill's answer, compressed on the way out like a hit.
	if list.Status != 200 || list.Header["Cache-Status"] != "perch; fwd=miss; stored" || list.Header["Content-Encoding"] != "br" ||
		list.Header["Vary"] != "Accept-Encoding" || list.Header["Etag"] != "" {
		t.Fatalf("list: %d %v", list.Status, list.Header)
	}
	if page, err := unbrotli(list.Body); err != nil || !bytes.Contains(page, []byte(`"id":"big"`)) || !json.Valid(page) {
		t.Fatalf("list page %q: %v", page, err)
	}

	// Writes take the ETag of any form in If-Match: the client sends back what it was given.
	r := clustertest.Do(t, "PATCH", big, map[string]string{"If-Match": `"1-br"`}, []byte(`{"more":1}`))
	if r.Status != 200 || r.Header["Etag"] != `"2"` {
		t.Fatalf("PATCH If-Match \"1-br\": %d %v %s", r.Status, r.Header, r.Body)
	}
	expectProblem(t, clustertest.Do(t, "PATCH", big, map[string]string{"If-Match": `"1-gz"`}, []byte(`{"more":2}`)), 412, "precondition_failed")
	if r := clustertest.Do(t, "PATCH", big, map[string]string{"If-Match": `"2-gz"`}, []byte(`{"more":3}`)); r.Status != 200 || r.Header["Etag"] != `"3"` {
		t.Fatalf("PATCH If-Match \"2-gz\": %d %s", r.Status, r.Body)
	}
}

// TestRefusedFillIsNotCalledStored: a fill the cache does not take (here every entry costs
// more than the whole cache) is answered, but its Cache-Status does not say stored, and the
// next read is a miss again, documents and list pages alike.
func TestRefusedFillIsNotCalledStored(t *testing.T) {
	ecfg := edge.DefaultConfig()
	ecfg.CacheBytes = 64
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}, Edge: &ecfg})
	base := c.Edge(0)
	if r := clustertest.Do(t, "PUT", base+"/v1/collections/notes/docs/a", nil, []byte(`{"text":"more than the cache holds"}`)); r.Status != 201 {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	for _, path := range []string{"/v1/collections/notes/docs/a", "/v1/collections/notes/docs"} {
		for i := range 2 {
			r := clustertest.Do(t, "GET", base+path, nil, nil)
			if r.Status != 200 || r.Header["Cache-Status"] != "perch; fwd=miss" {
				t.Fatalf("GET %s (%d): %d %q", path, i+1, r.Status, r.Header["Cache-Status"])
			}
		}
	}
}
