package bench

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	benchload "github.com/perchhq/perch/bench/load"
	"github.com/perchhq/perch/internal/clustertest"
)

// BenchmarkGetHitPinned measures what one core serves: a cache-hit GET of a 1 KB document
// through a `perch edge` process, a bare fasthttp server returning the same bytes (the
// ceiling), and nginx's proxy_cache serving a cached copy of them (Debian's nginx, one
// worker), each a process pinned to the same one CPU, one after the other, driven by wrk
// pinned to the other CPUs. Targets: the edge at ≥ 0.85× the ceiling and ≥ 1.3× nginx.
//
// BenchmarkGetHit and BenchmarkGetHitNginx run the load generator in the same process as
// the edge, or beside nginx on the same cores: there each request's cost is the client's
// and the server's together, and the client's dilutes any difference between servers (the
// edge then looks as fast as the ceiling, and nginx nearly as fast as the edge). Here the
// server has a core of its own and is what runs out of it: the load CPUs' busy share is
// reported (load_busy_*), and one near 100% means that run was held back by wrk, not by
// the server.
//
// The edge is the deployed shape: `perch edge` against the NATS of a `perch dev` (which runs
// on the load CPUs and is idle while the hits are served). Rounds of PERCH_BENCH_ROUND
// (default 5s) each, PERCH_BENCH_ROUNDS (default 3) of them, rotate the order of the three
// servers, so that none always runs first or in a quieter moment; the rates are summed over
// the rounds. It runs once whatever b.N is (make bench-pinned). It skips without two CPUs,
// wrk or taskset; without nginx it measures the edge and the ceiling only.
func BenchmarkGetHitPinned(b *testing.B) {
	cpus := allowedCPUs(b)
	if len(cpus) < 2 {
		b.Skip("needs two CPUs: one for the server, the others for the load")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("no wrk on PATH: apt-get install wrk")
	}
	taskset := tasksetPath(b)
	round := 5 * time.Second
	if v := os.Getenv("PERCH_BENCH_ROUND"); v != "" {
		if round, err = time.ParseDuration(v); err != nil || round < time.Second {
			b.Fatalf("PERCH_BENCH_ROUND=%q: want a duration of at least 1s", v)
		}
	}
	rounds := 3
	if v := os.Getenv("PERCH_BENCH_ROUNDS"); v != "" {
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			b.Fatalf("PERCH_BENCH_ROUNDS=%q: want a positive number", v)
		}
	}
	serverCPU, loadCPUs := cpus[len(cpus)-1], cpus[:len(cpus)-1]
	onServer := []string{taskset, "-c", strconv.Itoa(serverCPU)}
	onLoad := []string{taskset, "-c", cpuList(loadCPUs)}

	dir := b.TempDir()
	bin := buildPerch(b, dir)
	_, natsURL := startDev(b, bin, dir, onLoad...)
	_, edgeURL, _ := startEdge(b, bin, dir, natsURL, onServer, nil)
	const path = "/v1/collections/bench/docs/doc"
	if r := clustertest.Do(b, "PUT", edgeURL+path, nil, docBody); r.Status != 201 {
		b.Fatalf("seed: %d %s", r.Status, r.Body)
	}
	var hit clustertest.Response
	clustertest.Eventually(b, 10*time.Second, func() error {
		hit = clustertest.Do(b, "GET", edgeURL+path, nil, nil)
		if hit.Status != 200 || hit.Header["Cache-Status"] != "perch; hit" {
			return fmt.Errorf("edge: %d, Cache-Status %q", hit.Status, hit.Header["Cache-Status"])
		}
		return nil
	})
	answer := filepath.Join(dir, "answer.json")
	if err := os.WriteFile(answer, hit.Body, 0o644); err != nil {
		b.Fatal(err)
	}

	servers := []pinnedServer{{name: "edge", url: edgeURL + path, check: func(r clustertest.Response) bool {
		return r.Header["Cache-Status"] == "perch; hit"
	}}}
	ceiling := startAnswerServer(b, onServer, answer, "")
	servers = append(servers, pinnedServer{name: "ceiling", url: ceiling + path})
	if bin := benchload.NginxBinary(os.Getenv("PERCH_BENCH_NGINX")); bin != "" {
		// The origin answers like the edge (same body, ETag, content type) and lets nginx cache
		// it; it runs on the load CPUs, asked once.
		origin := startAnswerServer(b, onLoad, answer, hit.Header["Etag"])
		nginx := startNginxOn(b, onServer, bin, 1, strings.TrimPrefix(origin, "http://"))
		servers = append(servers, pinnedServer{name: "nginx", url: nginx + path, check: func(r clustertest.Response) bool {
			return r.Header["X-Cache-Status"] == "HIT"
		}})
	} else {
		b.Log("no nginx binary (apt-get install nginx-light, or PERCH_BENCH_NGINX): edge and ceiling only")
	}
	for i := range servers {
		s := &servers[i]
		clustertest.Eventually(b, 10*time.Second, func() error {
			r, err := clustertest.Send("GET", s.url, nil, nil)
			if err != nil {
				return err
			}
			if r.Status != 200 || string(r.Body) != string(hit.Body) || s.check != nil && !s.check(r) {
				return fmt.Errorf("%s: %d, %d bytes, %v", s.name, r.Status, len(r.Body), r.Header)
			}
			return nil
		})
	}

	b.ResetTimer()
	for r := range rounds {
		for k := range servers {
			s := &servers[(r+k)%len(servers)]
			s.add(runWrk(b, onLoad, wrk, len(loadCPUs), s.url, round, serverCPU, loadCPUs))
		}
	}
	b.StopTimer()
	rate := map[string]float64{}
	for i := range servers {
		s := &servers[i]
		rate[s.name] = s.requests / s.seconds
		b.ReportMetric(rate[s.name], s.name+"_req/s")
		b.ReportMetric(s.p99.Seconds()*1e3, s.name+"_p99_ms")
		b.ReportMetric(100*s.loadBusy/s.seconds, "load_busy_"+s.name+"_%")
		b.ReportMetric(100*s.serverBusy/s.seconds, "server_busy_"+s.name+"_%")
	}
	b.ReportMetric(rate["edge"]/rate["ceiling"], "edge/ceiling")
	if n, ok := rate["nginx"]; ok {
		b.ReportMetric(rate["edge"]/n, "edge/nginx")
	}
}

