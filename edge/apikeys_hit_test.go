package edge

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// installAPIKeys gives e a set of n live keys, as the core would publish it, and returns them.
func installAPIKeys(tb testing.TB, e *Edge, n int) []string {
	tb.Helper()
	set := wire.APIKeySet{Changed: time.Now()}
	var keys []string
	for range n {
		key, hash := auth.NewAPIKey()
		keys = append(keys, key)
		set.Keys = append(set.Keys, wire.APIKey{ID: auth.NewAPIKeyID(), Hash: hash})
	}
	data, err := json.Marshal(&set)
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.setAPIKeys(data, "test"); err != nil {
		tb.Fatal(err)
	}
	return keys
}

func newAPIKeyEdge(tb testing.TB, mode APIKeyMode, adjust func(*Config)) *Edge {
	tb.Helper()
	return newTestEdgeOn(tb, natstest.Connect(tb, natstest.Start(tb).URL()), func(c *Config) {
		c.APIKeys = mode
		if adjust != nil {
			adjust(c)
		}
	})
}

// TestGetHitAPIKey: a hit with a live X-Api-Key, checked, allocates nothing; with the key
// scope of a rate limit too, which then counts the key's id.
func TestGetHitAPIKey(t *testing.T) {
	p, _ := ratelimit.ParsePolicy("key:1000000000/s")
	e := newAPIKeyEdge(t, APIKeysCheck, func(c *Config) { c.RateLimits = []ratelimit.Policy{p} })
	cacheDocument(t, e, "doc", 1024)
	keys := installAPIKeys(t, e, 3)
	ctx := limitedRequest("/v1/collections/bench/docs/doc")
	ctx.Request.Header.Set("X-Api-Key", keys[1])
	e.serveHTTP(ctx)
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Cache-Status")) != "perch; hit" {
		t.Fatalf("hit with a key: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if !raceEnabled {
		if allocs := testing.AllocsPerRun(200, func() {
			ctx.Response.Reset()
			e.serveHTTP(ctx)
		}); allocs != 0 {
			t.Fatalf("a cache hit with an API key allocates %.1f times", allocs)
		}
	}
	// Another set (a key revoked) forgets what the last one had checked.
	installAPIKeys(t, e, 1)
	ctx.Response.Reset()
	e.serveHTTP(ctx)
	if ctx.Response.StatusCode() != 401 {
		t.Fatalf("a key of a replaced set: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// TestAPIKeySetOrder: of two sets, the one that changed later stays, whichever came last.
func TestAPIKeySetOrder(t *testing.T) {
	e := newAPIKeyEdge(t, APIKeysCheck, nil)
	key, hash := auth.NewAPIKey()
	at := time.Now()
	newer, _ := json.Marshal(wire.APIKeySet{Changed: at, Keys: []wire.APIKey{}})
	older, _ := json.Marshal(wire.APIKeySet{Changed: at.Add(-time.Second), Keys: []wire.APIKey{{ID: auth.NewAPIKeyID(), Hash: hash}}})
	for _, data := range [][]byte{newer, older} {
		if err := e.setAPIKeys(data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := e.apiKeys.Load().lookup([]byte(key)); ok {
		t.Fatal("an older set replaced a newer one")
	}
	for _, bad := range []string{`{"keys":[{"id":"x","hash":"AAAA"}]}`, `[]`, `{"keys":[{"id":"ak_01J00000000000000000000000","hash":"AAAA"}]}`} {
		if err := e.setAPIKeys([]byte(bad), "test"); err == nil {
			t.Fatalf("set %s installed", bad)
		}
	}
}

// BenchmarkGetHitAPIKey: the handler of a hit without X-Api-Key and with a live one under
// --api-keys check (a hit of the set's memory of checked keys: no hash), in alternating
// rounds on one edge; and, for what that memory saves, a key checked by its hash each time
// (hash: the memory is full). Report the sum of api-key ns/op ÷ the sum of anonymous ns/op.
func BenchmarkGetHitAPIKey(b *testing.B) {
	e := newAPIKeyEdge(b, APIKeysCheck, nil)
	cacheDocument(b, e, "doc", 1024)
	keys := installAPIKeys(b, e, 3)
	anonymous := limitedRequest("/v1/collections/bench/docs/doc")
	withKey := limitedRequest("/v1/collections/bench/docs/doc")
	withKey.Request.Header.Set("X-Api-Key", keys[0])
	unseen := limitedRequest("/v1/collections/bench/docs/doc")
	unseen.Request.Header.Set("X-Api-Key", keys[1])
	set := e.apiKeys.Load()
	set.lookup([]byte(keys[0]))
	// Fill the memory, so that keys[1] is hashed on every request.
	for i := len(set.seen); i < apiKeySeenMax; i++ {
		set.seen[fmt.Sprint("filler-", i)] = "ak_filler"
	}
	for round := range 3 {
		for _, v := range []struct {
			name string
			ctx  *fasthttp.RequestCtx
		}{{"anonymous", anonymous}, {"api-key", withKey}, {"hash", unseen}} {
			b.Run(fmt.Sprintf("%s/round=%d", v.name, round), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					v.ctx.Response.Reset()
					e.serveHTTP(v.ctx)
				}
				if v.ctx.Response.StatusCode() != 200 {
					b.Fatalf("%s: %d %s", v.name, v.ctx.Response.StatusCode(), v.ctx.Response.Body())
				}
			})
		}
	}
}

// FuzzAPIKeyCheck: whatever X-Api-Key a client sends, the set finds it only if it is one of
// the live keys, byte for byte, and then with that key's id; asked twice (the second time
// from its memory) it answers the same.
func FuzzAPIKeyCheck(f *testing.F) {
	// Fixed keys, so that the fuzzing workers, which run this setup again, agree.
	live := map[string]string{}
	set := wire.APIKeySet{Changed: time.Unix(1, 0)}
	for i := range 3 {
		var raw [32]byte
		raw[0] = byte(i + 1)
		key := auth.APIKeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
		sum, ok := auth.HashAPIKey([]byte(key))
		if !ok {
			f.Fatalf("key %q does not parse", key)
		}
		id := auth.APIKeyIDPrefix + ulid.ULID{byte(i)}.String()
		live[key] = id
		set.Keys = append(set.Keys, wire.APIKey{ID: id, Hash: sum[:]})
		f.Add(key)
		f.Add(key[:len(key)-1] + "=")
		f.Add(" " + key)
	}
	f.Add("")
	f.Add("ios-app")
	data, _ := json.Marshal(&set)
	s, err := newAPIKeySet(data)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		for range 2 {
			id, ok := s.lookup([]byte(key))
			if want, live := live[key]; ok != live || id != want {
				t.Fatalf("lookup(%q) = %q, %v; want %q, %v", key, id, ok, want, live)
			}
		}
	})
}
