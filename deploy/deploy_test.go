package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/nats-io/nats-server/v2/server"
)

// The checks here are hermetic: they read the files under deploy/ and the source of cmd/perch,
// and start nothing.

const (
	composeFile     = "compose.yaml"
	natsConfFile    = "nats/nats-server.conf"
	kubeDir         = "kubernetes"
	cmdPerchDir     = "../cmd/perch"
	natsConfigMap   = "nats-config"
	natsConfKey     = "nats-server.conf"
	natsImagePrefix = "nats:"
)

// roleFuncs maps each perch subcommand to the function of cmd/perch that defines its flags.
var roleFuncs = map[string]string{
	"core":    "runCore",
	"edge":    "runEdge",
	"migrate": "runMigrate",
	"dev":     "runDev",
}

// ---------------------------------------------------------------------------------------------
// YAML

// yamlDoc is one document of a YAML file.
type yamlDoc struct {
	file  string
	index int
	value any
}

func (d yamlDoc) String() string { return fmt.Sprintf("%s (document %d)", d.file, d.index+1) }

// yamlFiles lists every YAML file under deploy/.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, filepath.ToSlash(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no YAML files under deploy/")
	}
	return files
}

// readYAML decodes every document of a YAML file (documents are separated by ---). Empty
// documents are dropped.
func readYAML(path string) ([]yamlDoc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []yamlDoc
	for i := 0; ; i++ {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		if v != nil {
			docs = append(docs, yamlDoc{file: path, index: i, value: v})
		}
	}
	return docs, nil
}

func mustReadYAML(t *testing.T, path string) []yamlDoc {
	t.Helper()
	docs, err := readYAML(path)
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// get walks v through map keys; it returns nil when a key is missing or a value is not a map.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func getString(v any, keys ...string) string {
	s, _ := get(v, keys...).(string)
	return s
}

func getMap(v any, keys ...string) map[string]any {
	m, _ := get(v, keys...).(map[string]any)
	return m
}

func getList(v any, keys ...string) []any {
	l, _ := get(v, keys...).([]any)
	return l
}

// scalar renders a YAML scalar as the string a program would receive.
func scalar(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, len(v))
		for i, s := range v {
			out[i] = scalar(s)
		}
		return out
	}
	return nil
}

func TestYAMLFilesParse(t *testing.T) {
	for _, f := range yamlFiles(t) {
		docs, err := readYAML(f)
		if err != nil {
			t.Errorf("YAML syntax: %v", err)
			continue
		}
		if len(docs) == 0 {
			t.Errorf("%s: no YAML documents", f)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Kubernetes objects

type kubeObject struct {
	doc yamlDoc
	obj map[string]any
}

func (o kubeObject) kind() string { return getString(o.obj, "kind") }
func (o kubeObject) name() string { return getString(o.obj, "metadata", "name") }
func (o kubeObject) String() string {
	return fmt.Sprintf("%s %s/%s", o.doc, o.kind(), o.name())
}

// kubeObjects returns every document under kubernetes/, kustomization.yaml included.
func kubeObjects(t *testing.T) []kubeObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubeDir, err)
	}
	var objs []kubeObject
	for _, f := range files {
		for _, d := range mustReadYAML(t, f) {
			m, ok := d.value.(map[string]any)
			if !ok {
				t.Fatalf("%s: not a mapping", d)
			}
			objs = append(objs, kubeObject{doc: d, obj: m})
		}
	}
	return objs
}

