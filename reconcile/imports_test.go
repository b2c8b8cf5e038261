package reconcile_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// importRule is one direction imports must not take. A package matching
// from (and not unless) must not import a path matching imports (and not
// allowed). Patterns are import paths; a trailing "/..." matches the path
// itself and everything under it, as with the go command.
type importRule struct {
	rule    string
	from    []string
	unless  []string
	imports []string
	allowed []string
	// exceptions are the packages that break the rule today, each with
	// why; they are reported to the lead to be fixed, and the test fails
	// once one is no longer needed, so the list only shrinks.
	exceptions []importException
}

type importException struct {
	pkg, why string
}

// importRules is the flow of STYLE.md (spec ← state ← reconcile ←
// cmd/reconciler) and issue 9's import rule: Docker's client only in the
// engine adapter, netlink only in the kernel adapter, the two roles apart.
// Docker's plain API types (github.com/docker/docker/api/types/...) are
// free for the planners to use, so no rule names them.
var importRules = []importRule{
	{
		rule: "only the engine adapter imports Docker's client",
		from: []string{"swarmvlan/..."},
		// The lab and e2e are the test bed: they drive the lab's and the
		// tests' engines (swarm init, the test image), no product code.
		unless:  []string{"swarmvlan/reconcile/engine/...", "swarmvlan/lab/...", "swarmvlan/e2e/..."},
		imports: []string{"github.com/docker/docker/client/..."},
	},
	{
		rule:    "only the kernel adapter imports netlink and netns",
		from:    []string{"swarmvlan/..."},
		unless:  []string{"swarmvlan/reconcile/kernel"},
		imports: []string{"github.com/vishvananda/netlink/...", "github.com/vishvananda/netns/..."},
	},
	{
		rule:    "the host role does not import the leader",
		from:    []string{"swarmvlan/reconcile/host/..."},
		imports: []string{"swarmvlan/reconcile/cluster/..."},
	},
	{
		rule:    "the leader does not import the host role",
		from:    []string{"swarmvlan/reconcile/cluster/..."},
		imports: []string{"swarmvlan/reconcile/host/..."},
	},
	{
		rule:    "spec imports nothing of the module",
		from:    []string{"swarmvlan/spec/..."},
		imports: []string{"swarmvlan/..."},
		allowed: []string{"swarmvlan/spec/..."},
	},
	{
		rule:    "state imports only spec",
		from:    []string{"swarmvlan/state/..."},
		imports: []string{"swarmvlan/..."},
		allowed: []string{"swarmvlan/spec/...", "swarmvlan/state/..."},
	},
	{
		rule:    "the reconcile contract imports no adapter and no role",
		from:    []string{"swarmvlan/reconcile"},
		imports: []string{"swarmvlan/reconcile/engine/...", "swarmvlan/reconcile/kernel/...", "swarmvlan/reconcile/cluster/...", "swarmvlan/reconcile/host/..."},
	},
	{
		rule:    "reconcile, spec and state import no binary, lab or e2e",
		from:    []string{"swarmvlan/reconcile/...", "swarmvlan/spec/...", "swarmvlan/state/..."},
		imports: []string{"swarmvlan/cmd/...", "swarmvlan/lab/...", "swarmvlan/e2e/..."},
		// A test-helper package: it builds the lab's test image (the next
		// rule keeps it off the binary and e2e).
		unless: []string{"swarmvlan/reconcile/engine/enginetest"},
	},
	{
		rule:    "the engine's test helpers import lab and nothing else outside reconcile, spec and state",
		from:    []string{"swarmvlan/reconcile/engine/enginetest"},
		imports: []string{"swarmvlan/cmd/...", "swarmvlan/e2e/..."},
	},
	{
		// Consul's plain types (api.KVPairs, api.AgentService, …) are
		// free; what reaches Consul stays in state (see consulClientUses).
		rule:    "only state, the test bed and the role packages import Consul's api",
		from:    []string{"swarmvlan/..."},
		unless:  []string{"swarmvlan/state/...", "swarmvlan/tools/...", "swarmvlan/lab/...", "swarmvlan/e2e/...", "swarmvlan/reconcile/...", "swarmvlan/cmd/reconciler"},
		imports: []string{"github.com/hashicorp/consul/api/..."},
	},
}

// importFile is one non-test Go file and what it imports.
type importFile struct {
	pkg, file string
	imports   []string
}

// importMatch reports whether path matches pattern (see importRule).
func importMatch(pattern, path string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == prefix || strings.HasPrefix(path, prefix+"/")
	}
	return path == pattern
}

func importMatchAny(patterns []string, path string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return importMatch(p, path) })
}

