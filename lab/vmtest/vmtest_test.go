package vmtest

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"
)

// nsVM needs only what this machine's kernel has, so its tests run in a
// fresh network namespace rather than in the VM.
var nsVM = New(Config{Kinds: []string{"veth", "macvlan"}})

// TestVMFreshNamespace runs in the child: a network namespace of its own,
// holding nothing but loopback, up.
func TestVMFreshNamespace(t *testing.T) {
	nsVM.Run(t, func(t *testing.T) {
		if !Inner() || InVM() {
			t.Fatalf("inner %v, in the VM %v: want the fresh namespace", Inner(), InVM())
		}
		ifs, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
			t.Errorf("interfaces %+v, want lo alone, up", ifs)
		}
	})
}

func TestParseResults(t *testing.T) {
	out := strings.Join([]string{
		"[    1.0] 8021q: 802.1Q VLAN Support v1.8",
		"=== RUN   TestVMA",
		"=== RUN   TestVMA/sub",
		"    a_test.go:3: said",
		"--- PASS: TestVMA (0.01s)",
		"    --- PASS: TestVMA/sub (0.00s)",
		"=== RUN   TestVMB",
		"    b_test.go:9: broke",
		"--- FAIL: TestVMB (0.02s)",
		"=== RUN   TestVMC",
		"--- SKIP: TestVMC (0.00s)",
		"=== RUN   TestVMD",
		"    d_test.go:1: started",
		"FAIL",
	}, "\n")
	got := parseResults(out)
	want := map[string]string{"TestVMA": "PASS", "TestVMB": "FAIL", "TestVMC": "SKIP", "TestVMD": "FAIL"}
	if len(got) != len(want) {
		t.Errorf("tests %v", got)
	}
	for n, v := range want {
		if got[n].verdict != v {
			t.Errorf("%s: verdict %q, want %q", n, got[n].verdict, v)
		}
	}
	if !slices.Contains(got["TestVMA"].lines, "    a_test.go:3: said") || slices.Contains(got["TestVMA"].lines, "    b_test.go:9: broke") {
		t.Errorf("TestVMA lines %q", got["TestVMA"].lines)
	}
	if l := got["TestVMD"].lines; !strings.Contains(l[len(l)-1], "no verdict") {
		t.Errorf("TestVMD lines %q", l)
	}
}

// TestCpio checks the newc layout byte for byte on a two-entry archive.
func TestCpio(t *testing.T) {
	var b bytes.Buffer
	c := &cpioWriter{w: &b}
	c.Dir("dev")
	c.File("init", 0o755, []byte("hi"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "000041ED" + "00000000" + "00000000" + "00000002" + "00000000" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000004" + "00000000" + "dev\x00" + "\x00\x00" +
		"070701" + "00000002" + "000081ED" + "00000000" + "00000000" + "00000001" + "00000000" + "00000002" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000005" + "00000000" + "init\x00" + "\x00" + "hi\x00\x00" +
		"070701" + "00000003" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "0000000B" + "00000000" + "TRAILER!!!\x00" + "\x00\x00\x00"
	if got := b.String(); got != want {
		t.Errorf("archive\n got %q\nwant %q", got, want)
	}
	if b.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", b.Len())
	}
}

// TestResolveModules resolves the VM kernel's modules for the kinds the
// tests use from their .modinfo: each after what it depends on.
func TestResolveModules(t *testing.T) {
	_, modDir, err := Kernel()
	if err != nil {
		t.Skip("VM kernel missing (" + err.Error() + "): " + installHint)
	}
	mods, err := resolveModules(modDir, []string{"veth", "vlan", "bond", "macvlan", "ipvlan"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	t.Logf("load order: %v", names)
	at := func(n string) int { return slices.Index(names, n) }
	for _, dep := range [][2]string{{"8021q", "garp"}, {"8021q", "mrp"}, {"garp", "llc"}, {"garp", "stp"}, {"bonding", "tls"}} {
		if at(dep[0]) < 0 || at(dep[1]) < 0 || at(dep[0]) < at(dep[1]) {
			t.Errorf("%s must load after %s: %v", dep[0], dep[1], names)
		}
	}
	for _, m := range mods {
		if m.Name == "bonding" && m.Params != "max_bonds=0" {
			t.Errorf("bonding params %q", m.Params)
		}
	}
}
