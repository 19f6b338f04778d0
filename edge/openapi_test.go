package edge

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/perchhq/perch/internal/problem"
)

// oaMethods are the keys of an OpenAPI path item that hold operations.
var oaMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// oaDocument parses the embedded description, the very bytes GET /v1/openapi.json serves.
func oaDocument(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	return doc
}

func oaObject(t *testing.T, v any, where string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want a JSON object, have %T", where, v)
	}
	return m
}

// oaOperations returns the operations of the document by path and lower-case method.
func oaOperations(t *testing.T, doc map[string]any) map[string]map[string]map[string]any {
	t.Helper()
	paths := oaObject(t, doc["paths"], "paths")
	out := make(map[string]map[string]map[string]any, len(paths))
	for path, item := range paths {
		ops := make(map[string]map[string]any)
		for key, op := range oaObject(t, item, "paths."+path) {
			if slices.Contains(oaMethods, key) {
				ops[key] = oaObject(t, op, "paths."+path+"."+key)
			}
		}
		out[path] = ops
	}
	return out
}

func TestOpenAPIRoutes(t *testing.T) {
	doc := oaDocument(t)
	if v := doc["openapi"]; v != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", v)
	}
	info := oaObject(t, doc["info"], "info")
	if info["title"] != "Perch edge API" || info["version"] != "1" {
		t.Errorf("info title %v, version %v; want Perch edge API, 1", info["title"], info["version"])
	}
	ops := oaOperations(t, doc)

	table := make(map[string][]string)
	for _, r := range (&Edge{}).routeTable() {
		for _, m := range r.methods {
			table[r.pattern] = append(table[r.pattern], strings.ToLower(m.method))
		}
	}
	// Every route and method of the table is described.
	for pattern, methods := range table {
		described, ok := ops[pattern]
		if !ok {
			t.Errorf("route %s is missing from openapi.json", pattern)
			continue
		}
		for _, m := range methods {
			if _, ok := described[m]; !ok {
				t.Errorf("openapi.json lacks %s %s", strings.ToUpper(m), pattern)
			}
		}
	}
	// Nothing is described that the table does not serve (HEAD is implied by GET, not listed).
	for path, described := range ops {
		methods, ok := table[path]
		if !ok {
			t.Errorf("openapi.json describes %s, which routeTable does not serve", path)
			continue
		}
		for m := range described {
			if !slices.Contains(methods, m) {
				t.Errorf("openapi.json describes %s %s, which routeTable does not serve", strings.ToUpper(m), path)
			}
		}
	}
}

var oaPathParam = regexp.MustCompile(`\{([^}]+)\}`)

func TestOpenAPIOperations(t *testing.T) {
	doc := oaDocument(t)
	ops := oaOperations(t, doc)
	paths := oaObject(t, doc["paths"], "paths")
	ids := make(map[string]string)
	for path, byMethod := range ops {
		item := oaObject(t, paths[path], "paths."+path)
		for method, op := range byMethod {
			where := strings.ToUpper(method) + " " + path
			id, _ := op["operationId"].(string)
			switch {
			case id == "":
				t.Errorf("%s has no operationId", where)
			case ids[id] != "":
				t.Errorf("operationId %q of %s is also that of %s", id, where, ids[id])
			default:
				ids[id] = where
			}
			if s, _ := op["summary"].(string); strings.TrimSpace(s) == "" {
				t.Errorf("%s has no summary", where)
			}
			if s, _ := op["description"].(string); strings.TrimSpace(s) == "" {
				t.Errorf("%s has no description", where)
			}

			responses := oaObject(t, op["responses"], where+" responses")
			success := false
			for status, resp := range responses {
				if len(status) == 3 && status[0] == '2' {
					success = true
				}
				n, err := strconv.Atoi(status)
				if err != nil || n < 100 || n > 599 {
					t.Errorf("%s: response key %q is not an HTTP status", where, status)
					continue
				}
				r := oaResolve(t, doc, resp)
				if _, ok := r["description"].(string); !ok {
					t.Errorf("%s %s: response has no description", where, status)
				}
				if n >= 400 {
					content, _ := r["content"].(map[string]any)
					if _, ok := content[problem.ContentType]; !ok || len(content) != 1 {
						t.Errorf("%s %s: an error response must be %s only", where, status, problem.ContentType)
					}
				}
			}
			if !success {
				t.Errorf("%s has no 2xx response", where)
			}

			// Every {name} of the path is a required path parameter of the operation.
			declared := make(map[string]bool)
			for _, list := range []any{item["parameters"], op["parameters"]} {
				ps, _ := list.([]any)
				for _, p := range ps {
					p := oaResolve(t, doc, p)
					if p["in"] == "path" {
						name, _ := p["name"].(string)
						declared[name] = true
						if p["required"] != true {
							t.Errorf("%s: path parameter %s must be required", where, name)
						}
					}
				}
			}
			for _, m := range oaPathParam.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s: path parameter {%s} is not declared", where, m[1])
				}
				delete(declared, m[1])
			}
			for name := range declared {
				t.Errorf("%s declares path parameter %s, which the path lacks", where, name)
			}
		}
	}

	// Every $ref resolves within the document.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"]; ok {
				s, _ := r.(string)
				if _, err := oaPointer(doc, s); err != "" {
					t.Errorf("%s: $ref %q: %s", at, s, err)
				}
			}
			for k, e := range v {
				walk(e, at+"/"+k)
			}
		case []any:
			for i, e := range v {
				walk(e, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc, "#")

	// The schemas the API's bodies have are all there.
	schemas := oaObject(t, oaObject(t, doc["components"], "components")["schemas"], "components.schemas")
	for _, name := range []string{"Document", "DocumentData", "ListPage", "SyncPage", "Change", "WriteReceipt",
		"WriteStatus", "Edges", "Problem", "Health"} {
		if _, ok := schemas[name]; !ok {
			t.Errorf("components.schemas lacks %s", name)
		}
	}
}

