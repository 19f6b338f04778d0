package load

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/perchhq/perch/internal/yamlsafe"
)

// Kind is a kind of request a scenario sends. Each kind is also an endpoint of the report:
// its latencies and errors are kept apart.
type Kind string

// The kinds of requests.
const (
	// KindGet reads one seeded document: GET /v1/collections/{c}/docs/{id}, the id drawn
	// from a Zipf distribution over the seeded documents (Scenario.Zipf).
	KindGet Kind = "get"
	// KindList reads a list page: GET /v1/collections/{c}/docs?limit=N, the first page
	// mostly, else one of the next Scenario.ListPages pages (by their cursors).
	KindList Kind = "list"
	// KindPut replaces a seeded document (drawn as for get): PUT, 200.
	KindPut Kind = "put"
	// KindCreate creates a document under a new id: PUT, 201.
	KindCreate Kind = "create"
	// KindPost creates a document with a server-made id: POST /v1/collections/{c}/docs.
	KindPost Kind = "post"
	// KindSync polls for changes: GET /v1/sync?collections={c}&cursor=C, one of
	// Scenario.Devices devices each keeping the cursor its last poll returned.
	KindSync Kind = "sync"
	// KindLogin logs in and reads as a user. Perch has no accounts yet: a scenario with it
	// is refused with ErrNeedsAccounts.
	KindLogin Kind = "login"
)

// kinds lists the kinds in report order; a kind's index is its endpoint number.
var kinds = []Kind{KindGet, KindList, KindPut, KindCreate, KindPost, KindSync}

const numKinds = 6

func (k Kind) index() int { return slices.Index(kinds, k) }

// write reports whether requests of the kind are writes (recorded in the ledger).
func (k Kind) write() bool { return k == KindPut || k == KindCreate || k == KindPost }

// ErrNeedsAccounts is returned for a scenario that logs users in (the built-in auth, or a
// mix with login): Perch has no accounts yet.
var ErrNeedsAccounts = errors.New("the auth scenario needs user accounts (POST /v1/auth/signup and /v1/auth/login), which Perch does not have yet; run read-hot, feed, write-burst, sync or ratelimit")

// ErrUnknownScenario is returned by Builtin for a name it does not know.
var ErrUnknownScenario = errors.New("unknown scenario")

// Step is one kind of request of a scenario's mix, with its weight: the share of the sends
// that are of this kind is Weight over the sum of the mix's weights.
type Step struct {
	Kind   Kind `yaml:"kind" json:"kind"`
	Weight int  `yaml:"weight" json:"weight"`
}

// Scenario is a kind of traffic: what to seed and what to send. The zero value of a field
// means its default, except Mix, which is required. A scenario file is this struct in YAML
// (see bench/README.md); "base" starts it from a built-in scenario whose fields it
// overrides.
type Scenario struct {
	// Name names the scenario in reports: 1 to 64 of a-z A-Z 0-9 . _ -.
	Name string `yaml:"name" json:"name"`
	// Description says what the traffic stands for.
	Description string `yaml:"description" json:"description,omitempty"`
	// Collection holds the scenario's documents. Default "bench".
	Collection string `yaml:"collection" json:"collection"`
	// Docs is the number of documents seeded before the run. Default 1000.
	Docs int `yaml:"docs" json:"docs"`
	// DocBytes is the size of each document's data, and of each write's body, in bytes.
	// Default 1024 (an answer of about 1.2 KB).
	DocBytes int `yaml:"doc_bytes" json:"doc_bytes"`
	// Zipf is the exponent s (> 1) of the Zipf distribution over the seeded documents that
	// get and put draw from: higher is hotter. 0 means the default 1.1; -1 means uniform.
	Zipf float64 `yaml:"zipf" json:"zipf"`
	// APIKey is the X-Api-Key of every request of the run (the app, for rate limits by key
	// and the scope of Idempotency-Keys). Default none: requests without X-Api-Key, which
	// limits by key do not count.
	APIKey string `yaml:"api_key" json:"api_key"`
	// ListLimit is the page size of list reads. Default 20.
	ListLimit int `yaml:"list_limit" json:"list_limit"`
	// ListPages is how many pages list reads spread over. Default 5.
	ListPages int `yaml:"list_pages" json:"list_pages"`
	// SyncLimit is the most changes a sync poll asks for. Default 100.
	SyncLimit int `yaml:"sync_limit" json:"sync_limit"`
	// Devices is the number of syncing devices, each with its own cursor. Default 1000.
	Devices int `yaml:"devices" json:"devices"`
	// Mix is the requests to send and their weights. Required.
	Mix []Step `yaml:"mix" json:"mix"`
	// Burst, when set, makes arrivals bursty (see Burst); the run's rate is the mean.
	Burst *Burst `yaml:"burst" json:"burst,omitempty"`
	// ExpectRateLimit counts 429 answers that carry Retry-After as expected, not errors:
	// the scenario is a client over its rate limit. A 429 without Retry-After is an error.
	ExpectRateLimit bool `yaml:"expect_rate_limit" json:"expect_rate_limit,omitempty"`
}

