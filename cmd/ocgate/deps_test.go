package main

// The import arrows of docs/architecture.md, checked on the real build graph (`go list`): layers point down, the
// protocol and the datapaths meet only at protocol/datapath, and the default binary carries no profiler. Only
// non-test dependencies count (Deps is the transitive closure of a package's build imports).

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// depRule forbids the packages matching pkg (minus those matching exempt) to depend, directly or not, on a package
// matching forbidden (minus those matching allow). Patterns are import paths; a trailing "/..." also matches the
// path itself and everything below it, as in the go command.
type depRule struct {
	pkg, exempt      string
	forbidden, allow string
}

var depRules = []depRule{
	// protocol speaks the wire protocol and knows no datapath.
	{pkg: "ocgate/protocol/...", forbidden: "ocgate/netstack/..."},
	{pkg: "ocgate/protocol/...", forbidden: "ocgate/egress/..."},
	// The datapaths see the protocol only through the seam.
	{pkg: "ocgate/netstack/...", forbidden: "ocgate/protocol/...", allow: "ocgate/protocol/datapath"},
	{pkg: "ocgate/egress/...", forbidden: "ocgate/protocol/...", allow: "ocgate/protocol/datapath"},
	{pkg: "ocgate/egress/...", forbidden: "ocgate/netstack/..."},
	// config and auth are leaves.
	{pkg: "ocgate/config/...", forbidden: "ocgate/...", allow: "ocgate/config/..."},
	{pkg: "ocgate/auth/...", forbidden: "ocgate/...", allow: "ocgate/auth/..."},
	// Nothing depends on the binary or on the tests.
	{pkg: "ocgate/...", exempt: "ocgate/cmd/...", forbidden: "ocgate/cmd/..."},
	{pkg: "ocgate/...", exempt: "ocgate/integration/...", forbidden: "ocgate/integration/..."},
	// The profiler is linked only with -tags pprof (pprof.go).
	{pkg: "ocgate/cmd/ocgate", forbidden: "net/http/pprof"},
}

// matchPattern reports whether path matches pattern (see depRule). An empty pattern matches nothing.
func matchPattern(pattern, path string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return pattern != "" && path == pattern
}

type listedPackage struct {
	ImportPath string
	Deps       []string
}

// depViolations returns one line per (package, forbidden dependency), and the rules whose pkg pattern matched no
// package (a rule that checks nothing has gone stale).
func depViolations(pkgs []listedPackage, rules []depRule) (violations []string, unused []depRule) {
	for _, r := range rules {
		matched := false
		for _, p := range pkgs {
			if !matchPattern(r.pkg, p.ImportPath) || matchPattern(r.exempt, p.ImportPath) {
				continue
			}
			matched = true
			for _, d := range p.Deps {
				if matchPattern(r.forbidden, d) && !matchPattern(r.allow, d) {
					violations = append(violations, p.ImportPath+" depends on "+d)
				}
			}
		}
		if !matched {
			unused = append(unused, r)
		}
	}
	return violations, unused
}

func TestImportArrows(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Deps", "ocgate/...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listedPackage
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if !slices.ContainsFunc(pkgs, func(p listedPackage) bool { return p.ImportPath == "ocgate/cmd/ocgate" }) {
		t.Fatalf("go list ocgate/... did not list ocgate/cmd/ocgate (%d packages)", len(pkgs))
	}
	violations, unused := depViolations(pkgs, depRules)
	for _, v := range violations {
		t.Error(v)
	}
	for _, r := range unused {
		t.Errorf("rule %+v matches no package", r)
	}
}

// The checker itself must be able to fail.
func TestDepViolations(t *testing.T) {
	pkgs := []listedPackage{
		{ImportPath: "ocgate/protocol", Deps: []string{"fmt", "ocgate/protocol/datapath", "ocgate/egress"}},
		{ImportPath: "ocgate/protocol/dtls", Deps: []string{"ocgate/netstack"}},
		{ImportPath: "ocgate/netstack", Deps: []string{"ocgate/egress", "ocgate/protocol/datapath", "ocgate/protocol/cstp"}},
		{ImportPath: "ocgate/egress/tun", Deps: []string{"ocgate/protocol/datapath"}},
		{ImportPath: "ocgate/integration/loadgen", Deps: []string{"ocgate/integration/loadgen/client"}},
		{ImportPath: "ocgate/auth", Deps: []string{"ocgate/config"}},
		{ImportPath: "ocgate/cmd/ocgate", Deps: []string{"net/http/pprof"}},
	}
	violations, _ := depViolations(pkgs, depRules)
	want := []string{
		"ocgate/protocol depends on ocgate/egress",
		"ocgate/protocol/dtls depends on ocgate/netstack",
		"ocgate/netstack depends on ocgate/protocol/cstp",
		"ocgate/auth depends on ocgate/config",
		"ocgate/cmd/ocgate depends on net/http/pprof",
	}
	slices.Sort(violations)
	slices.Sort(want)
	if !slices.Equal(violations, want) {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(violations, "\n"), strings.Join(want, "\n"))
	}
}
