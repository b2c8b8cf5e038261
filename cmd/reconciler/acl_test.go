package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"swarmvlan/lab"
	"swarmvlan/state"
)

// updateACL rewrites deploy/acl/*.hcl from the command's output instead of
// comparing: SWARMVLAN_UPDATE_ACL=1 go test -run TestACLPolicyFiles ./cmd/reconciler/
const updateACL = "SWARMVLAN_UPDATE_ACL"

// TestACLPolicyFilesAreTheCommandsOutput: the policies shipped in
// deploy/acl/ are exactly what `reconciler acl-policy` prints for the
// default prefix, so they cannot drift from what the code needs.
func TestACLPolicyFilesAreTheCommandsOutput(t *testing.T) {
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range aclRoles {
		t.Run(role, func(t *testing.T) {
			code, out, errOut := run(t, "", "", "acl-policy", "--role", role, "--prefix", "swarmvlan/")
			if code != 0 {
				t.Fatalf("acl-policy --role %s: exit %d: %s", role, code, errOut)
			}
			path := filepath.Join(root, "deploy", "acl", role+".hcl")
			if os.Getenv(updateACL) != "" {
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (regenerate with %s=1)", err, updateACL)
			}
			if string(want) != out {
				t.Errorf("%s differs from `reconciler acl-policy --role %s`; regenerate with %s=1 go test -run TestACLPolicyFiles ./cmd/reconciler/\n--- file\n%s\n--- command\n%s",
					path, role, updateACL, want, out)
			}
		})
	}
}

var ruleRE = regexp.MustCompile(`(?m)^(\w+) "([^"]*)" \{\n  policy = "(\w+)"\n\}$`)

// TestACLPolicyShape: with any prefix, every key rule stays under it, no
// role may write the whole prefix, every rule has a comment above it, and
// no rule reaches ACLs, the operator API or other agents' settings.
func TestACLPolicyShape(t *testing.T) {
	for _, prefix := range []string{"swarmvlan/", "site/a/swarmvlan"} {
		for _, role := range aclRoles {
			code, out, errOut := run(t, "", "", "acl-policy", "--role", role, "--prefix", prefix, "--service-prefix", "app-")
			if code != 0 {
				t.Fatalf("%s: exit %d: %s", role, code, errOut)
			}
			want := strings.TrimSuffix(prefix, "/") + "/"
			rules := ruleRE.FindAllStringSubmatchIndex(out, -1)
			if len(rules) < 3 {
				t.Fatalf("%s: %d rules:\n%s", role, len(rules), out)
			}
			for _, m := range rules {
				kind, name, policy := out[m[2]:m[3]], out[m[4]:m[5]], out[m[6]:m[7]]
				if !strings.HasSuffix(out[:m[0]], "\n") || !strings.HasPrefix(lastLine(out[:m[0]-1]), "# ") {
					t.Errorf("%s: rule %s %q has no comment above it", role, kind, name)
				}
				switch kind {
				case "key", "key_prefix":
					if !strings.HasPrefix(name, want) {
						t.Errorf("%s: %s %q is outside the prefix %q", role, kind, name, want)
					}
					if name == want && policy == "write" {
						t.Errorf("%s: writes the whole prefix", role)
					}
				case "service_prefix":
					if name != "app-" {
						t.Errorf("%s: service_prefix %q, want the --service-prefix app-", role, name)
					}
				case "session_prefix", "node_prefix":
				default:
					t.Errorf("%s: unexpected rule %s %q", role, kind, name)
				}
			}
		}
	}
}

func lastLine(s string) string { return s[strings.LastIndex(s, "\n")+1:] }

func TestACLPolicyRefusesUnknownRole(t *testing.T) {
	for _, args := range [][]string{{"acl-policy"}, {"acl-policy", "--role", "admin"}} {
		code, _, errOut := run(t, "", "", args...)
		if code == 0 || !strings.Contains(errOut, "--role") || !strings.Contains(errOut, "manager, host, operator") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestRefusalLogNamesThePermissionOnce: the daemon's log line for a
// refusal names the operation and the permission, once per interval for a
// refusal that repeats.
func TestRefusalLogNamesThePermissionOnce(t *testing.T) {
	var buf strings.Builder
	r := newRefusalLog(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	denied := &state.PermissionError{Op: state.OpKVList, Resource: "swarmvlan/spec/", Permission: "key:read on every key under swarmvlan/spec/"}
	for range 3 {
		r.note(fmt.Errorf("watch: %w", denied))
	}
	r.note(&state.TLSError{Addr: "https://c:8501", Problem: "the server's certificate is not signed by the CA in /ca.pem (CONSUL_CACERT)", Err: errors.New("x509")})
	out := buf.String()
	if n := strings.Count(out, "consul permission denied"); n != 1 {
		t.Errorf("%d permission lines for one repeated refusal:\n%s", n, out)
	}
	for _, want := range []string{"op=kv_list", `permission="key:read on every key under swarmvlan/spec/"`, "nothing is removed", "/ca.pem (CONSUL_CACERT)"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}
