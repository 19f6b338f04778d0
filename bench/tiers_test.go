package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/perchhq/perch/internal/clustertest"
)

// BenchmarkWritePathTiers is BenchmarkWritePath with its parts on two tiers of CPUs, as a
// fleet is deployed: the front tier (this process: the clients, the edge, NATS) on every CPU
// but the last, and the data tier (`perch core`, a process of its own, and PostgreSQL) on the
// last. On one machine BenchmarkWritePath's core shares every CPU with the edge and NATS, and
// its transactions stretch the synced publish that the clients wait for (core/README.md,
// "Throughput, measured"); here the core and the database take CPU from each other only, as
// they do on a fleet's database machines, and the direct upserts get the same one CPU of
// PostgreSQL. Besides BenchmarkWritePath's metrics it reports core_cpu_µs/write, the core
// process's CPU a write, so that db_cpu_µs/write plus it is the data tier's work a write.
//
// It pins PostgreSQL's processes for its run and gives them back their CPUs afterwards, so
// it needs PostgreSQL on this machine (PERCH_TEST_POSTGRES of a superuser, which can read
// data_directory), two CPUs, taskset and go (to build cmd/perch); it skips otherwise.
func BenchmarkWritePathTiers(b *testing.B) {
	writePath(b, newTiers(b))
}

// tiers places the write benchmark's parts on two sets of CPUs (BenchmarkWritePathTiers).
type tiers struct {
	front []int
	data  int
	// onData runs a command on the data CPU (taskset).
	onData []string
	bin    string // cmd/perch, for `perch core`
	core   *process
}

func newTiers(b *testing.B) *tiers {
	b.Helper()
	cpus := allowedCPUs(b, 0)
	if len(cpus) < 2 {
		b.Skip("needs two CPUs: one for the data tier, the others for the front")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		b.Skip("no taskset on PATH: apt-get install util-linux")
	}
	t := &tiers{front: cpus[:len(cpus)-1], data: cpus[len(cpus)-1]}
	t.onData = []string{taskset, "-c", strconv.Itoa(t.data)}
	t.bin = buildPerch(b, b.TempDir())
	return t
}

// pin moves PostgreSQL (the server of dsn) to the data CPU and this process to the front
// ones, until the benchmark ends.
func (t *tiers) pin(b *testing.B, dsn string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	var dataDir string
	err = conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir)
	_ = conn.Close(ctx)
	if err != nil {
		b.Skipf("cannot find PostgreSQL's data directory to pin its processes (a superuser's DSN is needed): %v", err)
	}
	pidFile, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		b.Skipf("PostgreSQL does not run on this machine, or not readable by it (%v): its CPU cannot be pinned", err)
	}
	first, _, _ := strings.Cut(string(pidFile), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(first))
	if st, ok := readStat(fmt.Sprintf("/proc/%d/stat", postmaster)); err != nil || !ok || st.comm != "postgres" {
		b.Skipf("no PostgreSQL server process at the pid of %s/postmaster.pid (%q)", dataDir, first)
	}

	data, front := cpuSet([]int{t.data}), cpuSet(t.front)
	// New backends inherit the postmaster's CPUs; those of the running ones are set one by one
	// (PostgreSQL's processes have one thread each).
	pgCPUs := cpuSet(allowedCPUs(b, postmaster))
	setTree := func(set *unix.CPUSet) error {
		for _, pid := range append([]int{postmaster}, children(postmaster)...) {
			if err := unix.SchedSetaffinity(pid, set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("process %d: %w", pid, err)
			}
		}
		return nil
	}
	if err := setTree(&data); err != nil {
		b.Skipf("cannot pin PostgreSQL's processes: %v", err)
	}
	b.Cleanup(func() {
		if err := setTree(&pgCPUs); err != nil {
			b.Errorf("PostgreSQL's processes keep the data CPU: %v", err)
		}
	})

	// A thread inherits the CPUs of the one that made it: once every thread is on the front
	// CPUs, so are those the runtime makes later. Threads made while the first are moved are
	// caught by the next pass.
	own := cpuSet(allowedCPUs(b, 0))
	for pass := 0; ; pass++ {
		moved := 0
		for _, tid := range threads(b) {
			var set unix.CPUSet
			if unix.SchedGetaffinity(tid, &set) == nil && set == front {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &front); err != nil && err != unix.ESRCH {
				b.Fatalf("pin thread %d: %v", tid, err)
			}
			moved++
		}
		if moved == 0 {
			break
		}
		if pass == 10 {
			b.Fatal("this process's threads kept escaping the front CPUs")
		}
	}
	b.Cleanup(func() {
		for _, tid := range threads(b) {
			_ = unix.SchedSetaffinity(tid, &own)
		}
	})
}

// moveCore replaces c's core with `perch core` on the data CPU, against the same NATS and
// database, and returns once it applies writes.
func (t *tiers) moveCore(b *testing.B, c *clustertest.Cluster, db string) {
	b.Helper()
	if err := c.StopCore(); err != nil {
		b.Fatal(err)
	}
	t.core = startProcess(b, command(t.onData, t.bin, "core", "--db", db, "--nats", c.NATSURL(),
		"--stream-replicas", "1", "--log-level", "warn"), syscall.SIGTERM)
	// A write waits for its outcome (200/201) only while a core applies it: 202 until then.
	url := c.Edge(0) + "/v1/collections/bench/docs/tiers-ready"
	clustertest.Eventually(b, time.Minute, func() error {
		t.core.alive(b)
		r := clustertest.Do(b, "PUT", url, nil, []byte(`{"ready":true}`))
		if r.Status != 200 && r.Status != 201 {
			return fmt.Errorf("PUT answered %d: %s", r.Status, r.Body)
		}
		return nil
	})
}

// coreCPU is the CPU time `perch core` has used so far, or -1 once it is gone.
func (t *tiers) coreCPU() time.Duration {
	st, ok := readStat(fmt.Sprintf("/proc/%d/stat", t.core.cmd.Process.Pid))
	if !ok {
		return -1
	}
	return st.cpu
}

// children returns the pids of the processes whose parent is pid.
func children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, f := range stats {
		if st, ok := readStat(f); ok && st.ppid == pid {
			if n, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// threads returns the ids of this process's threads.
func threads(b *testing.B) []int {
	b.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatal(err)
	}
	out := make([]int, 0, len(entries))
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func cpuSet(cpus []int) unix.CPUSet {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	return set
}