// pinnedServer is one of the servers BenchmarkGetHitPinned loads, with what its rounds
// measured, summed.
type pinnedServer struct {
	name, url string
	// check reports whether an answer came from the server's cache; nil takes any 200.
	check func(clustertest.Response) bool
	// requests and seconds over every round; loadBusy and serverBusy are the busy seconds of
	// the CPUs (the load's averaged over its CPUs); p99 the worst round's.
	requests, seconds, loadBusy, serverBusy float64
	p99                                     time.Duration
}

func (s *pinnedServer) add(w wrkResult) {
	s.requests += w.requests
	s.seconds += w.seconds
	s.loadBusy += w.loadBusy * w.seconds
	s.serverBusy += w.serverBusy * w.seconds
	s.p99 = max(s.p99, w.p99)
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	requests, seconds    float64
	loadBusy, serverBusy float64 // shares of the run's time, 0..1
	p99                  time.Duration
}

// wrkTotal matches wrk's summary, "2500000 requests in 5.00s, 2.7GB read".
var wrkTotal = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m)\b`)

// wrkP99 matches the 99th percentile of wrk --latency, "99%    1.20ms".
var wrkP99 = regexp.MustCompile(`(?m)^\s*99%\s+([\d.]+)(us|ms|s)\s*$`)

// runWrk runs wrk with threads threads and 64 connections against url for d, under prefix,
// and returns its rate with the busy shares of serverCPU and of loadCPUs meanwhile. It fails
// the benchmark when a socket error or an answer other than 2xx/3xx was counted.
func runWrk(b *testing.B, prefix []string, wrk string, threads int, url string, d time.Duration, serverCPU int, loadCPUs []int) wrkResult {
	b.Helper()
	cmd := command(prefix, wrk, "-t", strconv.Itoa(threads), "-c", "64", "-d", strconv.Itoa(int(d/time.Second))+"s", "--latency", url)
	before := cpuTimes(b)
	out, err := cmd.CombinedOutput()
	after := cpuTimes(b)
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	text := string(out)
	if strings.Contains(text, "Socket errors") || strings.Contains(text, "Non-2xx or 3xx") {
		b.Fatalf("wrk %s counted errors:\n%s", url, text)
	}
	m := wrkTotal.FindStringSubmatch(text)
	if m == nil {
		b.Fatalf("wrk %s: no summary in\n%s", url, text)
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	secs, _ := strconv.ParseFloat(m[2], 64)
	secs *= map[string]float64{"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m[3]]
	res := wrkResult{requests: n, seconds: secs, serverBusy: busy(before, after, serverCPU)}
	for _, c := range loadCPUs {
		res.loadBusy += busy(before, after, c) / float64(len(loadCPUs))
	}
	if p := wrkP99.FindStringSubmatch(text); p != nil {
		v, _ := strconv.ParseFloat(p[1], 64)
		res.p99 = time.Duration(v * map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}[p[2]])
	}
	return res
}

// cpuTime is one CPU's line of /proc/stat, in clock ticks.
type cpuTime struct{ busy, idle float64 }

// cpuTimes reads /proc/stat: each CPU's busy and idle (idle and iowait) ticks.
func cpuTimes(b *testing.B) map[int]cpuTime {
	b.Helper()
	f, err := os.Open("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	out := map[int]cpuTime{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[0], "cpu") || fields[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(fields[0], "cpu"))
		if err != nil {
			continue
		}
		var t cpuTime
		for i, v := range fields[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			if i == 3 || i == 4 { // idle, iowait
				t.idle += x
			} else if i < 8 { // user nice system idle iowait irq softirq steal
				t.busy += x
			}
		}
		out[n] = t
	}
	return out
}

// busy is the busy share of cpu between two readings of /proc/stat.
func busy(before, after map[int]cpuTime, cpu int) float64 {
	b, i := after[cpu].busy-before[cpu].busy, after[cpu].idle-before[cpu].idle
	if b+i <= 0 {
		return 0
	}
	return b / (b + i)
}

// tasksetPath returns where taskset is, or skips the benchmark.
func tasksetPath(b *testing.B) string {
	b.Helper()
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		b.Skip("no taskset on PATH: apt-get install util-linux")
	}
	return taskset
}

// allowedCPUs returns the CPUs this process may run on.
func allowedCPUs(b *testing.B) []int {
	b.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		b.Fatalf("CPU affinity: %v", err)
	}
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

// cpuList formats CPUs as taskset takes them: "0,2,3".
func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// answerEnv names, for the benchmark binary run as a server (TestAnswerServer), the file of
// the body it answers every request with, its listen address, and the ETag it adds (with
// Cache-Control: max-age=3600, as an origin for nginx to cache) when not empty.
const (
	answerEnv       = "PERCH_BENCH_ANSWER"
	answerListenEnv = "PERCH_BENCH_ANSWER_LISTEN"
	answerETagEnv   = "PERCH_BENCH_ANSWER_ETAG"
)

// TestAnswerServer is the bare fasthttp server of BenchmarkGetHitPinned, when this test
// binary is run as a process of its own with answerEnv set: it answers every request with
// the same bytes, and nothing else, until it is killed. Otherwise it skips.
func TestAnswerServer(t *testing.T) {
	file := os.Getenv(answerEnv)
	if file == "" {
		t.Skip("runs only as BenchmarkGetHitPinned's server")
	}
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	etag := os.Getenv(answerETagEnv)
	ln, err := net.Listen("tcp", os.Getenv(answerListenEnv))
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		if etag != "" {
			ctx.Response.Header.Set("ETag", etag)
			ctx.Response.Header.Set("Cache-Control", "max-age=3600")
		}
		ctx.Response.SetBodyRaw(body)
	}}
	if err := srv.Serve(ln); err != nil {
		t.Fatal(err)
	}
}

// startAnswerServer runs TestAnswerServer under prefix, answering with the bytes of file
// (and etag, when not empty), and returns its base URL once it answers.
func startAnswerServer(b *testing.B, prefix []string, file, etag string) string {
	b.Helper()
	addr := freeAddr(b)
	cmd := command(prefix, os.Args[0], "-test.run", "^TestAnswerServer$", "-test.count", "1")
	cmd.Env = append(os.Environ(), answerEnv+"="+file, answerListenEnv+"="+addr, answerETagEnv+"="+etag)
	base := "http://" + addr
	startProcess(b, cmd, syscall.SIGKILL).serving(b, base)
	return base
}