// importViolations lists every import of files that breaks a rule and is
// not one of the rule's exceptions, and every exception nothing needs.
func importViolations(rules []importRule, files []importFile) []string {
	var out []string
	for _, r := range rules {
		used := map[string]bool{}
		for _, f := range files {
			if !importMatchAny(r.from, f.pkg) || importMatchAny(r.unless, f.pkg) {
				continue
			}
			for _, imp := range f.imports {
				if !importMatchAny(r.imports, imp) || importMatchAny(r.allowed, imp) {
					continue
				}
				if slices.ContainsFunc(r.exceptions, func(e importException) bool { return e.pkg == f.pkg }) {
					used[f.pkg] = true
					continue
				}
				out = append(out, fmt.Sprintf("%s (package %s) imports %s: %s", f.file, f.pkg, imp, r.rule))
			}
		}
		for _, e := range r.exceptions {
			if !used[e.pkg] {
				out = append(out, fmt.Sprintf("%s no longer breaks %q: remove its exception", e.pkg, r.rule))
			}
		}
	}
	return out
}

// moduleImports reads the imports of every non-test Go file of the module,
// including files other platforms build (IgnoredGoFiles), so a linux-only
// or darwin-only file cannot hide an import.
func moduleImports(t *testing.T) []importFile {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(goTool, "list", "-json", "swarmvlan/...")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -json swarmvlan/...: %v: %s", err, stderr.Bytes())
	}
	var files []importFile
	fset := token.NewFileSet()
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Dir, ImportPath                   string
			GoFiles, CgoFiles, IgnoredGoFiles []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list -json: %v", err)
		}
		for _, name := range slices.Concat(p.GoFiles, p.CgoFiles, p.IgnoredGoFiles) {
			if strings.HasSuffix(name, "_test.go") || !strings.HasSuffix(name, ".go") {
				continue
			}
			path := filepath.Join(p.Dir, name)
			af, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parse %s: %v", path, err)
			}
			f := importFile{pkg: p.ImportPath, file: strings.TrimPrefix(p.ImportPath, "swarmvlan") + "/" + name}
			f.file = strings.TrimPrefix(f.file, "/")
			for _, s := range af.Imports {
				imp, err := strconv.Unquote(s.Path.Value)
				if err != nil {
					t.Fatalf("%s: import %s: %v", path, s.Path.Value, err)
				}
				f.imports = append(f.imports, imp)
				if imp == "github.com/hashicorp/consul/api" {
					moduleConsul = append(moduleConsul, consulUse{f.pkg, f.file, consulSelectors(af, s)})
				}
			}
			files = append(files, f)
		}
	}
	return files
}

// TestImportsFollowTheFlow fails, naming the file and the import, when a
// package of the module imports against the flow of importRules.
func TestImportsFollowTheFlow(t *testing.T) {
	files := moduleImports(t)
	pkgs := map[string]bool{}
	for _, f := range files {
		pkgs[f.pkg] = true
	}
	// A go list that found nothing would pass every rule.
	for _, p := range []string{"swarmvlan/spec", "swarmvlan/state", "swarmvlan/reconcile", "swarmvlan/reconcile/engine", "swarmvlan/reconcile/kernel", "swarmvlan/reconcile/cluster", "swarmvlan/reconcile/host", "swarmvlan/cmd/reconciler"} {
		if !pkgs[p] {
			t.Fatalf("go list found no non-test files of %s", p)
		}
	}
	for _, v := range importViolations(importRules, files) {
		t.Error(v)
	}
	for _, r := range importRules {
		for _, e := range r.exceptions {
			t.Logf("exception to %q: %s: %s", r.rule, e.pkg, e.why)
		}
	}
}

