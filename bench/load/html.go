package load

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"slices"
	"strings"
)

// The colors of the plots' series. The screenshot test looks for colorP99.
const (
	colorP50    = "#1f77b4"
	colorP90    = "#2ca02c"
	colorP99    = "#d62728"
	colorMax    = "#7f7f7f"
	colorTarget = "#222222"
	colorRate   = "#1f77b4"
	colorErrors = "#9b1c1c"
	colorLate   = "#ff7f0e"
)

var endpointColors = map[string]string{
	"all": "#111111", "get": "#1f77b4", "list": "#ff7f0e", "put": "#2ca02c", "create": "#9467bd",
	"post": "#8c564b", "sync": "#17becf",
}

var baselineColors = map[string]string{BaselineCeiling: "#e377c2", BaselineNginx: "#bcbd22", BaselinePostgres: "#8c8c8c"}

// series is one line of a chart.
type series struct {
	name   string
	color  string
	dashed bool
	marks  bool // draw a dot at each point
	xs, ys []float64
	// fails marks points drawn as crosses (a capacity step that broke).
	fails []bool
}

type tick struct {
	v     float64
	label string
}

// chart is a line chart drawn as inline SVG.
type chart struct {
	title, xLabel, yLabel string
	logY                  bool
	xTicks                []tick // nil: computed
	series                []series
	xMin, xMax            float64 // both 0: from the data
}

const (
	chartW, chartH                 = 900, 320
	padL, padR, padT, padB float64 = 70, 150, 34, 46
)

