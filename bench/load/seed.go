package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// seedAgent is the User-Agent of the seed's requests. They carry no X-Api-Key, so that a
// rate-limit scenario's client is over its limit only in the run.
const seedAgent = "perch-bench-seed"

// seeder sends the seed's requests, retrying what the edge asks to retry (429, 503 with
// Retry-After) and transport errors, a few times.
type seeder struct {
	client  *fasthttp.Client
	timeout time.Duration
}

type answer struct {
	status int
	body   []byte
}

func (s *seeder) do(ctx context.Context, method, url string, body []byte, headers ...string) (answer, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	var last error
	for attempt := 0; attempt < 10; attempt++ {
		req.Reset()
		resp.Reset()
		req.Header.SetMethod(method)
		req.SetRequestURI(url)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		if body != nil {
			req.Header.SetContentType("application/json")
			req.SetBody(body)
		}
		wait := 100 * time.Millisecond << min(attempt, 4)
		if err := s.client.DoTimeout(req, resp, s.timeout); err != nil {
			last = fmt.Errorf("%s %s: %w", method, url, err)
		} else if st := resp.StatusCode(); st == 429 || st == 503 {
			last = fmt.Errorf("%s %s: %d %s", method, url, st, resp.Body())
			if ra, err := strconv.Atoi(string(resp.Header.Peek("Retry-After"))); err == nil && ra > 0 {
				wait = min(time.Duration(ra)*time.Second, 5*time.Second)
			}
		} else {
			return answer{status: st, body: append([]byte(nil), resp.Body()...)}, nil
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return answer{}, ctx.Err()
		}
	}
	return answer{}, last
}

// seed writes the scenario's documents through the first target (PUT, recorded in the
// ledger), reads each back through every target until it answers 200 (the other edges
// converge within ~100 ms), then finds the list pages and the sync cursor the mix needs.
// It returns the number of documents seeded.
func (p *plan) seed(ctx context.Context, bases []string, timeout time.Duration, ledger *Ledger) (int, error) {
	s := &seeder{client: &fasthttp.Client{Name: seedAgent, MaxConnsPerHost: 64, MaxIdemponentCallAttempts: 1,
		ReadTimeout: timeout, WriteTimeout: timeout}, timeout: timeout}
	defer s.client.CloseIdleConnections()
	const parallel = 32
	err := parallelDo(ctx, len(p.ids), parallel, func(i int) error {
		o := op{kind: KindPut, doc: i, key: p.runID + "-seed-" + strconv.Itoa(i)}
		body := p.writeBody(nil, &o)
		a, err := s.do(ctx, "PUT", bases[0]+p.docPaths[i], body, "Idempotency-Key", o.key)
		if err != nil {
			return err
		}
		if a.status < 200 || a.status > 202 {
			return fmt.Errorf("PUT %s: %d %s", p.docPaths[i], a.status, a.body)
		}
		if ledger != nil {
			e := LedgerEntry{Key: o.key, Method: "PUT", Collection: p.s.Collection, ID: p.ids[i], Status: a.status, Phase: "seed"}
			var ans struct {
				Version int64  `json:"version"`
				WriteID string `json:"write_id"`
			}
			if json.Unmarshal(a.body, &ans) == nil {
				e.Version, e.WriteID = ans.Version, ans.WriteID
				if a.status == 202 {
					e.Version = 0
				}
			}
			ledger.Add(e)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("seed: %w", err)
	}
	err = parallelDo(ctx, len(p.ids)*len(bases), parallel, func(i int) error {
		doc, base := i/len(bases), bases[i%len(bases)]
		deadline := time.Now().Add(10 * time.Second)
		for {
			a, err := s.do(ctx, "GET", base+p.docPaths[doc], nil)
			if err != nil {
				return err
			}
			if a.status == 200 {
				return nil
			}
			if a.status != 404 || time.Now().After(deadline) {
				return fmt.Errorf("GET %s%s: %d %s", base, p.docPaths[doc], a.status, a.body)
			}
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	if err != nil {
		return 0, fmt.Errorf("seed: read back: %w", err)
	}
	if p.s.has(KindList) {
		path := p.listPaths[0]
		for len(p.listPaths) < p.s.ListPages {
			a, err := s.do(ctx, "GET", bases[0]+path, nil)
			if err != nil {
				return 0, fmt.Errorf("seed: list: %w", err)
			}
			var page struct {
				NextCursor string `json:"next_cursor"`
			}
			if a.status != 200 || json.Unmarshal(a.body, &page) != nil {
				return 0, fmt.Errorf("seed: GET %s: %d %s", path, a.status, a.body)
			}
			if page.NextCursor == "" {
				break
			}
			path = p.listPaths[0] + "&cursor=" + url.QueryEscape(page.NextCursor)
			p.listPaths = append(p.listPaths, path)
		}
	}
	if p.s.has(KindSync) {
		cursor := ""
		for range 1000 {
			q := "/v1/sync?collections=" + p.s.Collection + "&limit=1000"
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			a, err := s.do(ctx, "GET", bases[0]+q, nil)
			if err != nil {
				return 0, fmt.Errorf("seed: sync: %w", err)
			}
			var page struct {
				NextCursor string `json:"next_cursor"`
				HasMore    bool   `json:"has_more"`
			}
			if a.status != 200 || json.Unmarshal(a.body, &page) != nil {
				return 0, fmt.Errorf("seed: GET %s: %d %s", q, a.status, a.body)
			}
			if page.NextCursor != "" {
				cursor = page.NextCursor
			}
			if !page.HasMore {
				break
			}
		}
		p.syncStart = cursor
		for i := range p.devices {
			p.devices[i].cursor = cursor
		}
	}
	return len(p.ids), nil
}

// parallelDo calls f(0) … f(n-1) from up to par goroutines and returns the first error;
// after one, the calls not yet started are skipped.
func parallelDo(ctx context.Context, n, par int, f func(int) error) error {
	var (
		mu    sync.Mutex
		first error
		next  int
		wg    sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if first != nil || next >= n || ctx.Err() != nil {
			return 0, false
		}
		next++
		return next - 1, true
	}
	for range min(par, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if first != nil && errors.Is(first, context.Canceled) && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}
