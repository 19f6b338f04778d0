package bench

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/clustertest"
)

// process is a server the benchmark runs in a process of its own (nginx, the perch binary),
// so that its memory and CPU are its own.
type process struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan error
}

// startProcess starts cmd with its stdout and stderr captured, and stops it when the
// benchmark ends: stop (SIGTERM, SIGQUIT) first, SIGKILL if it has not exited 15 s later.
func startProcess(b *testing.B, cmd *exec.Cmd, stop syscall.Signal) *process {
	b.Helper()
	p := &process{cmd: cmd, out: &lockedBuffer{}, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// A group of its own, so that a kill reaches the processes it started (nginx's workers).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() { p.exited <- cmd.Wait() }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(stop)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			b.Errorf("%s did not stop on %v; killed", cmd.Path, stop)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	})
	return p
}

// command is exec.Command of name and args run under prefix (a command and its arguments,
// such as taskset's, that runs them; none when empty).
func command(prefix []string, name string, args ...string) *exec.Cmd {
	if len(prefix) == 0 {
		return exec.Command(name, args...)
	}
	return exec.Command(prefix[0], append(append(prefix[1:len(prefix):len(prefix)], name), args...)...)
}

// serving waits until the process answers HTTP at base (any status), and fails the
// benchmark if it exits first.
func (p *process) serving(b *testing.B, base string) {
	b.Helper()
	clustertest.Eventually(b, 10*time.Second, func() error {
		p.alive(b)
		_, err := clustertest.Send("GET", base+"/", nil, nil)
		return err
	})
}

// alive fails the benchmark, with the process's output, when the process has exited.
func (p *process) alive(b *testing.B) {
	b.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		b.Fatalf("%s exited: %v\n%s", p.cmd.Path, err, p.out.String())
	default:
	}
}

// procStatus returns the fields of /proc/<pid>/status that are sizes in kB (VmHWM, VmRSS,
// ...), in bytes.
func procStatus(b *testing.B, pid int) map[string]int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatalf("memory of process %d: %v", pid, err)
	}
	out := map[string]int64{}
	for line := range strings.Lines(string(data)) {
		name, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[name] = n << 10
		}
	}
	return out
}

// lockedBuffer is a bytes.Buffer that a process writes to while the benchmark reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
