package load

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// phase is one stretch of load at one profile: a run's warm-up, its measurement, one step
// of a capacity search, or a baseline.
type phase struct {
	name     string // "run", "warmup", "ceiling", ...: the progress line's label
	tag      string // the ledger's phase: "warmup" or "run"
	profile  profile
	duration time.Duration
	workers  int
	backlog  int
	timeout  time.Duration
	drain    time.Duration
	interval time.Duration
	seed     int64
	plan     *plan
	target   target
	ledger   *Ledger
	expect   bool // count 429 with Retry-After as expected
	progress func(Progress)
}

// job is one scheduled send: its intended send time (offset from the start), and whether it
// found no worker free then.
type job struct {
	due  time.Duration
	late bool
}

// result is one completed send, as the collector records it.
type result struct {
	kind       int8
	class      int8 // classOK, classExpected, classError
	status     int
	errKind    string
	errMsg     string
	due, start time.Duration
	end        time.Duration
	in, out    int
}

const (
	classOK = iota
	classExpected
	classError
)

// measurement is what a phase measured.
type measurement struct {
	name       string
	profile    profile
	wall       time.Duration // from the start to the last completion
	scheduled  int64
	late       int64
	dropped    int64
	droppedEnd int64 // of dropped: still waiting when the drain ended
	requests   int64 // completed: an answer or a transport error
	responses  int64
	errors     int64
	expected   int64
	statuses   map[int]int64
	errorsBy   map[string]int64
	samples    map[string]string // the first message of each transport error kind
	bytesIn    int64
	bytesOut   int64
	conns      int64
	all        *hist
	sendDelay  *hist
	kinds      [numKinds]*kindMeasure
	intervals  []Interval
	interrupt  bool
}

type kindMeasure struct {
	requests, errors, expected int64
	h                          *hist
}

// Interval is one interval of a run (Config.Interval, 1 s by default), by completion time:
// the requests that completed in it and their latencies, and the sends scheduled in it.
type Interval struct {
	// T is the end of the interval, in seconds from the start of the phase.
	T float64 `json:"t_s"`
	// TargetRate is the profile's rate over the interval; Rate the completed requests per
	// second in it.
	TargetRate float64 `json:"target_rate"`
	Rate       float64 `json:"rate"`
	Scheduled  int64   `json:"scheduled"`
	Late       int64   `json:"late"`
	Dropped    int64   `json:"dropped"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	Expected   int64   `json:"expected,omitempty"`
	P50        float64 `json:"p50_ms"`
	P90        float64 `json:"p90_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
	// Endpoints are the same figures for each kind of request.
	Endpoints map[string]EndpointInterval `json:"endpoints,omitempty"`
}

// EndpointInterval is one endpoint's share of an interval.
type EndpointInterval struct {
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
}

// Progress is what a run reports once an interval: the interval, and the totals so far.
type Progress struct {
	Phase       string
	Elapsed     time.Duration
	Duration    time.Duration
	Interval    Interval
	Requests    int64
	Errors      int64
	Late        int64
	Dropped     int64
	Connections int64
}

// String is the live progress line perch bench prints.
func (p Progress) String() string {
	iv := p.Interval
	return fmt.Sprintf("%-8s %4.0fs/%.0fs  target %7.0f/s  achieved %7.0f/s  p50 %7.2fms  p99 %8.2fms  max %8.2fms  errors %d  late %d  dropped %d  conns %d",
		p.Phase, p.Elapsed.Seconds(), p.Duration.Seconds(), iv.TargetRate, iv.Rate, iv.P50, iv.P99, iv.Max,
		p.Errors, p.Late, p.Dropped, p.Connections)
}