// scenarioFile is a scenario file: a scenario and the built-in it starts from.
type scenarioFile struct {
	Base     string `yaml:"base"`
	Scenario `yaml:",inline"`
}

// Builtins are the names of the built-in scenarios, in the order the help lists them.
var Builtins = []string{"read-hot", "feed", "write-burst", "sync", "auth", "ratelimit"}

// Builtin returns a copy of the built-in scenario name, or an error wrapping
// ErrUnknownScenario. The auth scenario is returned like the others; Check refuses it.
func Builtin(name string) (*Scenario, error) {
	var s Scenario
	switch name {
	case "read-hot":
		s = Scenario{Description: "reads of hot documents: GET by id, Zipf-distributed over 1000 documents of 1 KB",
			Mix: []Step{{KindGet, 100}}}
	case "feed":
		s = Scenario{Description: "a feed: 90% reads (documents and list pages), 10% writes (replacing and creating documents)",
			Mix: []Step{{KindGet, 70}, {KindList, 20}, {KindPut, 7}, {KindCreate, 3}}}
	case "write-burst":
		s = Scenario{Description: "bursts of writes, as apps coming online flush their queues: 80% new documents, 20% replacements, sent in the first quarter of every second",
			Docs: 100, Mix: []Step{{KindCreate, 80}, {KindPut, 20}}, Burst: &Burst{Period: time.Second, Duty: 0.25}}
	case "sync":
		s = Scenario{Description: "delta-sync polling: 100 devices each polling /v1/sync with its own cursor (90%), while 10% of the sends change documents",
			Devices: 100, Mix: []Step{{KindSync, 90}, {KindPut, 10}}}
	case "auth":
		s = Scenario{Description: "logins and authenticated reads",
			Mix: []Step{{KindLogin, 10}, {KindGet, 90}}}
	case "ratelimit":
		s = Scenario{Description: "one client (one X-Api-Key) over its rate limit: expects 429 with Retry-After and counts them as expected",
			APIKey: "perch-bench-limited", Docs: 100, Mix: []Step{{KindGet, 100}}, ExpectRateLimit: true}
	default:
		return nil, fmt.Errorf("%w %q: one of %s, or a scenario file", ErrUnknownScenario, name, strings.Join(Builtins, ", "))
	}
	s.Name = name
	s.complete()
	return &s, nil
}

// maxScenarioFile bounds the size of a scenario file.
const maxScenarioFile = 1 << 20

// ParseScenario decodes a scenario file (YAML, so JSON too) and checks it. Unknown fields
// are errors; so are anchors and aliases, which a scenario has no use for and which could
// make a small file expand without bound.
func ParseScenario(data []byte) (*Scenario, error) {
	if len(data) > maxScenarioFile {
		return nil, fmt.Errorf("scenario file: larger than %d bytes", maxScenarioFile)
	}
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, fmt.Errorf("scenario file: %w", err)
	}
	for _, doc := range file.Docs {
		var f anchorFinder
		if ast.Walk(&f, doc); f.found {
			return nil, errors.New("scenario file: anchors and aliases are not supported")
		}
	}
	var f scenarioFile
	if err := yamlsafe.Unmarshal(data, &f, yaml.DisallowUnknownField()); err != nil {
		return nil, fmt.Errorf("scenario file: %w", err)
	}
	s := f.Scenario
	if f.Base != "" {
		base, err := Builtin(f.Base)
		if err != nil {
			return nil, fmt.Errorf("scenario file: base: %w", err)
		}
		s = overlay(*base, f.Scenario)
		if f.Name == "" {
			s.Name = f.Base + "-custom"
		}
	}
	s.complete()
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("scenario file: %w", err)
	}
	return &s, nil
}

// anchorFinder looks for an anchor or an alias in a YAML syntax tree.
type anchorFinder struct{ found bool }

func (a *anchorFinder) Visit(n ast.Node) ast.Visitor {
	if a.found || n == nil {
		return nil
	}
	if v := reflect.ValueOf(n); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil
	}
	if t := n.Type(); t == ast.AliasType || t == ast.AnchorType {
		a.found = true
		return nil
	}
	return a
}

// overlay returns base with the fields that o sets.
func overlay(base, o Scenario) Scenario {
	if o.Name != "" {
		base.Name = o.Name
	}
	if o.Description != "" {
		base.Description = o.Description
	}
	if o.Collection != "" {
		base.Collection = o.Collection
	}
	if o.Docs != 0 {
		base.Docs = o.Docs
	}
	if o.DocBytes != 0 {
		base.DocBytes = o.DocBytes
	}
	if o.Zipf != 0 {
		base.Zipf = o.Zipf
	}
	if o.APIKey != "" {
		base.APIKey = o.APIKey
	}
	if o.ListLimit != 0 {
		base.ListLimit = o.ListLimit
	}
	if o.ListPages != 0 {
		base.ListPages = o.ListPages
	}
	if o.SyncLimit != 0 {
		base.SyncLimit = o.SyncLimit
	}
	if o.Devices != 0 {
		base.Devices = o.Devices
	}
	if o.Mix != nil {
		base.Mix = o.Mix
	}
	if o.Burst != nil {
		base.Burst = o.Burst
	}
	if o.ExpectRateLimit {
		base.ExpectRateLimit = true
	}
	return base
}

