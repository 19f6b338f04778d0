package deploy

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/perchhq/perch/internal/admin"
)

// The dashboard and the alerting rules under observability/ name metrics by string; these
// checks make a renamed or removed metric, or a malformed panel or rule, fail the build.

const (
	dashboardFile = "observability/perch-dashboard.json"
	alertsFile    = "observability/perch-alerts.yaml"
	repoRoot      = ".."
)

// ---------------------------------------------------------------------------------------------
// Alerting rules

type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name  string `yaml:"name"`
	Rules []rule `yaml:"rules"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func (r rule) name() string {
	if r.Alert != "" {
		return r.Alert
	}
	return r.Record
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.UnmarshalWithOptions(b, &f, yaml.Strict()); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(f.Groups) == 0 {
		t.Fatalf("%s: no rule groups", alertsFile)
	}
	return f
}

// promDuration is a Prometheus duration as `for:` takes it.
var promDuration = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

var severities = []string{"critical", "warning", "info"}

func TestAlertRulesAreComplete(t *testing.T) {
	f := readRules(t)
	groups := map[string]bool{}
	alerts := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("%s: group name %q empty or repeated", alertsFile, g.Name)
		}
		groups[g.Name] = true
		if len(g.Rules) == 0 {
			t.Errorf("%s: group %s has no rules", alertsFile, g.Name)
		}
		for _, r := range g.Rules {
			where := fmt.Sprintf("%s: group %s, rule %q", alertsFile, g.Name, r.name())
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("%s: want exactly one of alert and record", where)
			}
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", where)
			}
			if r.Record != "" {
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("%s: alert name repeated", where)
			}
			alerts[r.Alert] = true
			if !promDuration.MatchString(r.For) {
				t.Errorf("%s: for %q, want a duration such as 5m", where, r.For)
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				t.Errorf("%s: labels.severity %q, want one of %v", where, r.Labels["severity"], severities)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no annotations.%s", where, a)
				}
			}
			if strings.Contains(strings.TrimSpace(r.Annotations["runbook"]), "\n") {
				t.Errorf("%s: annotations.runbook should be one line", where)
			}
		}
	}
	if len(alerts) == 0 {
		t.Errorf("%s: no alerts", alertsFile)
	}
}

// TestAlertRulesPromtool validates the rules, and the dashboard's queries, with Prometheus's
// own parser when promtool is installed.
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH")
	}
	check := func(file string) {
		t.Helper()
		out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", file, err, out)
		}
	}
	check(alertsFile)

	// The dashboard's queries, as recording rules with the Grafana variables filled in.
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$region", ".*", "$job", ".*", "${datasource}", "")
	var rules []map[string]string
	for i, e := range dashboardExprs(t) {
		rules = append(rules, map[string]string{
			"record": fmt.Sprintf("dashboard:query_%d", i),
			"expr":   vars.Replace(e.expr),
		})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	check(tmp)
}

// ---------------------------------------------------------------------------------------------
// Dashboard

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// panels lists every panel but the rows, those inside collapsed rows included.
func (d dashboard) panels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

type namedExpr struct {
	where, expr string
}

func dashboardExprs(t *testing.T) []namedExpr {
	t.Helper()
	var out []namedExpr
	for _, p := range readDashboard(t).panels() {
		for _, tg := range p.Targets {
			out = append(out, namedExpr{fmt.Sprintf("%s: panel %q, target %s", dashboardFile, p.Title, tg.RefID), tg.Expr})
		}
	}
	return out
}

func TestDashboardIsComplete(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: no uid or title", dashboardFile)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("%s: schemaVersion %d, want 36 or later", dashboardFile, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		vars[v.Name] = v.Type + " " + q
	}
	if vars["datasource"] != "datasource prometheus" {
		t.Errorf("%s: variable datasource is %q, want a Prometheus datasource variable", dashboardFile, vars["datasource"])
	}
	if want := "query label_values(perch_edge_requests_total, region)"; vars["region"] != want {
		t.Errorf("%s: variable region is %q, want %q", dashboardFile, vars["region"], want)
	}
	ids := map[int]bool{}
	panels := d.panels()
	if len(panels) == 0 {
		t.Fatalf("%s: no panels", dashboardFile)
	}
	for _, p := range panels {
		where := fmt.Sprintf("%s: panel %d %q", dashboardFile, p.ID, p.Title)
		if p.ID == 0 || ids[p.ID] {
			t.Errorf("%s: id missing or repeated", where)
		}
		ids[p.ID] = true
		if strings.TrimSpace(p.Title) == "" {
			t.Errorf("%s: no title", where)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource is not ${datasource}", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: target %s has no expr", where, tg.RefID)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Metric names

var (
	// perchMetricRef is a perch_* metric name in PromQL (not part of a longer identifier).
	perchMetricRef = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])(perch_[a-z_]+)`)
	// runtimeMetricRef is a metric of client_golang's Go and process collectors.
	runtimeMetricRef = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])((?:go|process)_[a-z_]+)`)
	// perchMetricDef is a perch_* name quoted in Go source.
	perchMetricDef = regexp.MustCompile(`"(perch_[a-z_]+)"`)
	// seriesSuffixes are the series a histogram or summary adds to its name.
	seriesSuffixes = []string{"_bucket", "_sum", "_count"}
)

// observabilityExprs is every PromQL expression of the dashboard and the rules.
func observabilityExprs(t *testing.T) []namedExpr {
	t.Helper()
	exprs := dashboardExprs(t)
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, namedExpr{fmt.Sprintf("%s: rule %q", alertsFile, r.name()), r.Expr})
		}
	}
	return exprs
}

// definedPerchMetrics returns every perch_* name quoted in the repository's Go source, tests
// excluded.
func definedPerchMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != repoRoot && (strings.HasPrefix(n, ".") || n == "vendor" || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range perchMetricDef.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no perch_* metric names in the repository's Go source")
	}
	return names
}

// runtimeMetrics returns the metric families of the Go and process collectors every perch
// process registers.
func runtimeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	mfs, err := admin.NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// known reports whether name, or the histogram or summary it is a series of, is in defined.
func known(defined map[string]bool, name string) bool {
	if defined[name] {
		return true
	}
	for _, s := range seriesSuffixes {
		if base, ok := strings.CutSuffix(name, s); ok && defined[base] {
			return true
		}
	}
	return false
}

func TestObservabilityMetricsExist(t *testing.T) {
	perch := definedPerchMetrics(t)
	runtime := runtimeMetrics(t)
	used := map[string]bool{}
	for _, e := range observabilityExprs(t) {
		for _, m := range perchMetricRef.FindAllStringSubmatch(e.expr, -1) {
			used[m[1]] = true
			if !known(perch, m[1]) {
				t.Errorf("%s: metric %s is not defined in the Go source", e.where, m[1])
			}
		}
		for _, m := range runtimeMetricRef.FindAllStringSubmatch(e.expr, -1) {
			if !known(runtime, m[1]) {
				t.Errorf("%s: metric %s is not exported by the Go or process collector", e.where, m[1])
			}
		}
	}
	if len(used) == 0 {
		t.Error("the dashboard and rules reference no perch_* metric")
	}
}

func TestMetricExtraction(t *testing.T) {
	expr := `sum(rate(perch_edge_request_duration_seconds_bucket{job=~".*perch.*"}[5m])) / on() xperch_y / perch_core_batches_waiting`
	var got []string
	for _, m := range perchMetricRef.FindAllStringSubmatch(expr, -1) {
		got = append(got, m[1])
	}
	want := []string{"perch_edge_request_duration_seconds_bucket", "perch_core_batches_waiting"}
	if !slices.Equal(got, want) {
		t.Errorf("extracted %v, want %v", got, want)
	}
	defined := map[string]bool{"perch_edge_request_duration_seconds": true}
	if !known(defined, "perch_edge_request_duration_seconds_bucket") || known(defined, "perch_edge_request_duration") || known(defined, "perch_edge_request_duration_seconds_total") {
		t.Error("known resolves histogram series wrongly")
	}
	if m := perchMetricDef.FindStringSubmatch(`Name: "perch_a_total", Help: "..."`); m == nil || m[1] != "perch_a_total" {
		t.Errorf("perchMetricDef found %v in a metric definition", m)
	}
}