// run runs the phase: a scheduler (this goroutine) computes every send's intended time and
// hands it to a bounded queue; ph.workers workers send; a collector records. A send that
// finds no free worker at its intended time is late (it is still sent, and its latency
// counts from the intended time); a send that finds the queue full (ph.backlog sends
// waiting) is dropped. After the last scheduled send the workers go on with the queue for
// up to ph.drain; what is left then is dropped too. It returns early, with what it measured,
// when ctx ends.
func (ph *phase) run(ctx context.Context) *measurement {
	m := &measurement{
		name: ph.name, profile: ph.profile, statuses: map[int]int64{}, errorsBy: map[string]int64{},
		samples: map[string]string{}, all: newHist(), sendDelay: newHist(),
	}
	for i := range m.kinds {
		m.kinds[i] = &kindMeasure{h: newHist()}
	}
	jobs := make(chan job, ph.backlog)
	results := make(chan result, 8192)
	var idle, late, dropped, droppedEnd, scheduled atomic.Int64
	var stopping atomic.Bool
	// start is set once every worker waits for a job (so that the first sends do not count
	// late for want of a started goroutine); workers read it only after a job, which is sent
	// after it is set.
	var start time.Time
	since := func() time.Duration { return time.Since(start) }

	var workers sync.WaitGroup
	for i := range ph.workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			w := ph.plan.newWorker(ph.seed*1000003 + int64(i))
			for {
				idle.Add(1)
				j, ok := <-jobs
				idle.Add(-1)
				if !ok {
					return
				}
				if stopping.Load() {
					droppedEnd.Add(1)
					continue
				}
				results <- ph.send(w, j, since)
			}
		}()
	}

	for idle.Load() < int64(ph.workers) {
		time.Sleep(100 * time.Microsecond)
	}
	start = time.Now()
	collected := make(chan struct{})
	// finalEnd is set before results is closed, and read by the collector after.
	var finalEnd time.Duration
	go func() {
		defer close(collected)
		ph.collect(m, results, start, &finalEnd, &scheduled, &late, &dropped)
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
schedule:
	for i := int64(0); ; i++ {
		due := ph.profile.at(i)
		if due >= ph.duration {
			break
		}
		if wait := due - since(); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				m.interrupt = true
				break schedule
			}
		} else if ctx.Err() != nil {
			m.interrupt = true
			break
		}
		scheduled.Add(1)
		j := job{due: due, late: len(jobs) >= int(idle.Load())}
		select {
		case jobs <- j:
			if j.late {
				late.Add(1)
			}
		default:
			dropped.Add(1)
		}
	}
	close(jobs)
	drained := make(chan struct{})
	go func() { workers.Wait(); close(drained) }()
	grace := time.NewTimer(ph.drain)
	if m.interrupt {
		grace.Reset(0)
	}
	select {
	case <-drained:
	case <-grace.C:
		stopping.Store(true)
		<-drained
	case <-ctx.Done():
		stopping.Store(true)
		m.interrupt = true
		<-drained
	}
	grace.Stop()
	// The last interval ends with the run's duration (a burst's quiet end included), or with
	// the last completion after it.
	finalEnd = since()
	if !m.interrupt && finalEnd < ph.duration {
		finalEnd = ph.duration
	}
	close(results)
	<-collected
	m.scheduled, m.late = scheduled.Load(), late.Load()
	m.droppedEnd = droppedEnd.Load()
	m.dropped = dropped.Load() + m.droppedEnd
	m.conns = ph.target.connections()
	// The wall time is the run's (a burst's quiet end included), or longer when the last
	// requests completed after it; an interrupted run's is what it lasted.
	if m.interrupt || m.wall < finalEnd {
		m.wall = finalEnd
	}
	return m
}

// send sends one job and classifies its outcome.
func (ph *phase) send(w *worker, j job, since func() time.Duration) result {
	o := ph.plan.next(w)
	r := result{kind: int8(o.kind.index()), due: j.due}
	r.start = since()
	out := ph.target.do(w, ph.plan, &o, time.Now().Add(ph.timeout))
	r.end = since()
	r.in, r.out = out.in, out.out
	switch {
	case out.err != nil:
		r.class = classError
		r.errKind = errorKind(out.err)
		r.errMsg = out.err.Error()
	case out.status == 429 && ph.expect && out.retryAfter:
		r.status, r.class = out.status, classExpected
	case out.status >= 400:
		r.status, r.class = out.status, classError
		if out.status == 429 && ph.expect {
			r.errKind = "429_without_retry_after"
		}
	default:
		r.status = out.status
	}
	if out.err == nil {
		ph.plan.observe(&o, out.status, out.body, ph.ledger, ph.tag)
	}
	return r
}

// ivState accumulates one interval.
type ivState struct {
	h      *hist
	kinds  [numKinds]*hist
	counts [numKinds][2]int64 // requests, errors
	iv     Interval
	start  time.Duration
}

func newIVState() *ivState {
	st := &ivState{h: newHist()}
	for i := range st.kinds {
		st.kinds[i] = newHist()
	}
	return st
}

func (st *ivState) reset(start time.Duration) {
	st.h.reset()
	for k := range st.kinds {
		if st.counts[k][0] > 0 {
			st.kinds[k].reset()
		}
	}
	st.counts = [numKinds][2]int64{}
	st.iv = Interval{}
	st.start = start
}