// complete fills in the defaults of the fields left zero.
func (s *Scenario) complete() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if s.Collection == "" {
		s.Collection = "bench"
	}
	def(&s.Docs, 1000)
	def(&s.DocBytes, 1024)
	def(&s.ListLimit, 20)
	def(&s.ListPages, 5)
	def(&s.SyncLimit, 100)
	def(&s.Devices, 1000)
	if s.Zipf == 0 {
		s.Zipf = 1.1
	}
	if s.Burst != nil {
		if s.Burst.Period == 0 {
			s.Burst.Period = time.Second
		}
		if s.Burst.Duty == 0 {
			s.Burst.Duty = 0.25
		}
	}
}

// Check reports what is wrong with a completed scenario, or ErrNeedsAccounts for one that
// logs users in.
func (s *Scenario) Check() error {
	switch {
	case !validName(s.Name, 64, false):
		return fmt.Errorf("name %q: 1 to 64 of a-z A-Z 0-9 . _ -", s.Name)
	case !validName(s.Collection, 128, true):
		return fmt.Errorf("collection %q: 1 to 128 of a-z A-Z 0-9 _ ~ -", s.Collection)
	case s.Docs < 1 || s.Docs > 1_000_000:
		return fmt.Errorf("docs %d: 1 to 1000000", s.Docs)
	case s.DocBytes < 32 || s.DocBytes > 512<<10:
		return fmt.Errorf("doc_bytes %d: 32 to 524288", s.DocBytes)
	case s.Zipf != -1 && (s.Zipf <= 1 || s.Zipf > 10):
		return fmt.Errorf("zipf %g: above 1 and at most 10, or -1 for uniform", s.Zipf)
	case len(s.APIKey) > 256 || strings.ContainsFunc(s.APIKey, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		return fmt.Errorf("api_key: at most 256 printable ASCII characters")
	case s.ListLimit < 1 || s.ListLimit > 1000:
		return fmt.Errorf("list_limit %d: 1 to 1000", s.ListLimit)
	case s.ListPages < 1 || s.ListPages > 1000:
		return fmt.Errorf("list_pages %d: 1 to 1000", s.ListPages)
	case s.SyncLimit < 1 || s.SyncLimit > 1000:
		return fmt.Errorf("sync_limit %d: 1 to 1000", s.SyncLimit)
	case s.Devices < 1 || s.Devices > 1_000_000:
		return fmt.Errorf("devices %d: 1 to 1000000", s.Devices)
	case len(s.Mix) == 0:
		return fmt.Errorf("mix: at least one kind of request")
	}
	if b := s.Burst; b != nil && (b.Period < 10*time.Millisecond || b.Period > time.Hour || !(b.Duty > 0 && b.Duty <= 1)) {
		return fmt.Errorf("burst: period 10ms to 1h, duty above 0 and at most 1")
	}
	total := 0
	for _, st := range s.Mix {
		if st.Kind == KindLogin {
			return ErrNeedsAccounts
		}
		if st.Kind.index() < 0 {
			return fmt.Errorf("mix: kind %q: one of get, list, put, create, post, sync", st.Kind)
		}
		if st.Weight < 1 || st.Weight > 1_000_000 {
			return fmt.Errorf("mix: %s: weight %d: 1 to 1000000", st.Kind, st.Weight)
		}
		total += st.Weight
	}
	if total > 1_000_000 {
		return fmt.Errorf("mix: weights add up to %d, more than 1000000", total)
	}
	return nil
}

// WriteShare is the share of the scenario's sends that are writes.
func (s *Scenario) WriteShare() float64 {
	total, writes := 0, 0
	for _, st := range s.Mix {
		total += st.Weight
		if st.Kind.write() {
			writes += st.Weight
		}
	}
	if total == 0 {
		return 0
	}
	return float64(writes) / float64(total)
}

func (s *Scenario) has(k Kind) bool {
	return slices.ContainsFunc(s.Mix, func(st Step) bool { return st.Kind == k })
}

// validName reports whether s is 1 to n characters of A-Z a-z 0-9 . _ ~ - (without dots
// and tildes when collection is set: collection names, where Perch allows no dots).
func validName(s string, n int, collection bool) bool {
	if s == "" || len(s) > n || s == "." || s == ".." {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		case c == '.' && !collection:
		case c == '~' && collection:
		default:
			return false
		}
	}
	return true
}