// TestImportsFollowTheFlowCatchesEachBreak feeds the checker a fake module where one
// file breaks each rule, and checks that exactly that file is reported,
// under that rule.
func TestImportsFollowTheFlowCatchesEachBreak(t *testing.T) {
	// What the module may import: each rule's positive case.
	clean := []importFile{
		{"swarmvlan/spec", "spec/types.go", []string{"fmt", "go.yaml.in/yaml/v3", "github.com/docker/go-units"}},
		{"swarmvlan/state", "state/store.go", []string{"github.com/hashicorp/consul/api", "swarmvlan/spec"}},
		{"swarmvlan/reconcile", "reconcile/queue.go", []string{"swarmvlan/spec", "swarmvlan/state", "swarmvlan/schemas"}},
		{"swarmvlan/reconcile/engine", "reconcile/engine/engine.go", []string{"github.com/docker/docker/client", "github.com/docker/docker/api/types/swarm"}},
		{"swarmvlan/reconcile/engine/enginetest", "reconcile/engine/enginetest/real.go", []string{"github.com/docker/docker/client", "swarmvlan/lab", "swarmvlan/reconcile/engine"}},
		{"swarmvlan/reconcile/kernel", "reconcile/kernel/netlink_linux.go", []string{"github.com/vishvananda/netlink", "github.com/vishvananda/netns"}},
		{"swarmvlan/reconcile/cluster", "reconcile/cluster/service.go", []string{"github.com/docker/docker/api/types/swarm", "swarmvlan/reconcile", "swarmvlan/reconcile/engine"}},
		{"swarmvlan/reconcile/host", "reconcile/host/links.go", []string{"github.com/docker/docker/api/types/network", "swarmvlan/reconcile/kernel"}},
		{"swarmvlan/cmd/reconciler", "cmd/reconciler/main.go", []string{"swarmvlan/reconcile/cluster", "swarmvlan/reconcile/host", "swarmvlan/lab"}},
		{"swarmvlan/lab", "lab/consul.go", []string{"github.com/hashicorp/consul/api"}},
		{"swarmvlan/tools/consul", "tools/consul/main.go", []string{"github.com/hashicorp/consul/api"}},
	}
	noExceptions := make([]importRule, len(importRules))
	for i, r := range importRules {
		r.exceptions = nil
		noExceptions[i] = r
	}
	if v := importViolations(noExceptions, clean); len(v) > 0 {
		t.Fatalf("a module that follows the flow is reported:\n%s", strings.Join(v, "\n"))
	}

	for _, c := range []struct {
		bad  importFile
		rule string
	}{
		{importFile{"swarmvlan/reconcile/cluster", "reconcile/cluster/x.go", []string{"github.com/docker/docker/client"}}, "only the engine adapter imports Docker's client"},
		{importFile{"swarmvlan/spec", "spec/x.go", []string{"github.com/docker/docker/client"}}, "only the engine adapter imports Docker's client"},
		{importFile{"swarmvlan/reconcile/host", "reconcile/host/x.go", []string{"github.com/vishvananda/netlink"}}, "only the kernel adapter imports netlink and netns"},
		{importFile{"swarmvlan/reconcile/engine", "reconcile/engine/x.go", []string{"github.com/vishvananda/netns"}}, "only the kernel adapter imports netlink and netns"},
		{importFile{"swarmvlan/reconcile/host", "reconcile/host/x.go", []string{"swarmvlan/reconcile/cluster"}}, "the host role does not import the leader"},
		{importFile{"swarmvlan/reconcile/cluster", "reconcile/cluster/x.go", []string{"swarmvlan/reconcile/host"}}, "the leader does not import the host role"},
		{importFile{"swarmvlan/spec", "spec/x.go", []string{"swarmvlan/schemas"}}, "spec imports nothing of the module"},
		{importFile{"swarmvlan/state", "state/x.go", []string{"swarmvlan/reconcile"}}, "state imports only spec"},
		{importFile{"swarmvlan/reconcile", "reconcile/x.go", []string{"swarmvlan/reconcile/engine"}}, "the reconcile contract imports no adapter and no role"},
		{importFile{"swarmvlan/reconcile", "reconcile/x.go", []string{"swarmvlan/reconcile/host"}}, "the reconcile contract imports no adapter and no role"},
		{importFile{"swarmvlan/reconcile/kernel", "reconcile/kernel/x.go", []string{"swarmvlan/lab"}}, "reconcile, spec and state import no binary, lab or e2e"},
		{importFile{"swarmvlan/reconcile/host", "reconcile/host/x.go", []string{"swarmvlan/cmd/reconciler"}}, "reconcile, spec and state import no binary, lab or e2e"},
		{importFile{"swarmvlan/reconcile/engine/enginetest", "reconcile/engine/enginetest/x.go", []string{"swarmvlan/e2e"}}, "the engine's test helpers import lab and nothing else outside reconcile, spec and state"},
		{importFile{"swarmvlan/spec", "spec/x.go", []string{"github.com/hashicorp/consul/api"}}, "only state, the test bed and the role packages import Consul's api"},
	} {
		t.Run(c.bad.file+"→"+c.bad.imports[0], func(t *testing.T) {
			v := importViolations(noExceptions, append(slices.Clone(clean), c.bad))
			want := fmt.Sprintf("%s (package %s) imports %s: %s", c.bad.file, c.bad.pkg, c.bad.imports[0], c.rule)
			if len(v) != 1 || v[0] != want {
				t.Errorf("reported %q, want exactly %q", v, want)
			}
		})
	}

	// Every rule has a case above that breaks it.
	broken := map[string]bool{}
	for _, r := range importRules {
		broken[r.rule] = false
	}
	for _, msg := range importViolations(noExceptions, []importFile{
		{"swarmvlan/reconcile/cluster", "a.go", []string{"github.com/docker/docker/client", "github.com/hashicorp/consul/api", "swarmvlan/reconcile/host"}},
		{"swarmvlan/reconcile/host", "b.go", []string{"github.com/vishvananda/netlink", "swarmvlan/reconcile/cluster"}},
		{"swarmvlan/spec", "c.go", []string{"swarmvlan/schemas", "github.com/hashicorp/consul/api"}},
		{"swarmvlan/state", "d.go", []string{"swarmvlan/reconcile"}},
		{"swarmvlan/reconcile", "e.go", []string{"swarmvlan/reconcile/engine", "swarmvlan/lab"}},
		{"swarmvlan/reconcile/engine/enginetest", "f.go", []string{"swarmvlan/e2e"}},
	}) {
		_, rule, _ := strings.Cut(msg, ": ")
		broken[rule] = true
	}
	for rule, ok := range broken {
		if !ok {
			t.Errorf("no fake import breaks %q", rule)
		}
	}

	t.Run("exceptions", func(t *testing.T) {
		rules := []importRule{{
			rule:       "only state imports Consul's api",
			from:       []string{"swarmvlan/..."},
			unless:     []string{"swarmvlan/state/..."},
			imports:    []string{"github.com/hashicorp/consul/api/..."},
			exceptions: []importException{{"swarmvlan/reconcile/host", "registrar"}, {"swarmvlan/reconcile/cluster", "fixed already"}},
		}}
		v := importViolations(rules, []importFile{
			{"swarmvlan/reconcile/host", "reconcile/host/registrar.go", []string{"github.com/hashicorp/consul/api"}},
			{"swarmvlan/reconcile", "reconcile/view.go", []string{"github.com/hashicorp/consul/api"}},
		})
		want := []string{
			"reconcile/view.go (package swarmvlan/reconcile) imports github.com/hashicorp/consul/api: only state imports Consul's api",
			`swarmvlan/reconcile/cluster no longer breaks "only state imports Consul's api": remove its exception`,
		}
		if !slices.Equal(v, want) {
			t.Errorf("reported\n%s\nwant\n%s", strings.Join(v, "\n"), strings.Join(want, "\n"))
		}
	})
}