// merge adds o, the interval after st, to st.
func (st *ivState) merge(o *ivState) {
	st.h.merge(o.h)
	for k := range st.kinds {
		if o.counts[k][0] > 0 {
			st.kinds[k].merge(o.kinds[k])
			st.counts[k][0] += o.counts[k][0]
			st.counts[k][1] += o.counts[k][1]
		}
	}
	st.iv.Requests += o.iv.Requests
	st.iv.Errors += o.iv.Errors
	st.iv.Expected += o.iv.Expected
	st.iv.Scheduled += o.iv.Scheduled
	st.iv.Late += o.iv.Late
	st.iv.Dropped += o.iv.Dropped
}

// close computes the interval's figures, ending at end.
func (st *ivState) close(p profile, duration, end time.Duration) Interval {
	iv := st.iv
	span := (end - st.start).Seconds()
	iv.T = round3(end.Seconds())
	due := p.countBefore(min(end, duration)) - p.countBefore(min(st.start, duration))
	iv.TargetRate = round3(float64(due) / span)
	iv.Rate = round3(float64(iv.Requests) / span)
	if st.h.count() > 0 {
		iv.P50, iv.P90, iv.P99, iv.Max = st.h.at(50), st.h.at(90), st.h.at(99), ms(st.h.h.Max())
	}
	for k, h := range st.kinds {
		if st.counts[k][0] == 0 {
			continue
		}
		if iv.Endpoints == nil {
			iv.Endpoints = map[string]EndpointInterval{}
		}
		iv.Endpoints[string(kinds[k])] = EndpointInterval{Requests: st.counts[k][0], Errors: st.counts[k][1], P50: h.at(50), P99: h.at(99)}
	}
	return iv
}

// collect records results until the channel closes, and closes an interval at every tick.
// A last stretch shorter than half an interval, after the last tick, joins the interval
// before it.
func (ph *phase) collect(m *measurement, results <-chan result, start time.Time, finalEnd *time.Duration, scheduled, late, dropped *atomic.Int64) {
	tick := time.NewTicker(ph.interval)
	defer tick.Stop()
	cur, prev := newIVState(), newIVState()
	var prevSched, prevLate, prevDropped int64
	takeCounters := func(st *ivState) {
		s, l, d := scheduled.Load(), late.Load(), dropped.Load()
		st.iv.Scheduled, st.iv.Late, st.iv.Dropped = s-prevSched, l-prevLate, d-prevDropped
		prevSched, prevLate, prevDropped = s, l, d
	}
	report := func(iv Interval, end time.Duration) {
		if ph.progress != nil {
			ph.progress(Progress{
				Phase: ph.name, Elapsed: end, Duration: ph.duration, Interval: iv, Requests: m.requests,
				Errors: m.errors, Late: prevLate, Dropped: prevDropped, Connections: ph.target.connections(),
			})
		}
	}
	for {
		select {
		case r, ok := <-results:
			if !ok {
				end := *finalEnd
				takeCounters(cur)
				switch {
				case len(m.intervals) > 0 && end-cur.start < ph.interval/2:
					prev.merge(cur)
					m.intervals[len(m.intervals)-1] = prev.close(ph.profile, ph.duration, end)
				case cur.iv.Requests > 0 || cur.iv.Scheduled > 0 || len(m.intervals) == 0:
					iv := cur.close(ph.profile, ph.duration, end)
					m.intervals = append(m.intervals, iv)
					report(iv, end)
				}
				return
			}
			lat := r.end - r.due
			m.requests++
			m.bytesIn += int64(r.in)
			m.bytesOut += int64(r.out)
			m.all.record(lat)
			m.sendDelay.record(r.start - r.due)
			m.wall = max(m.wall, r.end)
			km := m.kinds[r.kind]
			km.requests++
			km.h.record(lat)
			if r.status != 0 {
				m.responses++
				m.statuses[r.status]++
			}
			cur.h.record(lat)
			cur.kinds[r.kind].record(lat)
			cur.counts[r.kind][0]++
			cur.iv.Requests++
			switch r.class {
			case classExpected:
				m.expected++
				km.expected++
				cur.iv.Expected++
			case classError:
				m.errors++
				km.errors++
				cur.iv.Errors++
				cur.counts[r.kind][1]++
				key := r.errKind
				if key == "" {
					key = strconv.Itoa(r.status)
				}
				m.errorsBy[key]++
				if r.errMsg != "" {
					if _, ok := m.samples[key]; !ok {
						m.samples[key] = r.errMsg
					}
				}
			}
		case <-tick.C:
			end := time.Since(start)
			takeCounters(cur)
			iv := cur.close(ph.profile, ph.duration, end)
			m.intervals = append(m.intervals, iv)
			report(iv, end)
			prev.reset(end)
			prev, cur = cur, prev
		}
	}
}

// statusMap turns status codes into the report's string keys.
func statusMap(m map[int]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[strconv.Itoa(k)] = v
	}
	return out
}
