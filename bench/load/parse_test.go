package load_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/bench/load"
)

func TestParseThreshold(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want load.Threshold
		str  string
	}{
		{"p99<20ms", load.Threshold{Metric: "p", Percentile: 99, Op: "<", Value: 20}, "p99<20ms"},
		{" p99.9 <= 1.5s ", load.Threshold{Metric: "p", Percentile: 99.9, Op: "<=", Value: 1500}, "p99.9<=1500ms"},
		{"p50{get}<500us", load.Threshold{Metric: "p", Percentile: 50, Endpoint: load.KindGet, Op: "<", Value: 0.5}, "p50{get}<0.5ms"},
		{"max<2µs", load.Threshold{Metric: "max", Op: "<", Value: 0.002}, "max<0.002ms"},
		{"mean{sync} < 3 ms", load.Threshold{Metric: "mean", Endpoint: load.KindSync, Op: "<", Value: 3}, "mean{sync}<3ms"},
		{"errors<0.1%", load.Threshold{Metric: "errors", Op: "<", Value: 0.1, Percent: true}, "errors<0.1%"},
		{"errors{put}<=5", load.Threshold{Metric: "errors", Endpoint: load.KindPut, Op: "<=", Value: 5}, "errors{put}<=5"},
		{"dropped<=0", load.Threshold{Metric: "dropped", Op: "<=", Value: 0}, "dropped<=0"},
		{"late<1%", load.Threshold{Metric: "late", Op: "<", Value: 1, Percent: true}, "late<1%"},
		{"rate>=95%", load.Threshold{Metric: "rate", Op: ">=", Value: 95, Percent: true}, "rate>=95%"},
		{"rate>600/m", load.Threshold{Metric: "rate", Op: ">", Value: 10}, "rate>10/s"},
		{"p100<1s", load.Threshold{Metric: "p", Percentile: 100, Op: "<", Value: 1000}, "p100<1000ms"},
	} {
		got, err := load.ParseThreshold(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got != tc.want || got.String() != tc.str {
			t.Errorf("%q: %+v %q, want %+v %q", tc.in, got, got.String(), tc.want, tc.str)
		}
	}
	for _, bad := range []string{"", "p99", "p99<", "p99<20", "p99<20xs", "p101<1ms", "p<1ms", "pp<1ms", "p999<1ms",
		"errors<1ms", "errors<101%", "latency<1ms", "p99{nope}<1ms", "p99{get<1ms", "late{get}<1", "rate<1ms",
		"p99=20ms", "p99<-1ms", "p99<1.2.3ms", "p99<1e3ms", "p99<.ms"} {
		if th, err := load.ParseThreshold(bad); err == nil {
			t.Errorf("%q parsed as %+v, want an error", bad, th)
		}
	}
}

func FuzzParseThreshold(f *testing.F) {
	for _, s := range []string{"p99<20ms", "errors<0.1%", "p99.9{get}<=1.5s", "rate>=95%", "rate>10/m", "dropped<=0", "max<2µs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		th, err := load.ParseThreshold(s)
		if err != nil {
			return
		}
		again, err := load.ParseThreshold(th.String())
		if err != nil || again != th {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, th, th.String(), again, err)
		}
	})
}

const scenarioYAML = `
# a heavier feed: more writes, bigger documents
base: feed
name: feed-heavy
docs: 200
doc_bytes: 4096
zipf: 1.3
mix:
  - {kind: get, weight: 60}
  - {kind: list, weight: 20}
  - {kind: put, weight: 15}
  - {kind: post, weight: 5}
burst: {period: 2s, duty: 0.5}
`

