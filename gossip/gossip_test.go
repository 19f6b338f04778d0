package gossip

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestClusterSeesAllMembersWithMeta(t *testing.T) {
	gs := startCluster(t, 3)

	want := make([]Member, len(gs))
	for i, g := range gs {
		id := fmt.Sprintf("m%d", i)
		want[i] = Member{ID: id, Region: "region-" + id, URL: "http://" + id + ".test", Weight: 1, Addr: g.LocalAddr(), Healthy: true}
		if got := g.Self(); got != want[i] {
			t.Errorf("m%d Self() = %+v, want %+v", i, got, want[i])
		}
		if !strings.HasPrefix(g.LocalAddr(), "127.0.0.1:") || strings.HasSuffix(g.LocalAddr(), ":0") {
			t.Errorf("m%d LocalAddr() = %q, want 127.0.0.1 with the chosen port", i, g.LocalAddr())
		}
	}
	for i, g := range gs {
		if got := g.Members(); !slices.Equal(got, want) {
			t.Errorf("m%d Members() =\n%+v\nwant\n%+v", i, got, want)
		}
	}

	// The slice is the caller's.
	ms := gs[0].Members()
	ms[0].ID = "changed"
	if gs[0].Members()[0].ID != "m0" {
		t.Errorf("modifying the result of Members changed the member list")
	}
}

func TestLeaveRemovesMemberFromOthers(t *testing.T) {
	gs := startCluster(t, 3)
	leaver := gs[2]

	if err := leaver.Leave(time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	waitFor(t, convergeTimeout, "the others drop m2", func() error {
		for _, g := range gs[:2] {
			if m, ok := findMember(g.Members(), "m2"); ok {
				return fmt.Errorf("%s still lists %+v", g.Self().ID, m)
			}
		}
		return nil
	})
	for _, g := range gs[:2] {
		if got := len(g.Members()); got != 2 {
			t.Errorf("%s sees %d members after the leave, want 2", g.Self().ID, got)
		}
	}

	if err := leaver.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("second Leave = %v, want ErrClosed", err)
	}
	if _, err := leaver.Join([]string{gs[0].LocalAddr()}); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Leave = %v, want ErrClosed", err)
	}
	if err := leaver.Shutdown(); err != nil {
		t.Errorf("Shutdown after Leave = %v, want nil", err)
	}
}

func TestShutdownMemberTurnsUnhealthyThenIsDropped(t *testing.T) {
	tests := []struct {
		name string
		base func() Config
	}{
		{"LocalConfig", LocalConfig},
		{"DefaultConfig on loopback", func() Config {
			c := DefaultConfig()
			c.BindAddr, c.BindPort = "127.0.0.1", 0
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			config := func(id string) Config {
				c := tt.base()
				c.Meta = testConfig(t, id).Meta
				c.Logger = testConfig(t, id).Logger
				return c
			}
			rec := newRecorder()
			cfg := config("m0")
			cfg.Watcher = rec
			first := startMember(t, cfg)
			rec.attach(first)
			gs := []*Gossip{first}
			for _, id := range []string{"m1", "m2"} {
				cfg := config(id)
				cfg.Join = []string{first.LocalAddr()}
				gs = append(gs, startMember(t, cfg))
			}
			waitFor(t, convergeTimeout, "every member sees all", func() error {
				for _, g := range gs {
					if len(g.Members()) != 3 {
						return fmt.Errorf("%s sees %v", g.Self().ID, g.Members())
					}
				}
				return nil
			})

			killed := time.Now()
			if err := gs[2].Shutdown(); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := gs[2].Shutdown(); err != nil {
				t.Fatalf("second Shutdown: %v", err)
			}

			survivors := gs[:2]
			unhealthyAt := make([]time.Duration, len(survivors))
			droppedAt := make([]time.Duration, len(survivors))
			waitFor(t, 5*time.Second, "the survivors report m2 unhealthy, then drop it", func() error {
				pending := 0
				for i, g := range survivors {
					if droppedAt[i] != 0 {
						continue
					}
					m, ok := findMember(g.Members(), "m2")
					switch {
					case !ok:
						droppedAt[i] = time.Since(killed)
					case !m.Healthy && unhealthyAt[i] == 0:
						unhealthyAt[i] = time.Since(killed)
						pending++
					default:
						pending++
					}
				}
				if pending > 0 {
					return fmt.Errorf("%d survivors still list m2", pending)
				}
				return nil
			})
			for i, g := range survivors {
				t.Logf("%s: m2 unhealthy after %v, dropped after %v", g.Self().ID, unhealthyAt[i], droppedAt[i])
				if unhealthyAt[i] == 0 {
					t.Errorf("%s dropped m2 without reporting it unhealthy first", g.Self().ID)
				}
				for _, m := range g.Members() {
					if !m.Healthy {
						t.Errorf("%s reports survivor %s unhealthy", g.Self().ID, m.ID)
					}
				}
			}
			if !rec.sawMember("m2", false) {
				t.Errorf("m0's Watcher was never called while m2 was unhealthy")
			}
		})
	}
}

func TestJoinRetriesUntilPeerStarts(t *testing.T) {
	port := freePort(t)
	seedAddr := fmt.Sprintf("127.0.0.1:%d", port)

	early := testConfig(t, "early")
	early.Join = []string{seedAddr}
	g := startMember(t, early)
	if got := g.Members(); len(got) != 1 || got[0].ID != "early" {
		t.Fatalf("before the seed starts, Members() = %+v, want only early", got)
	}

	seedCfg := testConfig(t, "seed")
	seedCfg.BindPort = port
	seed := startMember(t, seedCfg)
	if seed.LocalAddr() != seedAddr {
		t.Fatalf("seed LocalAddr() = %q, want %q", seed.LocalAddr(), seedAddr)
	}
	waitFor(t, convergeTimeout, "early finds seed", func() error {
		for _, m := range []*Gossip{g, seed} {
			if got := len(m.Members()); got != 2 {
				return fmt.Errorf("%s sees %d members", m.Self().ID, got)
			}
		}
		return nil
	})
}

