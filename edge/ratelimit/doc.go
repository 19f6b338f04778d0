// Package ratelimit enforces Perch's rate limits (DESIGN §4, --rate-limit SCOPE:RATE[:BURST]):
// limits per client address, user or API key, optionally per route group, that hold for the
// whole fleet of edges rather than for each edge.
//
// Its place: the edge creates one Limiter, calls Allow (or AllowAt with the request's time)
// on every request, cache hits included, and answers a refused one 429 with the
// Retry-After, RateLimit-Policy and RateLimit headers that Decision writes; cmd/perch
// reads --rate-limit flags with ParsePolicy and a limits file with LoadFile and WatchFile.
// The limiters of the edges talk to each other through a Transport, NATSTransport on the
// NATS that the edges share. The package imports neither edge, core nor gossip.
//
// # Guarantees
//
// Deciding is local: Allow reads no network and waits for no other edge. It takes one
// short lock per policy that counts the request (the key tables are sharded, 256 ways per
// policy), and allocates nothing for a key already tracked.
//
// A single limiter is an exact token bucket per policy and key: it admits at most
// B + R·T requests in any time T, for rate R (Limit per Period) and burst B.
//
// A fleet of N limiters shares each key's bucket: each limiter refills its part at R·s and
// holds at most max(B·s, 1) tokens, where its share s comes from the demand for the key that
// every limiter reports every sync interval I (README.md gives the formula); the shares add
// up to one. Over any time T, the fleet admits for one key and one policy at most
//
//	R·T + B + N + R·(I + δ)·k
//
// where δ is the delivery delay of a usage message and k the number of times the key's
// traffic moves between edges in T (each move lets the edges' views of the shares disagree
// for about one interval). With steady traffic k is 0; with the default I = 50ms a move
// costs at most a twentieth of a second's worth of the rate.
//
// Errors in the other direction (admitting less than one bucket would) are bounded too and
// listed in README.md: a move of a key's traffic to another edge costs about R·6I, while the
// old edge's demand average decays; a key new to the fleet starts with B/N tokens, topped up
// to B after four intervals when no other edge uses it; limiters without demand for a key
// keep a sliver of its share (less than 1/32 of the rate in all when the key is at its
// limit); an edge that dies takes its share with it until the others notice, after three of
// its sync intervals (at once when it stops cleanly).
//
// Limiters with different policies (different Policy.String) do not pool their counts: during
// a rolling change of the limits, each side enforces its own.
//
// Memory is bounded by Config.MaxKeys; keys nobody has used for long enough that their
// bucket would be full again are forgotten (README.md, "Memory and messages").
package ratelimit