func TestParseScenario(t *testing.T) {
	s, err := load.ParseScenario([]byte(scenarioYAML))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "feed-heavy" || s.Docs != 200 || s.DocBytes != 4096 || s.Zipf != 1.3 || len(s.Mix) != 4 ||
		s.Mix[3] != (load.Step{Kind: load.KindPost, Weight: 5}) || s.Collection != "bench" || s.ListLimit != 20 ||
		s.Burst == nil || s.Burst.Period != 2*time.Second || s.Burst.Duty != 0.5 || !strings.HasPrefix(s.Description, "a feed") {
		t.Fatalf("%+v", s)
	}
	if w := s.WriteShare(); w != 0.2 {
		t.Errorf("write share %g", w)
	}
	// JSON is YAML too; without a base every field is the file's or a default.
	s, err = load.ParseScenario([]byte(`{"name":"mine","collection":"c1","mix":[{"kind":"sync","weight":1}],"devices":5}`))
	if err != nil || s.Name != "mine" || s.Docs != 1000 || s.Devices != 5 || s.Mix[0].Kind != load.KindSync {
		t.Fatalf("%+v, %v", s, err)
	}
	for _, bad := range []string{
		`name: x`, // no mix
		`{name: x, mix: [{kind: get, weight: 1}], nope: 1}`, // unknown field
		`{name: x, mix: [{kind: fly, weight: 1}]}`,
		`{name: x, mix: [{kind: get, weight: 0}]}`,
		`{name: "a b", mix: [{kind: get, weight: 1}]}`,
		`{name: x, collection: "a.b", mix: [{kind: get, weight: 1}]}`,
		`{name: x, zipf: 0.5, mix: [{kind: get, weight: 1}]}`,
		`{name: x, docs: -1, mix: [{kind: get, weight: 1}]}`,
		`{name: x, burst: {duty: 2}, mix: [{kind: get, weight: 1}]}`,
		`{base: nope}`,
		`[1, 2]`,
		"x: &a [1, 2]\nname: *a\nmix: [{kind: get, weight: 1}]", // aliases: a billion laughs waiting to happen
	} {
		if s, err := load.ParseScenario([]byte(bad)); err == nil {
			t.Errorf("%s parsed as %+v", bad, s)
		}
	}
	if _, err := load.ParseScenario([]byte(`{base: auth}`)); !errors.Is(err, load.ErrNeedsAccounts) {
		t.Errorf("auth base: %v", err)
	}
	for _, name := range load.Builtins {
		s, err := load.Builtin(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Check(); (err != nil) != (name == "auth") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := load.Builtin("nope"); !errors.Is(err, load.ErrUnknownScenario) {
		t.Errorf("unknown: %v", err)
	}
}

func FuzzParseScenario(f *testing.F) {
	f.Add([]byte(scenarioYAML))
	f.Add([]byte(`{"name":"mine","mix":[{"kind":"sync","weight":1}]}`))
	f.Add([]byte("base: read-hot\ndocs: 5\n"))
	f.Add([]byte("name: x\nmix: !x 0")) // a tag where a list is expected: goccy/go-yaml panics on it
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := load.ParseScenario(data)
		if err != nil {
			return
		}
		if err := s.Check(); err != nil {
			t.Fatalf("ParseScenario returned a scenario that fails Check: %v", err)
		}
		if w := s.WriteShare(); w < 0 || w > 1 {
			t.Fatalf("write share %g", w)
		}
	})
}

func TestReadLedger(t *testing.T) {
	in := `{"key":"k1","api_key":"a","method":"PUT","collection":"c","id":"d1","status":201,"version":1,"phase":"seed"}

{"key":"k2","api_key":"a","method":"POST","collection":"c","id":"x","status":202,"write_id":"W","phase":"run"}
`
	es, err := load.ReadLedger(strings.NewReader(in))
	if err != nil || len(es) != 2 || es[1].WriteID != "W" || es[0].Version != 1 {
		t.Fatalf("%+v, %v", es, err)
	}
	for _, bad := range []string{`{"key":"k"}`, `{"key":"k","collection":"c","status":500}`, `nope`, `{"key":"k","collection":"c","status":200,"x":1}`,
		`{"key":"k","collection":"c","status":200} {"key":"k"}`, strings.Repeat("x", 70<<10)} {
		if es, err := load.ReadLedger(strings.NewReader(bad)); err == nil {
			t.Errorf("%.40s: %+v", bad, es)
		}
	}
	// What a Ledger writes, ReadLedger reads.
	var buf bytes.Buffer
	l := load.NewLedger(&buf)
	l.Add(es[0])
	l.Add(es[1])
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	again, err := load.ReadLedger(&buf)
	if err != nil || len(again) != 2 || again[0] != es[0] || again[1] != es[1] || l.Len() != 2 {
		t.Fatalf("%+v, %v", again, err)
	}
}

func FuzzReadLedger(f *testing.F) {
	f.Add([]byte(`{"key":"k1","api_key":"a","method":"PUT","collection":"c","id":"d1","status":201,"version":1,"phase":"seed"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := load.ReadLedger(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, e := range es {
			if e.Key == "" || e.Status < 200 || e.Status > 299 {
				t.Fatalf("accepted %+v", e)
			}
		}
	})
}
