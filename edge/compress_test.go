package edge

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestNegotiateCoding(t *testing.T) {
	cases := []struct {
		header string
		want   coding
	}{
		{"", codingIdentity},
		{"   ", codingIdentity},
		{"gzip", codingGzip},
		{"br", codingBrotli},
		{"gzip, br", codingBrotli},
		{"br, gzip", codingBrotli},
		{"gzip, deflate, br, zstd", codingBrotli},
		{"deflate, zstd", codingIdentity},
		{"compress", codingIdentity},
		{"identity", codingIdentity},
		// Names are case-insensitive; x-gzip is gzip.
		{"GZIP", codingGzip},
		{"Br", codingBrotli},
		{"x-gzip", codingGzip},
		{"X-GZip;q=0.5, identity;q=0.4", codingGzip},
		// White space around elements, weights and separators.
		{" \tgzip ;\tq=0.5 ,  br ; q = 0.4 ", codingGzip},
		{",,gzip,,", codingGzip},
		// Weights.
		{"gzip;q=1.0, br;q=0.9", codingGzip},
		{"gzip;q=0.8, br;q=0.8", codingBrotli},
		{"gzip;Q=0.9, br;q=0.1", codingGzip},
		{"br;q=0.001", codingBrotli},
		{"br;q=0, gzip;q=0", codingIdentity},
		{"br;q=0.000", codingIdentity},
		{"br;q=0, gzip", codingGzip},
		// identity named with a higher weight wins; on a tie the coding does.
		{"gzip;q=0.5, identity", codingIdentity},
		{"gzip, identity", codingGzip},
		{"br;q=0.5, identity;q=0.5", codingBrotli},
		// identity refused: a coding is taken, or identity all the same when there is none.
		{"identity;q=0, gzip", codingGzip},
		{"identity;q=0", codingIdentity},
		{"*;q=0", codingIdentity},
		{"identity;q=0, *;q=0", codingIdentity},
		// * stands for every coding not named.
		{"*", codingBrotli},
		{"*;q=0.5, gzip", codingGzip},
		{"*;q=0.5, br;q=0", codingGzip},
		{"gzip;q=0, br;q=0, *", codingIdentity},
		{"*, identity;q=1", codingBrotli},
		{"*;q=0.2, identity;q=0.5", codingIdentity},
		// Parameters other than q are ignored; an empty parameter too.
		{"gzip;level=9", codingGzip},
		{"gzip;, br;q=0.5", codingGzip},
		// The first weight of a coding named twice counts.
		{"br;q=0, br", codingIdentity},
		// Malformed elements are ignored, the others count.
		{"br;q=2, gzip", codingGzip},
		{"br;q=1.5", codingIdentity},
		{"br;q=1.001", codingIdentity},
		{"br;q=.5", codingIdentity},
		{"br;q=0.5000", codingIdentity},
		{"br;q=", codingIdentity},
		{"br;q=abc, gzip;q=0.1", codingGzip},
		{"br;q=0.5;q=0.6", codingIdentity},
		{"br;q", codingIdentity},
		{"br gzip", codingIdentity},
		{"br;q=0.5 x", codingIdentity},
		{"\"br\"", codingIdentity},
		{"brotli, gzipx, xgzip", codingIdentity},
		{"b\x00r, g\xffzip", codingIdentity},
		{";q=1, gzip", codingGzip},
		{"br;q=0.5,", codingBrotli},
	}
	for _, tc := range cases {
		t.Run(tc.header, func(t *testing.T) {
			if got := negotiateCoding([]byte(tc.header)); got != tc.want {
				t.Errorf("Accept-Encoding %q: %s, want %s", tc.header, codingNames[got], codingNames[tc.want])
			}
		})
	}
	if !raceEnabled {
		h := []byte("gzip;q=0.8, deflate, BR;q=0.9, identity;q=0.1, *;q=0")
		if n := testing.AllocsPerRun(100, func() { negotiateCoding(h) }); n != 0 {
			t.Errorf("negotiation allocates %.1f times", n)
		}
	}
}

func TestParseETag(t *testing.T) {
	cases := []struct {
		tag  string
		want int64
		ok   bool
	}{
		{`"3"`, 3, true},
		{`"3-gz"`, 3, true},
		{`"3-br"`, 3, true},
		{`"12345678901"`, 12345678901, true},
		{`"3-zstd"`, 0, false},
		{`"3-gz-br"`, 0, false},
		{`"-gz"`, 0, false},
		{`"0"`, 0, false},
		{`"0-br"`, 0, false},
		{`"-3"`, 0, false},
		{`W/"3"`, 0, false},
		{`W/"3-br"`, 0, false},
		{`3`, 0, false},
		{`""`, 0, false},
		{`"`, 0, false},
		{`"3-BR"`, 0, false},
	}
	for _, tc := range cases {
		v, ok := parseETag([]byte(tc.tag))
		if v != tc.want || ok != tc.ok {
			t.Errorf("parseETag(%s) = %d, %v; want %d, %v", tc.tag, v, ok, tc.want, tc.ok)
		}
	}
}