func TestKubernetesObjectsHaveKindAndName(t *testing.T) {
	seen := map[string]kubeObject{}
	for _, o := range kubeObjects(t) {
		if getString(o.obj, "apiVersion") == "" {
			t.Errorf("%s: no apiVersion", o)
		}
		if o.kind() == "" {
			t.Errorf("%s: no kind", o)
		}
		if o.kind() == "Kustomization" {
			continue // a kustomize file, not an API object: it has no metadata
		}
		if o.name() == "" {
			t.Errorf("%s: no metadata.name", o)
		}
		// Namespaced objects say where they go, so that `kubectl apply -f` works without
		// kustomize too. (Only the Namespace itself is cluster-scoped here.)
		if ns := getString(o.obj, "metadata", "namespace"); o.kind() != "Namespace" && ns != "perch" {
			t.Errorf("%s: metadata.namespace is %q, want perch", o, ns)
		}
		key := o.kind() + "/" + o.name()
		if prev, ok := seen[key]; ok {
			t.Errorf("%s: %s is also defined in %s", o, key, prev.doc)
		}
		seen[key] = o
	}
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	var listed []string
	for _, d := range mustReadYAML(t, filepath.Join(kubeDir, "kustomization.yaml")) {
		for _, r := range getList(d.value, "resources") {
			listed = append(listed, scalar(r))
		}
	}
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	sort.Strings(want)
	got := slices.Clone(listed)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %v, want the manifests %v", got, want)
	}
}

// podTemplate is the pod spec of a workload and the labels its pods get.
type podTemplate struct {
	owner  kubeObject
	labels map[string]any
	spec   map[string]any
}

func podTemplates(objs []kubeObject) []podTemplate {
	var out []podTemplate
	for _, o := range objs {
		var tmpl map[string]any
		switch o.kind() {
		case "Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet":
			tmpl = getMap(o.obj, "spec", "template")
		case "CronJob":
			tmpl = getMap(o.obj, "spec", "jobTemplate", "spec", "template")
		case "Pod":
			tmpl = o.obj
		default:
			continue
		}
		out = append(out, podTemplate{owner: o, labels: getMap(tmpl, "metadata", "labels"), spec: getMap(tmpl, "spec")})
	}
	return out
}

