package load_test

import (
	"encoding/json"
	"errors"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/bench/load"
	"github.com/perchhq/perch/internal/pgtest"
)

// sampleReport runs a short read-hot load, with a stall in its middle, the ceiling baseline
// and two thresholds (one failing), and writes its files to a temp dir.
func sampleReport(t *testing.T) (*load.Report, string) {
	t.Helper()
	var n atomic.Int64
	edge := startFakeEdge(t, func(ctx *fasthttp.RequestCtx) {
		if n.Add(1) == 250 {
			time.Sleep(150 * time.Millisecond)
		}
	})
	ths := []load.Threshold{}
	for _, e := range []string{"p99<10s", "p50<0.001ms"} {
		th, err := load.ParseThreshold(e)
		if err != nil {
			t.Fatal(err)
		}
		ths = append(ths, th)
	}
	rep, err := load.Run(t.Context(), load.Config{
		Targets: []string{edge.url}, Scenario: readHot(t, 20), Rate: 200, Duration: 2 * time.Second, Workers: 4,
		Interval: 250 * time.Millisecond, Thresholds: ths, Baselines: []string{load.BaselineCeiling},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	return rep, dir
}

// TestReportFiles checks the files of a report: report.json with the contract's fields,
// a self-contained report.html, the .hgrm percentile distributions, the summary.
func TestReportFiles(t *testing.T) {
	rep, dir := sampleReport(t)
	if rep.Passed || rep.Err() == nil || !strings.Contains(rep.Err().Error(), "p50<0.001ms") || len(rep.Failed()) != 1 {
		t.Fatalf("passed %v, err %v", rep.Passed, rep.Err())
	}
	raw, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"target_rate", "achieved_rate", "requests", "errors", "late", "dropped", "latency_ms",
		"p50_ms", "p99_ms", "intervals", "endpoints", "thresholds", "baselines", "statuses", "connections", "bytes_in"} {
		if _, ok := js[k]; !ok {
			t.Errorf("report.json has no %q", k)
		}
	}
	if js["target_rate"].(float64) != 200 || js["requests"].(float64) != 400 {
		t.Errorf("target_rate %v, requests %v", js["target_rate"], js["requests"])
	}
	if lat := js["latency_ms"].(map[string]any); lat["p99"].(float64) <= 0 || lat["max"].(float64) < 100 {
		t.Errorf("latency_ms %v", lat)
	}
	if ivs := js["intervals"].([]any); len(ivs) < 7 {
		t.Errorf("%d intervals of 250 ms in 2 s", len(ivs))
	}
	bl := rep.Baselines[0]
	if bl.Name != "ceiling" || bl.Skipped != "" || bl.Summary.Requests != 400 || bl.Ratios["p50"] <= 0 || bl.Ratios["achieved_rate"] <= 0 {
		t.Errorf("ceiling baseline: %+v", bl)
	}

	page, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	if n := strings.Count(html, "<svg"); n < 3 {
		t.Errorf("%d plots in report.html, want latency over time, rate over time, percentiles", n)
	}
	if strings.Count(html, "<polyline") < 6 {
		t.Errorf("report.html draws no lines")
	}
	// Self-contained: nothing to fetch.
	if m := regexp.MustCompile(`(?i)(<script|<link|<img|src=|@import|url\()`).FindString(html); m != "" {
		t.Errorf("report.html refers to something outside itself: %q", m)
	}

	hgrm, err := os.ReadFile(filepath.Join(dir, "latency.hgrm"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(hgrm)), "Value\tPercentile\tTotalCount\t1/(1-Percentile)") {
		t.Errorf("latency.hgrm does not start with the HdrHistogram header: %.80q", hgrm)
	}
	if !regexp.MustCompile(`#\[Max     =\s+[0-9.]+, Total count    =\s+400\]`).Match(hgrm) {
		t.Errorf("latency.hgrm has no footer with 400 values:\n%s", hgrm[max(0, len(hgrm)-300):])
	}
	for _, f := range []string{"latency-get.hgrm", "baseline-ceiling.hgrm", "summary.txt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	text := rep.Text()
	for _, want := range []string{"FAIL  p50<0.001ms", "PASS  p99<10s", "ceiling", "achieved", "result     FAILED"} {
		if !strings.Contains(text, want) && !strings.Contains(text, strings.Replace(want, "10s", "10000ms", 1)) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
}

// TestReportRendersInChromium opens report.html in headless Chromium (bench/screenshot.sh)
// and checks that the screenshot shows the plots' lines. It skips without chromium
// (Debian: apt-get install -y chromium).
func TestReportRendersInChromium(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil && os.Getenv("PERCH_CHROMIUM") == "" {
		t.Skip("no chromium: apt-get install -y chromium (or set PERCH_CHROMIUM)")
	}
	_, dir := sampleReport(t)
	shot := filepath.Join(dir, "report.png")
	out, err := exec.CommandContext(t.Context(), "../screenshot.sh", filepath.Join(dir, "report.html"), shot, "1280x1800").CombinedOutput()
	if err != nil {
		t.Fatalf("screenshot: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// Count the pixels of the p99 line (red) and the p90 line (green) of the latency plot,
	// and of the percentile plot's line of all requests (near black, in the plot area).
	count := map[string]int{}
	want := map[string][3]int{"p99": {0xd6, 0x27, 0x28}, "p90": {0x2c, 0xa0, 0x2c}, "p50": {0x1f, 0x77, 0xb4}}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			for name, c := range want {
				if near(int(r>>8), c[0]) && near(int(g>>8), c[1]) && near(int(bl>>8), c[2]) {
					count[name]++
				}
			}
		}
	}
	t.Logf("screenshot %s: %dx%d, line pixels %v", shot, b.Dx(), b.Dy(), count)
	for name := range want {
		if count[name] < 300 {
			t.Errorf("the screenshot shows %d pixels of the %s line: the plots did not render", count[name], name)
		}
	}
}

func near(a, b int) bool { return a-b < 12 && b-a < 12 }

// TestBaselines runs the nginx baseline (when nginx is installed; else it is reported
// skipped) and the postgres baseline (with PERCH_TEST_POSTGRES; else the run refuses to
// start without a database) under a small write-and-read load.
func TestBaselines(t *testing.T) {
	edge := startFakeEdge(t, nil)
	s, err := load.ParseScenario([]byte(`{base: read-hot, name: mixed, docs: 10, mix: [{kind: get, weight: 3}, {kind: put, weight: 1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := load.Config{Targets: []string{edge.url}, Scenario: s, Rate: 200, Duration: 500 * time.Millisecond, Workers: 4,
		Baselines: []string{load.BaselineNginx, load.BaselinePostgres}}
	if _, err := load.Run(t.Context(), cfg); !errors.Is(err, load.ErrNeedsPostgres) || !errors.Is(err, load.ErrConfig) {
		t.Fatalf("postgres baseline without a database: %v", err)
	}
	if os.Getenv(pgtest.EnvDSN) == "" {
		cfg.Baselines = cfg.Baselines[:1]
	} else {
		cfg.DB = pgtest.DSN(t)
	}
	rep, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range rep.Baselines {
		t.Logf("%s: skipped %q, compared %s, ratios %v", b.Name, b.Skipped, b.Compared, b.Ratios)
		switch {
		case b.Name == load.BaselineNginx && b.Skipped != "":
			if _, err := exec.LookPath("nginx"); err == nil || !strings.Contains(b.Skipped, "no nginx") {
				t.Errorf("nginx skipped: %s", b.Skipped)
			}
		case b.Skipped != "":
			t.Errorf("%s skipped: %s", b.Name, b.Skipped)
		case b.Summary.Errors != 0 || b.Summary.Requests == 0 || b.Ratios["p50"] <= 0:
			t.Errorf("%s: %d requests, %d errors %v %v, ratios %v", b.Name, b.Summary.Requests, b.Summary.Errors,
				b.Summary.ErrorsByStatus, b.Summary.ErrorSamples, b.Ratios)
		case b.Name == load.BaselinePostgres && (b.Compared != "writes" || b.Summary.Endpoints["put"] == nil || b.Summary.Endpoints["get"] != nil):
			t.Errorf("postgres baseline: compared %s, endpoints %v", b.Compared, b.Summary.Endpoints)
		}
	}
}