func TestJoinSkipsOwnAddress(t *testing.T) {
	// Every edge may be given the same join list, itself included.
	port := freePort(t)
	cfg := testConfig(t, "solo")
	cfg.BindPort = port
	cfg.Join = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	g := startMember(t, cfg)
	if got := len(g.Members()); got != 1 {
		t.Errorf("Members() has %d entries, want 1", got)
	}
}

func TestWatcherIsToldOfJoinUpdateAndLeave(t *testing.T) {
	rec := newRecorder()
	cfg := testConfig(t, "a")
	cfg.Watcher = rec
	a := startMember(t, cfg)
	rec.attach(a)

	// Each step must reach a's Watcher: some call after the change sees it.
	var b *Gossip
	steps := []struct {
		name string
		act  func() error
		seen func(ms []Member) bool
	}{
		{
			name: "join",
			act: func() error {
				bcfg := testConfig(t, "b")
				bcfg.Join = []string{a.LocalAddr()}
				b = startMember(t, bcfg)
				return nil
			},
			seen: func(ms []Member) bool { _, ok := findMember(ms, "b"); return ok },
		},
		{
			name: "update",
			act: func() error {
				return b.SetMeta(Meta{ID: "b", Region: "region-b", URL: "http://b2.test"}, time.Second)
			},
			seen: func(ms []Member) bool { m, _ := findMember(ms, "b"); return m.URL == "http://b2.test" },
		},
		{
			name: "leave",
			act:  func() error { return b.Leave(time.Second) },
			seen: func(ms []Member) bool { _, ok := findMember(ms, "b"); return !ok },
		},
	}
	for _, s := range steps {
		from := rec.count()
		if err := s.act(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		waitFor(t, convergeTimeout, s.name+" reaches a's Watcher", func() error {
			if !rec.sawSince(from, s.seen) {
				return fmt.Errorf("no Watcher call saw it; a.Members() = %+v", a.Members())
			}
			return nil
		})
	}
	if got := b.Self().URL; got != "http://b2.test" {
		t.Errorf("b.Self().URL = %q after SetMeta", got)
	}
}

func TestSetMetaValidates(t *testing.T) {
	g := startMember(t, testConfig(t, "a"))
	tests := []struct {
		name    string
		meta    Meta
		timeout time.Duration
		wantErr string
		wantIs  error // nil: no sentinel promised
	}{
		{"too large", Meta{ID: "a", URL: strings.Repeat("x", MetaMaxSize)}, time.Second, "meta too large", ErrMetaTooLarge},
		{"ID change", Meta{ID: "b"}, time.Second, "cannot change", nil},
		{"no timeout", Meta{ID: "a", URL: "http://a2.test"}, 0, "must be positive", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := g.SetMeta(tt.meta, tt.timeout)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SetMeta = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("SetMeta = %v, want errors.Is %v", err, tt.wantIs)
			}
			if got := g.Self(); got.ID != "a" || got.URL != "http://a.test" {
				t.Errorf("after a rejected SetMeta, Self() = %+v", got)
			}
		})
	}
}

func TestNodeWithForeignMetaIsNotAdmitted(t *testing.T) {
	a := startMember(t, testConfig(t, "a"))
	d := &delegate{g: a}
	for _, meta := range []string{``, `not json`, `{"region":"x"}`, `{"id":"other"}`} {
		n := nodeForTest("b", meta)
		if err := d.NotifyAlive(n); err == nil {
			t.Errorf("NotifyAlive accepted meta %q for node b", meta)
		}
	}
	if err := d.NotifyAlive(nodeForTest("b", `{"id":"b","future_field":1}`)); err != nil {
		t.Errorf("NotifyAlive rejected valid meta with an unknown field: %v", err)
	}
}

func nodeForTest(name, meta string) *memberlist.Node {
	return &memberlist.Node{Name: name, Addr: []byte{127, 0, 0, 1}, Port: 1, Meta: []byte(meta),
		PMin: 1, PMax: 5, PCur: 2}
}

func TestLabelAndKeySeparateClusters(t *testing.T) {
	key := []byte("0123456789abcdef")
	tests := []struct {
		name              string
		seedLabel, label  string
		seedKey, otherKey []byte
		wantJoined        bool
	}{
		{"same label and key", "perch-a", "perch-a", key, key, true},
		{"other label", "perch-a", "perch-b", nil, nil, false},
		{"other key", "", "", key, []byte("fedcba9876543210"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg := testConfig(t, "seed")
			scfg.Label, scfg.SecretKey = tt.seedLabel, tt.seedKey
			seed := startMember(t, scfg)

			cfg := testConfig(t, "other")
			cfg.Label, cfg.SecretKey = tt.label, tt.otherKey
			g := startMember(t, cfg)
			n, err := g.Join([]string{seed.LocalAddr()})
			if joined := err == nil && n == 1; joined != tt.wantJoined {
				t.Fatalf("Join = %d, %v; want joined=%v", n, err, tt.wantJoined)
			}
			if tt.wantJoined {
				waitFor(t, convergeTimeout, "seed sees other", func() error {
					if len(seed.Members()) != 2 {
						return fmt.Errorf("seed sees %+v", seed.Members())
					}
					return nil
				})
			} else if got := len(seed.Members()); got != 1 {
				t.Errorf("seed sees %d members, want 1", got)
			}
		})
	}
}
