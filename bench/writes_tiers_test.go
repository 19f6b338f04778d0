package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/perchhq/perch/internal/clustertest"
)

// BenchmarkWritePathTiers is BenchmarkWritePath with the core and PostgreSQL on a CPU of their
// own, away from the clients, the edge and NATS: this process runs on every CPU but the last
// (GOMAXPROCS set to match), and the last runs PostgreSQL, whose processes it pins for its run,
// and `perch core`, a process of its own in place of the cluster's core. On one machine
// BenchmarkWritePath's core shares every CPU with the edge and NATS, and its transactions
// stretch the synced publish the clients wait for (core/README.md, "Throughput, measured");
// here the core and the database take CPU from each other only. The direct upserts get the
// same one CPU of PostgreSQL, their clients on the others. Besides BenchmarkWritePath's
// metrics it reports core_cpu_µs/write, the core process's CPU a write, so that
// db_cpu_µs/write plus it is the data CPU's work a write.
//
// It needs PostgreSQL on this machine (the parent of its session's backend is found in /proc),
// the right to set the CPU affinity of its processes, two CPUs, taskset and go (to build
// cmd/perch); it skips otherwise. PostgreSQL gets its CPUs back when the benchmark ends, also
// when it fails; a run killed before then leaves it on the one CPU until
// `taskset -a -p -c 0-N PID` of the postmaster and each of its children.
func BenchmarkWritePathTiers(b *testing.B) {
	writePath(b, newTiers(b))
}

// tiers places the write benchmark's parts on two sets of CPUs (BenchmarkWritePathTiers).
type tiers struct {
	front   []int
	data    int
	taskset string
	bin     string // cmd/perch, for `perch core`
	// core is `perch core`, once started (moveCore), and coreMetrics the URL of its metrics.
	core        *process
	coreMetrics string
}

func newTiers(b *testing.B) *tiers {
	b.Helper()
	cpus := allowedCPUs(b)
	if len(cpus) < 2 {
		b.Skip("needs two CPUs: one for the core and the database, the others for the rest")
	}
	return &tiers{front: cpus[:len(cpus)-1], data: cpus[len(cpus)-1], taskset: tasksetPath(b)}
}

// pin moves PostgreSQL (the server of dsn) to the data CPU and this process to the front
// ones, until the benchmark ends.
func (t *tiers) pin(b *testing.B, dsn string) {
	b.Helper()
	postmaster := localPostmaster(b, dsn)
	// Built while every CPU is there for it.
	t.bin = buildPerch(b, b.TempDir())
	pgCPUs, err := affinity(postmaster)
	if err != nil {
		b.Skipf("PostgreSQL's CPUs cannot be read: %v", err)
	}
	data, front := cpuSet([]int{t.data}), cpuSet(t.front)
	// Restoring is registered first, so that a pin that fails half way is undone too.
	b.Cleanup(func() {
		if err := setTree(postmaster, &pgCPUs); err != nil {
			b.Errorf("PostgreSQL's processes may keep the data CPU: %v", err)
		}
	})
	if err := setTree(postmaster, &data); err != nil {
		b.Skipf("cannot pin PostgreSQL's processes: %v", err)
	}

	own, err := affinity(0)
	if err != nil {
		b.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(0)
	b.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		if err := setThreads(&own); err != nil {
			b.Errorf("this process may keep to the front CPUs: %v", err)
		}
	})
	if err := setThreads(&front); err != nil {
		b.Fatal(err)
	}
	// As a process started on those CPUs would have it.
	runtime.GOMAXPROCS(len(t.front))
}

// localPostmaster returns the pid of the PostgreSQL server of dsn, when it runs on this
// machine: the parent of the backend that serves a session. It skips the benchmark otherwise.
func localPostmaster(b *testing.B, dsn string) int {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	var backend int
	err = conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend)
	if err != nil {
		_ = conn.Close(ctx)
		b.Fatal(err)
	}
	// Read while the session is open: its backend exits with it.
	st, ok := readStat(fmt.Sprintf("/proc/%d/stat", backend))
	_ = conn.Close(ctx)
	if !ok || st.comm != "postgres" {
		b.Skip("PostgreSQL does not run on this machine: its CPU cannot be pinned")
	}
	if pm, ok := readStat(fmt.Sprintf("/proc/%d/stat", st.ppid)); !ok || pm.comm != "postgres" {
		b.Skipf("the parent of PostgreSQL's backend %d is not its server (%q)", backend, pm.comm)
	}
	return st.ppid
}

// moveCore replaces c's core with `perch core` on the data CPU, against the same NATS and
// database, and returns once it has applied a write.
func (t *tiers) moveCore(b *testing.B, c *clustertest.Cluster, db string) {
	b.Helper()
	if err := c.StopCore(); err != nil {
		b.Fatal(err)
	}
	admin := freeAddr(b)
	t.coreMetrics = "http://" + admin + "/metrics"
	t.core = startProcess(b, command([]string{t.taskset, "-c", strconv.Itoa(t.data)}, t.bin, "core",
		"--db", db, "--nats", c.NATSURL(), "--stream-replicas", "1", "--admin", admin,
		"--log-level", "warn"), syscall.SIGTERM)
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

// setTree sets the CPUs of process pid and of its children (PostgreSQL's backends and
// helpers, one thread each). The parent goes first, so that a child forked meanwhile
// inherits the new CPUs, and the children are looked at again until none is left with
// others. It carries on past a process it cannot set, and returns what went wrong.
func setTree(pid int, set *unix.CPUSet) error {
	var errs []error
	if err := unix.SchedSetaffinity(pid, set); err != nil {
		errs = append(errs, fmt.Errorf("process %d: %w", pid, err))
	}
	errs = append(errs, settle(func() []int { return children(pid) }, set))
	return errors.Join(errs...)
}

// setThreads sets the CPUs of every thread of this process. A thread inherits the CPUs of
// the one that makes it, so once all have set, so have those the runtime makes later.
func setThreads(set *unix.CPUSet) error {
	return settle(threads, set)
}

// settle sets the CPUs of each of the tasks list returns that has others, and again until
// none has: tasks made while the first were set are caught by the next pass. Tasks that
// end meanwhile are passed over.
func settle(list func() []int, set *unix.CPUSet) error {
	var errs []error
	for range 10 {
		errs = errs[:0]
		moved := 0
		for _, id := range list() {
			have, err := affinity(id)
			if err == nil && have == *set {
				continue
			}
			switch err := unix.SchedSetaffinity(id, set); {
			case err == nil:
				moved++
			case !errors.Is(err, unix.ESRCH):
				errs = append(errs, fmt.Errorf("task %d: %w", id, err))
			}
		}
		if moved == 0 {
			return errors.Join(errs...)
		}
	}
	return errors.Join(append(errs, errors.New("tasks kept appearing with other CPUs"))...)
}

func affinity(id int) (unix.CPUSet, error) {
	var set unix.CPUSet
	err := unix.SchedGetaffinity(id, &set)
	return set, err
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
func threads() []int {
	entries, _ := os.ReadDir("/proc/self/task")
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
