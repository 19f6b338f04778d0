package gossip

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config { return testConfig(t, "a") }
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // "" means valid
	}{
		{"LocalConfig", func(*Config) {}, ""},
		{"DefaultConfig", func(c *Config) { meta := c.Meta; *c = DefaultConfig(); c.Meta = meta }, ""},
		{"meta at the limit", func(c *Config) {
			c.Meta = Meta{ID: "a", URL: strings.Repeat("x", MetaMaxSize-len(`{"id":"a","url":""}`))}
		}, ""},
		{"no ID", func(c *Config) { c.Meta.ID = "" }, "Meta.ID is required"},
		{"meta too large", func(c *Config) { c.Meta.URL = strings.Repeat("x", MetaMaxSize) }, "meta too large"},
		{"zero timers", func(c *Config) { *c = Config{Meta: c.Meta} }, "must be positive"},
		{"bind port", func(c *Config) { c.BindPort = 70000 }, "BindPort 70000"},
		{"advertise port", func(c *Config) { c.AdvertisePort = -1 }, "AdvertisePort -1"},
		{"probe timeout", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, "must be below ProbeInterval"},
		{"join retry max", func(c *Config) { c.JoinRetryMax = c.JoinRetryInterval / 2 }, "JoinRetryMax"},
		{"suspicion mult", func(c *Config) { c.SuspicionMult = 0 }, "SuspicionMult"},
		{"health failures", func(c *Config) { c.HealthFailures = 0 }, "HealthFailures"},
		{"negative push pull", func(c *Config) { c.PushPullInterval = -time.Second }, "PushPullInterval"},
		{"secret key", func(c *Config) { c.SecretKey = []byte("short") }, "SecretKey"},
		{"label", func(c *Config) { c.Label = strings.Repeat("l", 256) }, "Label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Validate() = %v, want errors.Is ErrInvalidConfig", err)
			}
		})
	}
}

func TestNewRejectsTooLargeMeta(t *testing.T) {
	cfg := testConfig(t, "a")
	cfg.Meta.Region = strings.Repeat("r", MetaMaxSize)
	g, err := New(cfg)
	if err == nil {
		g.Shutdown()
		t.Fatal("New accepted meta larger than MetaMaxSize")
	}
	if !errors.Is(err, ErrMetaTooLarge) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New = %v, want errors.Is ErrMetaTooLarge and ErrInvalidConfig", err)
	}
}

// TestTimersMeetTheFailureBound checks the arithmetic behind the documented
// "a killed edge is gone within 5 s" for clusters of up to 10 members, and
// that health checks flag a dead member before memberlist can drop it.
func TestTimersMeetTheFailureBound(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		n    int
	}{
		{"LocalConfig, 3 members", LocalConfig(), 3},
		{"LocalConfig, 10 members", LocalConfig(), 10},
		{"DefaultConfig, 3 members", DefaultConfig(), 3},
		{"DefaultConfig, 10 members", DefaultConfig(), 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			// memberlist (state.go suspectNode, util.go suspicionTimeout):
			// suspicion lasts SuspicionMult * max(1, log10 n) *
			// ProbeInterval (log10 n <= 1 here), starting from
			// SuspicionMaxTimeoutMult times that when it expects
			// confirmations (k = SuspicionMult-2 <= n-2).
			base := time.Duration(c.SuspicionMult) * c.ProbeInterval
			longest := base
			if c.SuspicionMult-2 > 0 && tt.n-2 >= c.SuspicionMult-2 {
				longest = time.Duration(c.SuspicionMaxTimeoutMult) * base
			}
			// Some survivor probes the dead member within about two
			// intervals (each probes one member per interval, in
			// shuffled round robin) and the probe fails one interval
			// later.
			if worst := 3*c.ProbeInterval + longest; worst > 5*time.Second {
				t.Errorf("worst case %v exceeds 5 s", worst)
			}
			// The fastest drop: probed at once, failed one interval later,
			// shortest suspicion. The slowest unhealthy: acked just before
			// the kill, then HealthFailures failed pings at the next ticks.
			fastestDrop := c.ProbeInterval + base
			slowestUnhealthy := time.Duration(c.HealthFailures+1)*c.HealthInterval + c.ProbeTimeout
			if slowestUnhealthy >= fastestDrop {
				t.Errorf("health checks take up to %v, memberlist may drop the member after %v", slowestUnhealthy, fastestDrop)
			}
		})
	}
}