func TestMatchETag(t *testing.T) {
	ent := &entry{version: 7}
	if string(ent.tag(codingIdentity)) != `"7"` || string(ent.tag(codingGzip)) != `"7-gz"` || string(ent.tag(codingBrotli)) != `"7-br"` {
		t.Fatalf("ETags %s %s %s", ent.tag(codingIdentity), ent.tag(codingGzip), ent.tag(codingBrotli))
	}
	if tag := (&entry{}).tag(codingIdentity); tag != nil {
		t.Fatalf("an entry without a version has the ETag %s", tag)
	}
	cases := []struct {
		header string
		c      coding
		want   string // "" for no match
	}{
		{`"7"`, codingIdentity, `"7"`},
		{`"7-br"`, codingBrotli, `"7-br"`},
		{`"7-br"`, codingIdentity, `"7-br"`},
		{`"7"`, codingBrotli, `"7"`},
		{`"7-gz"`, codingBrotli, `"7-gz"`},
		{`"7", "7-br"`, codingBrotli, `"7-br"`},
		{`"7-gz", "7"`, codingBrotli, `"7-gz"`},
		{`W/"7-gz"`, codingGzip, `"7-gz"`},
		{`*`, codingBrotli, `"7-br"`},
		{`"6", "6-br"`, codingBrotli, ""},
		{`"7-zstd"`, codingBrotli, ""},
		{`"7`, codingIdentity, ""},
		{`W/, "7"`, codingIdentity, `"7"`},
		{``, codingIdentity, ""},
	}
	for _, tc := range cases {
		var got []byte
		m, ok := ent.matchETag([]byte(tc.header), tc.c)
		if ok {
			got = ent.tag(m)
		}
		if ok != (tc.want != "") || string(got) != tc.want {
			t.Errorf("If-None-Match %s for %s: %q %v, want %q", tc.header, codingNames[tc.c], got, ok, tc.want)
		}
	}
}

// TestNotSmaller: a body that compression does not make smaller is served as it is, and the
// coding is not tried again.
func TestNotSmaller(t *testing.T) {
	e := newTestEdge(t)
	body := make([]byte, 4096)
	rand.Read(body)
	ent := &entry{version: 1, status: fasthttp.StatusOK, body: string(body)}
	for range 100 {
		e.cache.set("bench/random", ent)
		e.cache.flush()
		if got, ok := e.cache.get([]byte("bench/random")); ok && got == ent {
			break
		}
	}
	if !ent.compressible {
		t.Fatal("a 4 KiB 200 is not compressible")
	}
	for range 2 {
		ctx := getRequest("/v1/collections/bench/docs/random")
		ctx.Request.Header.Set("Accept-Encoding", "br")
		e.dispatch(ctx, "")
		r := &ctx.Response
		if r.StatusCode() != 200 || len(r.Header.ContentEncoding()) != 0 || !bytes.Equal(r.Body(), body) {
			t.Fatalf("%d Content-Encoding %q, body of %d bytes", r.StatusCode(), r.Header.ContentEncoding(), len(r.Body()))
		}
		if string(r.Header.Peek("Vary")) != "Accept-Encoding" || string(r.Header.Peek("ETag")) != `"1"` {
			t.Fatalf("Vary %q ETag %q", r.Header.Peek("Vary"), r.Header.Peek("ETag"))
		}
		if f := ent.form(codingBrotli); f != notSmaller {
			t.Fatalf("form %v, want the not-smaller marker", f)
		}
	}
}

func BenchmarkNegotiateCoding(b *testing.B) {
	for _, h := range []string{"gzip, deflate, br", "gzip, deflate, br, zstd", "br;q=1.0, gzip;q=0.8, *;q=0.1"} {
		b.Run(h, func(b *testing.B) {
			hb := []byte(h)
			b.ReportAllocs()
			for b.Loop() {
				negotiateCoding(hb)
			}
		})
	}
}

// BenchmarkCompress is the cost of making a form, paid by the first request that wants it, for
// a document of assorted JSON fields.
func BenchmarkCompress(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10, 256 << 10} {
		body := sampleJSON(size)
		for _, c := range []coding{codingGzip, codingBrotli} {
			b.Run(fmt.Sprintf("doc=%dB/%s", size, codingNames[c]), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				var out []byte
				for b.Loop() {
					out, _ = compress(c, body)
				}
				b.ReportMetric(float64(len(out))/float64(len(body)), "ratio")
			})
		}
	}
}

// sampleJSON is a JSON object of about size bytes with fields like an app's: names, numbers,
// timestamps, ids.
func sampleJSON(size int) []byte {
	r := mrand.New(mrand.NewPCG(1, 2))
	words := []string{"note", "task", "done", "title", "Berlin", "meeting", "draft", "shared", "tag", "owner", "blue", "q3"}
	b := []byte(`{"items":[`)
	for i := 0; len(b) < size-2; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":"%016x","title":"%s %s %d","done":%t,"updated_at":"2026-%02d-%02dT%02d:%02d:%02dZ","score":%.3f}`,
			r.Uint64(), words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(1000), r.IntN(2) == 0,
			1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.Float64()*100)
	}
	return append(b, "]}"...)
}