// oaResolve follows v's $ref, if it has one, and returns the object it names.
func oaResolve(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("want a JSON object, have %T", v)
	}
	for range 8 {
		r, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		target, err := oaPointer(doc, r)
		if err != "" {
			t.Fatalf("$ref %q: %s", r, err)
		}
		if m, ok = target.(map[string]any); !ok {
			t.Fatalf("$ref %q names a %T, not an object", r, target)
		}
	}
	t.Fatalf("$ref chain too long")
	return nil
}

// oaPointer evaluates a local reference "#/a/b" (RFC 6901) in doc, or says why it cannot.
func oaPointer(doc map[string]any, ref string) (any, string) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, "not a reference within the document"
	}
	var cur any = doc
	for tok := range strings.SplitSeq(rest, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[tok]
			if !ok {
				return nil, "no " + strconv.Quote(tok)
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, "no index " + strconv.Quote(tok)
			}
			cur = c[i]
		default:
			return nil, "path goes through a " + strconv.Quote(tok) + " that is not a container"
		}
	}
	return cur, ""
}

// oaCodes is every problem code; TestOpenAPIProblemCodes also checks it against the source of
// package problem, so that a new code cannot be left out here.
var oaCodes = []problem.Code{
	problem.Unauthorized,
	problem.InvalidToken,
	problem.InvalidAPIKey,
	problem.InvalidCredentials,
	problem.WeakPassword,
	problem.Forbidden,
	problem.TooManyAttempts,
	problem.TOTPRequired,
	problem.InvalidTOTP,
	problem.NotStorable,
	problem.BadJSON,
	problem.NotObject,
	problem.BadRequest,
	problem.BadCursor,
	problem.BadName,
	problem.TooLarge,
	problem.NotFound,
	problem.RouteNotFound,
	problem.MethodNotAllowed,
	problem.PreconditionFailed,
	problem.UnsupportedMedia,
	problem.IdempotencyMismatch,
	problem.IdempotencyInFlight,
	problem.Unavailable,
	problem.Internal,
	problem.AlreadyExists,
	problem.RequestTimeout,
	problem.HeadersTooLarge,
	problem.IPNotAllowed,
	problem.TooManyConnections,
	problem.Overloaded,
	problem.RateLimited,
}

func TestOpenAPIProblemCodes(t *testing.T) {
	doc := oaDocument(t)
	schemas := oaObject(t, oaObject(t, doc["components"], "components")["schemas"], "components.schemas")
	ps := oaObject(t, schemas["Problem"], "components.schemas.Problem")
	props := oaObject(t, ps["properties"], "Problem.properties")
	for _, f := range []string{"type", "title", "status", "detail", "code"} {
		if _, ok := props[f]; !ok {
			t.Errorf("Problem schema lacks property %s", f)
		}
	}
	enum, _ := oaObject(t, props["code"], "Problem.properties.code")["enum"].([]any)
	var documented []string
	for _, c := range enum {
		s, _ := c.(string)
		documented = append(documented, s)
	}
	var want []string
	for _, c := range oaCodes {
		want = append(want, string(c))
	}
	slices.Sort(documented)
	slices.Sort(want)
	if !slices.Equal(documented, want) {
		t.Errorf("Problem code enum %v, want the codes of package problem %v", documented, want)
	}

	// The list above is every Code constant that package problem declares.
	src := filepath.Join("..", "internal", "problem", "problem.go")
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", src, err)
	}
	var declared []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for _, v := range vs.Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					declared = append(declared, s)
				}
			}
		}
	}
	slices.Sort(declared)
	if !slices.Equal(declared, want) {
		t.Errorf("package problem declares the codes %v; the test lists %v", declared, want)
	}
}

// TestOpenAPIFormat keeps openapi.json 2-space indented, so that diffs of it stay readable.
func TestOpenAPIFormat(t *testing.T) {
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, openAPI) {
		t.Fatal("the embedded description differs from openapi.json")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	buf.WriteByte('\n')
	if !bytes.Equal(buf.Bytes(), raw) {
		t.Error("openapi.json is not 2-space indented JSON ending in a newline (reformat it with `jq --indent 2 .`)")
	}
}
