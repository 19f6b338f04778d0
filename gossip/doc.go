// Package gossip gives Perch edges membership with metadata: every edge runs
// one member, finds the others by gossip (hashicorp/memberlist, SWIM) and
// learns each one's id, region and public URL.
//
// # Place in the architecture
//
// gossip is a leaf below edge: edge imports gossip, gossip imports neither
// edge nor core (a test enforces it). It calls its host back through the
// small [Watcher] interface, the way memberlist calls its host through
// delegates. [Ring] places keys on the members by consistent hashing (the
// owner edge of a cache key), from the same member snapshot.
//
// # Guarantees
//
//   - [Gossip.Members] lists every member this edge knows, itself included,
//     sorted by ID. It reads a snapshot kept up to date from memberlist's
//     events, so it is cheap enough to serve each GET /v1/edges.
//   - A member that left gracefully ([Gossip.Leave]) disappears from the
//     others as soon as the leave message reaches them (a few gossip rounds).
//   - A member that stopped without leaving (crash, [Gossip.Shutdown],
//     partition) is first reported with Healthy=false, after
//     HealthFailures direct pings in a row went unanswered, then removed when
//     memberlist declares it dead. With [DefaultConfig] on a LAN and
//     [LocalConfig] on loopback both happen within 5 s.
//   - Healthy is this edge's own view: whether it can reach the member
//     directly. memberlist keeps its suspicion state private (the State field
//     of memberlist.Node is never updated), so gossip runs its own direct
//     pings, piggybacking on memberlist's successful probes; see README.md.
//   - [New] succeeds when none of the join addresses answers, and keeps
//     trying in the background until it joins or is shut down.
//
// # Concurrency
//
// All methods of [Gossip] are safe for concurrent use. [Watcher.MembersChanged]
// is called from one goroutine owned by the Gossip, never concurrently with
// itself, and never after [Gossip.Shutdown] or [Gossip.Leave] returns.
package gossip