// consulUse is what one file takes from Consul's api package (api.KVPairs
// → "KVPairs").
type consulUse struct {
	pkg, file string
	names     []string
}

// moduleConsul is filled by moduleImports.
var moduleConsul []consulUse

// consulClientNames are the parts of Consul's api package that reach Consul:
// only state may hold them, so no raw client escapes the state layer.
var consulClientNames = []string{"Client", "NewClient", "DefaultConfig", "Config", "KV", "Agent", "Catalog",
	"Health", "Session", "Txn", "Lock", "Semaphore", "Operator", "ACL", "QueryOptions", "WriteOptions"}

// consulSelectors lists what af takes from the package imported by imp.
func consulSelectors(af *ast.File, imp *ast.ImportSpec) []string {
	name := "api"
	if imp.Name != nil {
		name = imp.Name.Name
	}
	var out []string
	ast.Inspect(af, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == name {
				out = append(out, sel.Sel.Name)
			}
		}
		return true
	})
	return out
}

// consulClientUses lists the files outside state and the test bed that
// take a part of Consul's api package reaching Consul.
func consulClientUses(files []consulUse) []string {
	var out []string
	for _, f := range files {
		if importMatchAny([]string{"swarmvlan/state/...", "swarmvlan/tools/...", "swarmvlan/lab/...", "swarmvlan/e2e/..."}, f.pkg) {
			continue
		}
		for _, sel := range f.names {
			if slices.Contains(consulClientNames, sel) {
				out = append(out, fmt.Sprintf("%s (package %s) uses api.%s: only state talks to Consul", f.file, f.pkg, sel))
			}
		}
	}
	return out
}

// TestConsulClientStaysInState fails when code outside state (and the test
// bed) uses a part of Consul's api package that talks to Consul, rather
// than one of state's typed operations.
func TestConsulClientStaysInState(t *testing.T) {
	moduleConsul = nil
	moduleImports(t)
	if len(moduleConsul) == 0 {
		t.Fatal("no file of the module imports Consul's api: the scan is broken")
	}
	if bad := consulClientUses(moduleConsul); len(bad) > 0 {
		t.Error(strings.Join(bad, "\n"))
	}
	broken := []consulUse{
		{"swarmvlan/reconcile/host", "reconcile/host/x.go", []string{"KVPairs", "Agent"}},
		{"swarmvlan/state", "state/store.go", []string{"Client"}},
		{"swarmvlan/cmd/reconciler", "cmd/reconciler/x.go", []string{"AgentService"}},
	}
	got := consulClientUses(broken)
	want := []string{"reconcile/host/x.go (package swarmvlan/reconcile/host) uses api.Agent: only state talks to Consul"}
	if !slices.Equal(got, want) {
		t.Errorf("checker on a broken module:\n got %q\nwant %q", got, want)
	}
}