func (p podTemplate) containers() []map[string]any {
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range getList(p.spec, key) {
			if m, ok := c.(map[string]any); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

func matches(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if scalar(labels[k]) != scalar(v) {
			return false
		}
	}
	return true
}

// TestKubernetesSelectorsMatch checks that every workload selects its own pods and that every
// Service and PodDisruptionBudget selects some pods, with the named ports a Service targets.
func TestKubernetesSelectorsMatch(t *testing.T) {
	objs := kubeObjects(t)
	tmpls := podTemplates(objs)
	for _, p := range tmpls {
		if sel := getMap(p.owner.obj, "spec", "selector", "matchLabels"); sel != nil && !matches(sel, p.labels) {
			t.Errorf("%s: spec.selector %v does not match the pod template's labels %v", p.owner, sel, p.labels)
		}
		if len(p.containers()) == 0 {
			t.Errorf("%s: no containers", p.owner)
		}
	}
	for _, o := range objs {
		var sel map[string]any
		switch o.kind() {
		case "Service":
			sel = getMap(o.obj, "spec", "selector")
		case "PodDisruptionBudget":
			sel = getMap(o.obj, "spec", "selector", "matchLabels")
		default:
			continue
		}
		var selected []podTemplate
		for _, p := range tmpls {
			if matches(sel, p.labels) {
				selected = append(selected, p)
			}
		}
		if len(selected) == 0 {
			t.Errorf("%s: selector %v matches no pod template", o, sel)
			continue
		}
		if o.kind() != "Service" {
			continue
		}
		for _, port := range getList(o.obj, "spec", "ports") {
			target, ok := get(port, "targetPort").(string)
			if !ok {
				continue
			}
			proto := getString(port, "protocol")
			if proto == "" {
				proto = "TCP"
			}
			for _, p := range selected {
				if !hasNamedPort(p, target, proto) {
					t.Errorf("%s: targetPort %q (%s) is not a container port of %s", o, target, proto, p.owner)
				}
			}
		}
	}
}

func hasNamedPort(p podTemplate, name, proto string) bool {
	for _, c := range p.containers() {
		for _, cp := range getList(c, "ports") {
			cproto := getString(cp, "protocol")
			if cproto == "" {
				cproto = "TCP"
			}
			if getString(cp, "name") == name && cproto == proto {
				return true
			}
		}
	}
	return false
}

// TestKubernetesPodsAreLockedDown checks the security settings every container must have.
func TestKubernetesPodsAreLockedDown(t *testing.T) {
	for _, p := range podTemplates(kubeObjects(t)) {
		if get(p.spec, "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", p.owner)
		}
		for _, c := range p.containers() {
			name := getString(c, "name")
			if get(c, "securityContext", "readOnlyRootFilesystem") != true {
				t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", p.owner, name)
			}
			if get(c, "securityContext", "allowPrivilegeEscalation") != false {
				t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", p.owner, name)
			}
			if getMap(c, "resources", "requests") == nil || getMap(c, "resources", "limits") == nil {
				t.Errorf("%s: container %s: resources need requests and limits", p.owner, name)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------
// NATS: the durability settings of DESIGN §2

func TestNATSConfigSyncsEveryWrite(t *testing.T) {
	b, err := os.ReadFile(natsConfFile)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*sync_interval:\s*always\s*$`).Match(b) {
		t.Errorf("%s: no line `sync_interval: always`", natsConfFile)
	}
	// What nats-server itself makes of the file.
	opts, err := server.ProcessConfigFile(natsConfFile)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", natsConfFile, err)
	}
	if !opts.JetStream {
		t.Error("JetStream is not enabled")
	}
	if !opts.SyncAlways {
		t.Error("JetStream does not fsync every write (SyncAlways is false)")
	}
	if opts.StoreDir == "" {
		t.Error("jetstream.store_dir is not set")
	}
	if opts.MaxPayload != 8<<20 {
		t.Errorf("max_payload is %d, want 8MB: edges publish batches of up to 4 MiB of data", opts.MaxPayload)
	}
	if opts.MaxPending < int64(opts.MaxPayload) {
		t.Errorf("max_pending %d is below max_payload %d", opts.MaxPending, opts.MaxPayload)
	}
	if opts.Cluster.Name == "" || opts.Cluster.Port == 0 {
		t.Errorf("no cluster name or port: %+v", opts.Cluster)
	}
	if len(opts.Routes) != 3 {
		t.Errorf("%d routes, want 3 (a 3-node cluster for 3 stream replicas)", len(opts.Routes))
	}
	if opts.ServerName != "" {
		t.Errorf("server_name %q is in the shared file; each server must get its own", opts.ServerName)
	}
}

func TestNATSConfigMapMatchesFile(t *testing.T) {
	want, err := os.ReadFile(natsConfFile)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, o := range kubeObjects(t) {
		if o.kind() != "ConfigMap" || o.name() != natsConfigMap {
			continue
		}
		found = true
		got := getString(o.obj, "data", natsConfKey)
		if got != string(want) {
			t.Errorf("%s: data[%q] differs from %s; copy the file into it", o, natsConfKey, natsConfFile)
		}
	}
	if !found {
		t.Fatalf("no ConfigMap %s", natsConfigMap)
	}
}

// natsConfigPath is the file a nats-server command line loads with --config or -c.
func natsConfigPath(args []string) string { return natsFlag(args, "config", "c") }

// natsFlag is the value of a nats-server flag in args, or "".
func natsFlag(args []string, names ...string) string {
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !slices.Contains(names, name) {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func natsStoreDir(t *testing.T) string {
	t.Helper()
	opts, err := server.ProcessConfigFile(natsConfFile)
	if err != nil {
		t.Fatal(err)
	}
	return opts.StoreDir
}

func underDir(path, dir string) bool {
	dir = strings.TrimSuffix(dir, "/")
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func TestComposeNATSUsesTheConfig(t *testing.T) {
	storeDir := natsStoreDir(t)
	services := composeServices(t)
	names := map[string]bool{}
	var n int
	for name, svc := range services {
		if !strings.HasPrefix(getString(svc, "image"), natsImagePrefix) {
			continue
		}
		n++
		args := stringList(get(svc, "command"))
		conf := natsConfigPath(args)
		if conf == "" {
			t.Errorf("service %s: nats-server is not given --config", name)
			continue
		}
		var mounted, persistent bool
		for _, v := range getList(svc, "volumes") {
			src, dst := composeVolume(v)
			if dst == conf && filepath.Clean(src) == filepath.Clean("./"+natsConfFile) {
				mounted = true
			}
			// A named volume (not a path) holding the JetStream store.
			if !strings.ContainsAny(src, "./") && src != "" && underDir(storeDir, dst) {
				persistent = true
			}
		}
		if !mounted {
			t.Errorf("service %s: --config %s is not %s mounted from deploy/", name, conf, natsConfFile)
		}
		if !persistent {
			t.Errorf("service %s: the JetStream store %s is not on a named volume", name, storeDir)
		}
		sn := natsFlag(args, "server_name", "n", "name")
		if sn == "" || names[sn] {
			t.Errorf("service %s: --server_name %q is missing or not unique", name, sn)
		}
		names[sn] = true
		if routes := natsFlag(args, "routes"); len(strings.Split(routes, ",")) != 3 {
			t.Errorf("service %s: --routes %q does not name 3 servers", name, routes)
		}
	}
	if n != 3 {
		t.Errorf("%d NATS services in %s, want 3", n, composeFile)
	}
}

// composeVolume splits a volume entry (short "src:dst[:mode]" or long syntax).
func composeVolume(v any) (src, dst string) {
	if m, ok := v.(map[string]any); ok {
		return scalar(m["source"]), scalar(m["target"])
	}
	parts := strings.Split(scalar(v), ":")
	if len(parts) < 2 {
		return "", parts[0]
	}
	return parts[0], parts[1]
}

func TestKubernetesNATSUsesTheConfig(t *testing.T) {
	storeDir := natsStoreDir(t)
	objs := kubeObjects(t)
	var found int
	for _, p := range podTemplates(objs) {
		for _, c := range p.containers() {
			if !strings.HasPrefix(getString(c, "image"), natsImagePrefix) {
				continue
			}
			found++
			if p.owner.kind() != "StatefulSet" {
				t.Errorf("%s: NATS must run in a StatefulSet (stable names and volumes)", p.owner)
			}
			if r := get(p.owner.obj, "spec", "replicas"); scalar(r) != "3" {
				t.Errorf("%s: replicas %v, want 3", p.owner, r)
			}
			args := append(stringList(get(c, "command")), stringList(get(c, "args"))...)
			conf := natsConfigPath(args)
			if natsFlag(args, "server_name", "n", "name") == "" {
				t.Errorf("%s: nats-server is not given --server_name", p.owner)
			}
			var fromConfigMap, persistent bool
			claims := map[string]bool{}
			for _, vct := range getList(p.owner.obj, "spec", "volumeClaimTemplates") {
				claims[getString(vct, "metadata", "name")] = true
			}
			for _, vm := range getList(c, "volumeMounts") {
				vname, mpath := getString(vm, "name"), getString(vm, "mountPath")
				if claims[vname] && underDir(storeDir, mpath) {
					persistent = true
				}
				for _, vol := range getList(p.spec, "volumes") {
					if getString(vol, "name") != vname || getString(vol, "configMap", "name") != natsConfigMap {
						continue
					}
					sub := getString(vm, "subPath")
					if (sub == "" && conf == mpath+"/"+natsConfKey) || (sub == natsConfKey && conf == mpath) {
						fromConfigMap = true
					}
				}
			}
			if !fromConfigMap {
				t.Errorf("%s: --config %q is not the ConfigMap %s's %s", p.owner, conf, natsConfigMap, natsConfKey)
			}
			if !persistent {
				t.Errorf("%s: the JetStream store %s is not on a volumeClaimTemplate", p.owner, storeDir)
			}
		}
	}
	if found == 0 {
		t.Fatal("no NATS container in the Kubernetes manifests")
	}
}

// ---------------------------------------------------------------------------------------------
// perch's real flags, from the source of cmd/perch

type flagDef struct {
	name     string
	bool     bool
	required bool   // its usage says "(required)"
	def      string // the default when it is a literal, else ""
}

// roleFlags holds the flags of each subcommand, by name.
type roleFlags map[string]map[string]flagDef

// cliFlags parses cmd/perch and collects the flags each role function defines on its
// FlagSet, following the FlagSet into the package's helpers (logFlags in run.go).
func cliFlags(t *testing.T) roleFlags {
	t.Helper()
	fset := token.NewFileSet()
	funcs := map[string]*ast.FuncDecl{}
	files, err := filepath.Glob(filepath.Join(cmdPerchDir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", cmdPerchDir, err)
	}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
				funcs[fd.Name.Name] = fd
			}
		}
	}
	out := roleFlags{}
	for role, fn := range roleFuncs {
		fd := funcs[fn]
		if fd == nil {
			t.Fatalf("cmd/perch has no func %s (role %s)", fn, role)
		}
		fsVar := newFlagSetVar(fd)
		if fsVar == "" {
			t.Fatalf("%s: no `x := flag.NewFlagSet(...)`", fn)
		}
		flags := map[string]flagDef{}
		collectFlags(funcs, fd, fsVar, flags, map[string]bool{})
		out[role] = flags
	}
	// Guard the parser itself: these flags are contract (DESIGN §4).
	for role, names := range map[string][]string{
		"core":    {"nats", "db", "log-level", "log-format"},
		"edge":    {"nats", "region", "listen", "gossip", "join", "public-url"},
		"migrate": {"db"},
	} {
		for _, n := range names {
			if _, ok := out[role][n]; !ok {
				t.Fatalf("found no --%s for perch %s in cmd/perch: the flag parser of this test is broken (%v)", n, role, out[role])
			}
		}
	}
	return out
}

// newFlagSetVar is the variable fd assigns flag.NewFlagSet(...) to.
func newFlagSetVar(fd *ast.FuncDecl) string {
	var name string
	ast.Inspect(fd, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Lhs) != 1 || len(as.Rhs) != 1 {
			return true
		}
		call, ok := as.Rhs[0].(*ast.CallExpr)
		if !ok {
			return true
		}
		if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewFlagSet" {
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "flag" {
				if id, ok := as.Lhs[0].(*ast.Ident); ok {
					name = id.Name
				}
			}
		}
		return true
	})
	return name
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok {
		return "", false
	}
	switch lit.Kind {
	case token.STRING:
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil
	case token.INT, token.FLOAT:
		return lit.Value, true
	}
	return "", false
}

func identName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// collectFlags adds to flags every flag fd defines on its FlagSet variable fsVar: calls
// fsVar.String("name", def, usage), fsVar.Int(...), fsVar.Bool(...), fsVar.Duration(...),
// fsVar.Var(&v, "name", usage), fsVar.StringVar(&p, "name", def, usage) and so on, and those
// of the package functions fd passes fsVar to.
func collectFlags(funcs map[string]*ast.FuncDecl, fd *ast.FuncDecl, fsVar string, flags map[string]flagDef, seen map[string]bool) {
	key := fd.Name.Name + "/" + fsVar
	if seen[key] {
		return
	}
	seen[key] = true
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		switch fun := call.Fun.(type) {
		case *ast.SelectorExpr:
			if identName(fun.X) != fsVar {
				return true
			}
			method := fun.Sel.Name
			nameArg, defArg := 0, 1
			switch {
			case method == "Var" || method == "TextVar":
				nameArg, defArg = 1, -1
			case strings.HasSuffix(method, "Var"):
				nameArg, defArg = 1, 2
			case method == "Func" || method == "BoolFunc":
				defArg = -1
			case slices.Contains([]string{"String", "Int", "Int64", "Uint", "Uint64", "Float64", "Bool", "Duration"}, method):
			default:
				return true // Parse, VisitAll, SetOutput, ...
			}
			if len(call.Args) <= nameArg {
				return true
			}
			name, ok := stringLit(call.Args[nameArg])
			if !ok {
				return true
			}
			d := flagDef{name: name, bool: strings.HasPrefix(method, "Bool")}
			if defArg >= 0 && defArg < len(call.Args)-1 {
				d.def, _ = stringLit(call.Args[defArg])
			}
			if usage, ok := stringLit(call.Args[len(call.Args)-1]); ok {
				d.required = strings.Contains(usage, "(required)")
			}
			flags[name] = d
		case *ast.Ident:
			callee := funcs[fun.Name]
			if callee == nil {
				return true
			}
			params := paramNames(callee)
			for i, a := range call.Args {
				if identName(a) == fsVar && i < len(params) {
					collectFlags(funcs, callee, params[i], flags, seen)
				}
			}
		}
		return true
	})
}

func paramNames(fd *ast.FuncDecl) []string {
	var names []string
	for _, f := range fd.Type.Params.List {
		if len(f.Names) == 0 {
			names = append(names, "_")
		}
		for _, n := range f.Names {
			names = append(names, n.Name)
		}
	}
	return names
}

// envName is the environment variable that sets a flag (cmd/perch parseFlags).
func envName(flag string) string {
	return "PERCH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func TestFlagParserFindsFlags(t *testing.T) {
	flags := cliFlags(t)
	for role, want := range map[string]string{"core": "nats", "edge": "region", "migrate": "db"} {
		if !flags[role][want].required {
			t.Errorf("perch %s --%s: not marked (required) in its usage", role, want)
		}
	}
	if d := flags["edge"]["listen"].def; d != ":8080" {
		t.Errorf("perch edge --listen default %q, want :8080 (the port the manifests expose)", d)
	}
}

// ---------------------------------------------------------------------------------------------
// perch processes in the manifests

// perchProcess is one perch container or Compose service: its role, flags and environment.
type perchProcess struct {
	where string
	role  string
	args  []string          // after the role
	env   map[string]string // PERCH_* and others; values from Secrets are "(secret)"
	// ports the container exposes, "8080/TCP" (Kubernetes only).
	ports map[string]bool
}

func isPerchImage(image string) bool {
	repo := image
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo == "perch" || strings.HasSuffix(repo, "/perch")
}

func composeServices(t *testing.T) map[string]map[string]any {
	t.Helper()
	docs := mustReadYAML(t, composeFile)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", composeFile, len(docs))
	}
	out := map[string]map[string]any{}
	for name, svc := range getMap(docs[0].value, "services") {
		m, ok := svc.(map[string]any)
		if !ok {
			t.Fatalf("%s: service %s is not a mapping", composeFile, name)
		}
		out[name] = m
	}
	if len(out) == 0 {
		t.Fatalf("%s: no services", composeFile)
	}
	return out
}

func composeProcesses(t *testing.T) []perchProcess {
	t.Helper()
	var out []perchProcess
	for name, svc := range composeServices(t) {
		if !isPerchImage(getString(svc, "image")) {
			continue
		}
		if get(svc, "entrypoint") != nil {
			t.Errorf("%s service %s: the entrypoint must stay perch", composeFile, name)
		}
		args := stringList(get(svc, "command"))
		p := perchProcess{where: composeFile + " service " + name, env: map[string]string{}}
		if len(args) > 0 {
			p.role, p.args = args[0], args[1:]
		}
		switch env := get(svc, "environment").(type) {
		case map[string]any:
			for k, v := range env {
				p.env[k] = scalar(v)
			}
		case []any:
			for _, kv := range env {
				k, v, _ := strings.Cut(scalar(kv), "=")
				p.env[k] = v
			}
		}
		if get(svc, "env_file") != nil {
			t.Errorf("%s: env_file hides which PERCH_* variables are set; use environment", p.where)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].where < out[j].where })
	return out
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func kubeProcesses(t *testing.T) []perchProcess {
	t.Helper()
	objs := kubeObjects(t)
	configMaps := map[string]map[string]any{}
	for _, o := range objs {
		if o.kind() == "ConfigMap" {
			configMaps[o.name()] = getMap(o.obj, "data")
		}
	}
	var out []perchProcess
	for _, p := range podTemplates(objs) {
		for _, c := range p.containers() {
			if !isPerchImage(getString(c, "image")) {
				continue
			}
			proc := perchProcess{
				where: fmt.Sprintf("%s container %s", p.owner, getString(c, "name")),
				env:   map[string]string{},
				ports: map[string]bool{},
			}
			args := stringList(get(c, "command"))
			if len(args) > 0 && !strings.HasSuffix(args[0], "perch") {
				t.Errorf("%s: command %v does not run perch", proc.where, args)
			}
			if len(args) > 0 {
				args = args[1:]
			}
			args = append(args, stringList(get(c, "args"))...)
			if len(args) > 0 {
				proc.role, proc.args = args[0], args[1:]
			}
			defined := map[string]bool{} // what $(VAR) may refer to: envFrom, then env in order
			for _, ef := range getList(c, "envFrom") {
				if get(ef, "secretRef") != nil {
					t.Errorf("%s: envFrom secretRef hides which PERCH_* variables are set; use env with secretKeyRef", proc.where)
				}
				cm := getString(ef, "configMapRef", "name")
				if cm == "" {
					continue
				}
				data, ok := configMaps[cm]
				if !ok {
					t.Errorf("%s: envFrom ConfigMap %s is not in the manifests", proc.where, cm)
				}
				for k, v := range data {
					proc.env[getString(ef, "prefix")+k] = scalar(v)
					defined[getString(ef, "prefix")+k] = true
				}
			}
			for _, e := range getList(c, "env") {
				name := getString(e, "name")
				val := scalar(get(e, "value"))
				for _, m := range envRef.FindAllStringSubmatch(val, -1) {
					if !defined[m[1]] {
						t.Errorf("%s: env %s refers to $(%s), which is not defined before it", proc.where, name, m[1])
					}
				}
				switch vf := getMap(e, "valueFrom"); {
				case vf == nil:
				case get(vf, "configMapKeyRef") != nil:
					cm, key := getString(vf, "configMapKeyRef", "name"), getString(vf, "configMapKeyRef", "key")
					data, ok := configMaps[cm]
					if !ok || data[key] == nil {
						t.Errorf("%s: env %s: ConfigMap %s has no key %s in the manifests", proc.where, name, cm, key)
					}
					val = scalar(data[key])
				case get(vf, "secretKeyRef") != nil:
					val = "(secret)"
				default:
					val = "(" + name + ")"
				}
				defined[name] = true
				proc.env[name] = val
			}
			for _, a := range args {
				for _, m := range envRef.FindAllStringSubmatch(a, -1) {
					if !defined[m[1]] {
						t.Errorf("%s: argument %q refers to $(%s), which is not in env", proc.where, a, m[1])
					}
				}
			}
			for _, cp := range getList(c, "ports") {
				proto := getString(cp, "protocol")
				if proto == "" {
					proto = "TCP"
				}
				proc.ports[scalar(get(cp, "containerPort"))+"/"+proto] = true
			}
			out = append(out, proc)
		}
	}
	return out
}

// parseArgs reads p's command line as perch's flag package would: each --name=value,
// --name value or (for a boolean) --name. It returns the values set, by flag name, and the
// mistakes perch would reject.
func (p perchProcess) parseArgs(rf map[string]flagDef) (map[string]string, []string) {
	vals := map[string]string{}
	var errs []string
	for i := 0; i < len(p.args); i++ {
		a := p.args[i]
		if a == "--" {
			if i+1 < len(p.args) {
				errs = append(errs, fmt.Sprintf("perch %s takes no arguments, got %v", p.role, p.args[i+1:]))
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			errs = append(errs, fmt.Sprintf("perch %s takes no arguments, got %q", p.role, a))
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		f, ok := rf[name]
		if !ok {
			errs = append(errs, fmt.Sprintf("perch %s has no flag --%s (it has %s)", p.role, name, flagNames(rf)))
			continue
		}
		switch {
		case hasVal:
		case f.bool:
			val = "true"
		case i+1 < len(p.args):
			i++
			val = p.args[i]
		default:
			errs = append(errs, fmt.Sprintf("--%s needs a value", name))
			continue
		}
		vals[name] = val
	}
	return vals, errs
}

// effective is what perch ends up with for a flag: the command line wins over PERCH_* (see
// parseFlags in cmd/perch), which wins over the default. set is false when the flag is given
// nowhere.
func (p perchProcess) effective(rf map[string]flagDef, name string) (val string, set bool) {
	vals, _ := p.parseArgs(rf)
	if v, ok := vals[name]; ok {
		return v, true
	}
	if v, ok := p.env[envName(name)]; ok {
		return v, true
	}
	return rf[name].def, false
}

// checkFlags checks p's arguments and PERCH_* variables against the flags of its role.
func checkFlags(t *testing.T, flags roleFlags, p perchProcess) {
	t.Helper()
	rf, ok := flags[p.role]
	if !ok {
		t.Errorf("%s: %q is not a perch command with flags (want one of core, edge, migrate)", p.where, p.role)
		return
	}
	_, errs := p.parseArgs(rf)
	for _, e := range errs {
		t.Errorf("%s: %s", p.where, e)
	}
	byEnv := map[string]bool{}
	for _, f := range rf {
		byEnv[envName(f.name)] = true
	}
	for k := range p.env {
		if strings.HasPrefix(k, "PERCH_") && !byEnv[k] {
			t.Errorf("%s: %s sets no flag of perch %s (it has %s)", p.where, k, p.role, flagNames(rf))
		}
	}
	for _, f := range rf {
		if _, set := p.effective(rf, f.name); f.required && !set {
			t.Errorf("%s: perch %s needs --%s (or %s)", p.where, p.role, f.name, envName(f.name))
		}
	}
}

func flagNames(rf map[string]flagDef) string {
	var names []string
	for n := range rf {
		names = append(names, "--"+n)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// checkFleet checks what the processes of one deployment must agree on: three stream
// replicas for every core and edge (DESIGN §2) and one partition count.
func checkFleet(t *testing.T, flags roleFlags, procs []perchProcess, where string) {
	t.Helper()
	roles := map[string]int{}
	partitions := map[string][]string{}
	for _, p := range procs {
		rf := flags[p.role]
		roles[p.role]++
		if _, ok := rf["stream-replicas"]; ok {
			if v, _ := p.effective(rf, "stream-replicas"); v != "3" {
				t.Errorf("%s: --stream-replicas is %q, want 3: the write stream must keep three copies in production", p.where, v)
			}
		}
		if _, ok := rf["partitions"]; ok {
			v, _ := p.effective(rf, "partitions")
			partitions[v] = append(partitions[v], p.where)
		}
	}
	if len(partitions) != 1 {
		t.Errorf("%s: the processes disagree on --partitions (unset means the default): %v", where, partitions)
	}
	for _, role := range []string{"migrate", "core", "edge"} {
		if roles[role] == 0 {
			t.Errorf("%s: no perch %s", where, role)
		}
	}
}

func TestComposePerchFlagsAreReal(t *testing.T) {
	flags := cliFlags(t)
	procs := composeProcesses(t)
	for _, p := range procs {
		checkFlags(t, flags, p)
	}
	checkFleet(t, flags, procs, composeFile)
	regions := map[string]int{}
	for _, p := range procs {
		if p.role == "edge" {
			v, _ := p.effective(flags["edge"], "region")
			regions[v]++
		}
	}
	if len(regions) < 2 {
		t.Errorf("%s: edges in regions %v, want two regions", composeFile, regions)
	}
}

func TestKubernetesPerchFlagsAreReal(t *testing.T) {
	flags := cliFlags(t)
	procs := kubeProcesses(t)
	for _, p := range procs {
		checkFlags(t, flags, p)
	}
	checkFleet(t, flags, procs, kubeDir)
	for _, p := range procs {
		if p.role != "edge" {
			continue
		}
		// The ports perch listens on must be the container ports the Services target.
		for flag, protos := range map[string][]string{"listen": {"TCP"}, "gossip": {"TCP", "UDP"}} {
			v, _ := p.effective(flags["edge"], flag)
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				t.Errorf("%s: --%s %q: %v", p.where, flag, v, err)
				continue
			}
			for _, proto := range protos {
				if !p.ports[port+"/"+proto] {
					t.Errorf("%s: --%s %s, but the container does not expose %s/%s", p.where, flag, v, port, proto)
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

func TestDockerfileSetsTheVersion(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=", "./cmd/perch", "nonroot"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("Dockerfile: no %q", want)
		}
	}
	// -X main.version only works on a package-level string variable of package main.
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(cmdPerchDir, "run.go"), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.VAR {
			continue
		}
		for _, s := range gd.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				found = found || n.Name == "version"
			}
		}
	}
	if f.Name.Name != "main" || !found {
		t.Error("cmd/perch/run.go: no package-level var version in package main for -X main.version")
	}
}