func (c chart) svg() template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		chartW, chartH, chartW, chartH, html.EscapeString(c.title))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%g" y="20" class="title">%s</text>`, padL, html.EscapeString(c.title))
	xmin, xmax := c.xMin, c.xMax
	ymin, ymax := math.Inf(1), math.Inf(-1)
	auto := xmin == 0 && xmax == 0
	if auto {
		xmin, xmax = math.Inf(1), math.Inf(-1)
	}
	points := 0
	for _, s := range c.series {
		for i := range s.xs {
			x, y := s.xs[i], s.ys[i]
			if c.logY && y <= 0 {
				continue
			}
			if auto {
				xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
			}
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
			points++
		}
	}
	pw, ph := float64(chartW)-padL-padR, float64(chartH)-padT-padB
	if points == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" class="empty">no data</text></svg>`, padL+pw/2-30, padT+ph/2)
		return template.HTML(b.String())
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	var yTicks []tick
	if c.logY {
		lo := math.Floor(math.Log10(math.Max(ymin, 0.001)))
		hi := math.Ceil(math.Log10(math.Max(ymax, 0.001)))
		if hi <= lo {
			hi = lo + 1
		}
		ymin, ymax = math.Pow(10, lo), math.Pow(10, hi)
		for e := lo; e <= hi; e++ {
			yTicks = append(yTicks, tick{math.Pow(10, e), fmtTick(math.Pow(10, e))})
		}
	} else {
		ymin = math.Min(ymin, 0)
		ymax, yTicks = niceTicks(ymin, ymax)
	}
	sx := func(x float64) float64 { return padL + (x-xmin)/(xmax-xmin)*pw }
	sy := func(y float64) float64 {
		if c.logY {
			return padT + ph - (math.Log10(y)-math.Log10(ymin))/(math.Log10(ymax)-math.Log10(ymin))*ph
		}
		return padT + ph - (y-ymin)/(ymax-ymin)*ph
	}
	// Grid and axes.
	for _, t := range yTicks {
		y := sy(t.v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="grid"/>`, padL, y, padL+pw, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="ylabel">%s</text>`, padL-6, y+4, t.label)
	}
	xt := c.xTicks
	if xt == nil {
		_, xt = niceTicks(xmin, xmax)
	}
	for _, t := range xt {
		if t.v < xmin-1e-9 || t.v > xmax+1e-9 {
			continue
		}
		x := sx(t.v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="grid"/>`, x, padT, x, padT+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="xlabel">%s</text>`, x, padT+ph+16, t.label)
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="frame"/>`, padL, padT, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis">%s</text>`, padL+pw/2, float64(chartH)-8, html.EscapeString(c.xLabel))
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" class="axis">%s</text>`, padT+ph/2, html.EscapeString(c.yLabel))
	// Lines: the first series is drawn last, on top.
	for i := len(c.series) - 1; i >= 0; i-- {
		s := c.series[i]
		var pts []string
		for j := range s.xs {
			if c.logY && s.ys[j] <= 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(s.xs[j]), sy(s.ys[j])))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="7 4"`
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2.5"%s><title>%s</title></polyline>`,
				strings.Join(pts, " "), s.color, dash, html.EscapeString(s.name))
		}
		if s.marks || len(pts) == 1 {
			for j := range s.xs {
				if c.logY && s.ys[j] <= 0 {
					continue
				}
				x, y := sx(s.xs[j]), sy(s.ys[j])
				if j < len(s.fails) && s.fails[j] {
					fmt.Fprintf(&b, `<path d="M%.1f %.1fl8 8m0 -8l-8 8" stroke="%s" stroke-width="2.5"/>`, x-4, y-4, s.color)
				} else {
					fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: %.4g, %.4g</title></circle>`, x, y, s.color, html.EscapeString(s.name), s.xs[j], s.ys[j])
				}
			}
		}
		// The legend.
		ly := padT + 10 + float64(i)*18
		lx := padL + pw + 14
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"%s/>`, lx, ly, lx+22, ly, s.color, dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="legend">%s</text>`, lx+28, ly+4, html.EscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceTicks returns a rounded-up maximum and about five ticks from lo to it.
func niceTicks(lo, hi float64) (float64, []tick) {
	span := hi - lo
	if span <= 0 {
		span = math.Max(math.Abs(hi), 1)
	}
	step := math.Pow(10, math.Floor(math.Log10(span/5)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if span/(step*m) <= 6 {
			step *= m
			break
		}
	}
	start := math.Floor(lo/step) * step
	top := math.Ceil(hi/step) * step
	if top <= hi {
		top += step
	}
	var ts []tick
	for v := start; v <= top+step/2; v += step {
		ts = append(ts, tick{v, fmtTick(v)})
	}
	return top, ts
}

func fmtTick(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%gk", v/1e3)
	default:
		return fmt.Sprintf("%g", math.Round(v*1000)/1000)
	}
}

// percentileX maps a percentile to the x of an HDR percentile plot: log10(1/(1-p)), so
// that 90%, 99%, 99.9% … are evenly spaced. 100% sits at 99.999%.
func percentileX(p float64) float64 {
	return math.Log10(1 / math.Max(1-p/100, 1e-5))
}

var percentileTicks = []tick{{0, "0%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "99.999%"}}

func distSeries(name, color string, dashed bool, d []Point) series {
	s := series{name: name, color: color, dashed: dashed}
	for _, p := range d {
		s.xs = append(s.xs, percentileX(p.Percentile))
		s.ys = append(s.ys, p.Ms)
	}
	return s
}

// charts returns the report's plots.
func (r *Report) charts() []template.HTML {
	var out []template.HTML
	if r.Summary == nil {
		return out
	}
	ivs := r.Intervals
	end := 1.0
	if len(ivs) > 0 {
		end = ivs[len(ivs)-1].T
	}
	lat := chart{title: "Latency over time (from the intended send time)", xLabel: "seconds since the start", yLabel: "latency, ms (log)", logY: true, xMax: end}
	rate := chart{title: "Rate over time", xLabel: "seconds since the start", yLabel: "per second", xMax: end}
	p50, p90, p99, mx := series{name: "p50", color: colorP50}, series{name: "p90", color: colorP90}, series{name: "p99", color: colorP99}, series{name: "max", color: colorMax}
	target := series{name: "target rate", color: colorTarget, dashed: true}
	achieved := series{name: "achieved", color: colorRate}
	errs := series{name: "errors/s", color: colorErrors}
	late := series{name: "late+dropped/s", color: colorLate}
	prev := 0.0
	for _, iv := range ivs {
		x := iv.T
		span := x - prev
		prev = x
		if span <= 0 {
			continue
		}
		for _, s := range []struct {
			s *series
			v float64
		}{{&p50, iv.P50}, {&p90, iv.P90}, {&p99, iv.P99}, {&mx, iv.Max}} {
			if iv.Requests > 0 {
				s.s.xs, s.s.ys = append(s.s.xs, x), append(s.s.ys, s.v)
			}
		}
		target.xs, target.ys = append(target.xs, x), append(target.ys, iv.TargetRate)
		achieved.xs, achieved.ys = append(achieved.xs, x), append(achieved.ys, iv.Rate)
		errs.xs, errs.ys = append(errs.xs, x), append(errs.ys, float64(iv.Errors)/span)
		late.xs, late.ys = append(late.xs, x), append(late.ys, float64(iv.Late+iv.Dropped)/span)
	}
	lat.series = []series{p50, p90, p99, mx}
	rate.series = []series{target, achieved, errs, late}
	out = append(out, lat.svg(), rate.svg())

	dist := chart{title: "Latency by percentile", xLabel: "percentile", yLabel: "latency, ms (log)", logY: true,
		xTicks: percentileTicks, xMin: 0, xMax: 5}
	dist.series = append(dist.series, distSeries("all requests", endpointColors["all"], false, r.Distribution))
	for _, k := range kinds {
		if e := r.Endpoints[string(k)]; e != nil && len(r.Endpoints) > 1 {
			dist.series = append(dist.series, distSeries(string(k), endpointColors[string(k)], false, e.Distribution))
		}
	}
	for _, b := range r.Baselines {
		if b.Summary != nil {
			dist.series = append(dist.series, distSeries("baseline "+b.Name, baselineColors[b.Name], true, b.Summary.Distribution))
		}
	}
	out = append(out, dist.svg())

	if c := r.Capacity; c != nil && len(c.Steps) > 0 {
		cc := chart{title: fmt.Sprintf("Capacity search: %.0f/s held", c.Rate), xLabel: "rate tried, per second", yLabel: "p99, ms (log)", logY: true}
		steps := slices.Clone(c.Steps)
		slices.SortFunc(steps, func(a, b CapacityStep) int { return int(math.Copysign(1, a.Rate-b.Rate)) })
		s := series{name: "p99 (× broke)", color: colorP99, marks: true}
		for _, st := range steps {
			s.xs, s.ys, s.fails = append(s.xs, st.Rate), append(s.ys, math.Max(st.P99, 0.001)), append(s.fails, !st.Held)
		}
		cc.series = []series{s}
		out = append(out, cc.svg())
	}
	return out
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"f":     func(v float64) string { return fmt.Sprintf("%.3g", v) },
	"rate":  func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"bytes": fmtBytes,
	"ratio": func(m map[string]float64, k string) string {
		if v, ok := m[k]; ok {
			return fmt.Sprintf("×%.3g", v)
		}
		return "–"
	},
	"kv": func(m map[string]int64) string { return strings.TrimSpace(mapText(m)) },
	"order": func(m map[string]*Endpoint) []string {
		var out []string
		for _, k := range kinds {
			if m[string(k)] != nil {
				out = append(out, string(k))
			}
		}
		return out
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>perch bench: {{.R.Scenario}}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 26px 0 8px; }
.sub { color: #555; margin-bottom: 14px; }
table { border-collapse: collapse; background: #fff; margin: 6px 0; }
td, th { border: 1px solid #ddd; padding: 4px 10px; text-align: right; } th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #c62828; font-weight: 600; }
.chart { display: block; margin: 10px 0; border: 1px solid #ddd; background: #fff; }
.chart .title { font-size: 15px; font-weight: 600; fill: #222; }
.chart .grid { stroke: #e6e6e6; stroke-width: 1; }
.chart .frame { fill: none; stroke: #999; }
.chart .xlabel { font-size: 11px; fill: #555; text-anchor: middle; }
.chart .ylabel { font-size: 11px; fill: #555; text-anchor: end; }
.chart .axis { font-size: 12px; fill: #333; text-anchor: middle; }
.chart .legend { font-size: 12px; fill: #333; }
.chart .empty { font-size: 14px; fill: #999; }
.notes li { color: #8a5a00; }
</style></head><body>
<h1>perch bench: {{.R.Scenario}} <span class="{{if .R.Passed}}pass{{else}}fail{{end}}">{{if .R.Passed}}PASSED{{else}}FAILED{{end}}</span></h1>
<div class="sub">{{.R.Description}}<br>
{{range $i, $t := .R.Targets}}{{if $i}}, {{end}}{{$t}}{{end}} · {{.R.Mode}} · {{.R.Workers}} workers · {{.R.Profile}} · started {{.R.StartedAt.Format "2006-01-02 15:04:05 UTC"}}</div>
{{with .R.Summary}}
<table>
<tr><th>target rate</th><th>achieved</th><th>throughput</th><th>requests</th><th>errors</th><th>late</th><th>dropped</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
<tr><td>{{rate .TargetRate}}/s</td><td>{{rate .AchievedRate}}/s</td><td>{{rate .Throughput}}/s</td><td>{{.Requests}}</td><td>{{.Errors}} ({{f .ErrorRate}}%)</td><td>{{.Late}}</td><td>{{.Dropped}}</td>
<td>{{f .P50}} ms</td><td>{{f .P90}} ms</td><td>{{f .P99}} ms</td><td>{{f .P999}} ms</td><td>{{f .Max}} ms</td></tr>
</table>
<p>Latencies count from each request's intended send time, so a stall of the target shows in full (no coordinated omission).
Late: sends that found no worker free at their intended time (sent anyway). Dropped: sends never made, the backlog being full or the run over.
Statuses: {{kv .Statuses}}{{if .ErrorsByStatus}} · errors: {{kv .ErrorsByStatus}}{{end}} · bodies {{bytes .BytesIn}} in, {{bytes .BytesOut}} out · {{.Connections}} connections opened · send delay p99 {{f .SendDelay.P99}} ms.</p>
{{end}}
{{range .Charts}}{{.}}
{{end}}
{{with .R.Summary}}{{if .Endpoints}}
<h2>Endpoints</h2>
<table><tr><th>endpoint</th><th>requests</th><th>errors</th><th>expected</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{$eps := .Endpoints}}{{range order $eps}}{{$e := index $eps .}}<tr><td>{{.}}</td><td>{{$e.Requests}}</td><td>{{$e.Errors}}</td><td>{{$e.Expected}}</td><td>{{f $e.Latency.P50}} ms</td><td>{{f $e.Latency.P90}} ms</td><td>{{f $e.Latency.P99}} ms</td><td>{{f $e.Latency.P999}} ms</td><td>{{f $e.Latency.Max}} ms</td></tr>
{{end}}</table>{{end}}{{end}}
{{if .R.Thresholds}}
<h2>Thresholds</h2>
<table><tr><th>threshold</th><th>measured</th><th>result</th></tr>
{{range .R.Thresholds}}<tr><td>{{.Threshold}}</td><td>{{if .Note}}{{.Note}}{{else}}{{f .Value}} {{.Unit}}{{end}}</td><td class="{{if .Passed}}pass{{else}}fail{{end}}">{{if .Passed}}pass{{else}}FAIL{{end}}</td></tr>
{{end}}</table>{{end}}
{{if .R.Baselines}}
<h2>Baselines (the same load, in the same process)</h2>
<p>Ratios are the run's figure divided by the baseline's: a latency ratio above 1 means the run was slower, an achieved-rate ratio below 1 that it did less.</p>
<table><tr><th rowspan="2">baseline</th><th rowspan="2">compared</th><th colspan="5">baseline</th><th colspan="5">run ÷ baseline</th></tr>
<tr><th>achieved</th><th>p50</th><th>p99</th><th>max</th><th>errors</th><th>achieved</th><th>p50</th><th>p99</th><th>p99.9</th><th>{{if .R.Capacity}}capacity{{else}}max{{end}}</th></tr>
{{$cap := .R.Capacity}}{{range .R.Baselines}}<tr><td>{{.Name}}</td>{{if .Skipped}}<td colspan="11" style="text-align:left">skipped: {{.Skipped}}</td>{{else}}<td>{{.Compared}}</td><td>{{rate .Summary.AchievedRate}}/s</td><td>{{f .Summary.P50}} ms</td><td>{{f .Summary.P99}} ms</td><td>{{f .Summary.Max}} ms</td><td>{{.Summary.Errors}}</td>
<td>{{ratio .Ratios "achieved_rate"}}</td><td>{{ratio .Ratios "p50"}}</td><td>{{ratio .Ratios "p99"}}</td><td>{{ratio .Ratios "p999"}}</td><td>{{if $cap}}{{ratio .Ratios "capacity"}}{{else}}{{ratio .Ratios "max"}}{{end}}</td>{{end}}</tr>
{{end}}</table>{{end}}
{{with .R.Capacity}}
<h2>Capacity search: {{rate .Rate}}/s held</h2>
<table><tr><th>rate</th><th>achieved</th><th>p50</th><th>p99</th><th>max</th><th>errors</th><th>late</th><th>dropped</th><th>held</th></tr>
{{range .Steps}}<tr><td>{{rate .Rate}}/s</td><td>{{rate .AchievedRate}}/s</td><td>{{f .P50}} ms</td><td>{{f .P99}} ms</td><td>{{f .Max}} ms</td><td>{{f .ErrorRate}}%</td><td>{{.Late}}</td><td>{{.Dropped}}</td>
<td class="{{if .Held}}pass{{else}}fail{{end}}" style="text-align:left">{{if .Held}}yes{{else}}no: {{range .Broken}}{{.}}; {{end}}{{end}}</td></tr>
{{end}}</table>{{end}}
{{if .R.Notes}}<h2>Notes</h2><ul class="notes">{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
<p class="sub">Histograms: {{.R.Histograms}}. The .hgrm files beside this report hold the full percentile distributions.</p>
</body></html>
`))

// WriteHTML writes the report as one self-contained HTML page: tables and inline SVG plots
// (latency and rate over time, latency by percentile, the capacity search), no scripts, no
// external resources.
func (r *Report) WriteHTML(w io.Writer) error {
	return reportTemplate.Execute(w, struct {
		R      *Report
		Charts []template.HTML
	}{r, r.charts()})
}
