package state

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestLeases(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)
	addr := netip.MustParseAddr("10.5.0.7")
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)

	l := Lease{Node: "n1", Hostname: "h1", Kind: LeaseTask, Created: now}
	if err := s.TakeLease(ctx, "v40", addr, l, 0); err != nil {
		t.Fatalf("take: %v", err)
	}
	// A second writer asking for the same address loses.
	if err := s.TakeLease(ctx, "v40", addr, Lease{Node: "n2", Kind: LeaseTask}, 0); !errors.Is(err, ErrLeaseTaken) {
		t.Fatalf("second take = %v, want ErrLeaseTaken", err)
	}
	have, err := s.Leases(ctx, "v40")
	if err != nil {
		t.Fatal(err)
	}
	e, ok := have[addr]
	if !ok || e.Node != "n1" || e.Address != "10.5.0.7" || !e.Held() || e.ModifyIndex == 0 {
		t.Fatalf("leases = %+v", have)
	}
	if err := s.ReleaseLease(ctx, "v40", addr, "n2", now); err == nil || !strings.Contains(err.Error(), "not to this node n2") {
		t.Fatalf("foreign release = %v", err)
	}
	if err := s.ReleaseLease(ctx, "v40", addr, "n1", now); err != nil {
		t.Fatalf("release: %v", err)
	}
	have, _ = s.Leases(ctx, "v40")
	e = have[addr]
	if e.Held() || e.Free(now.Add(time.Minute-time.Second), time.Minute) || !e.Free(now.Add(time.Minute), time.Minute) {
		t.Fatalf("released lease = %+v", e)
	}
	// Reuse after quarantine names the released record's index.
	if err := s.TakeLease(ctx, "v40", addr, Lease{Node: "n2", Kind: LeaseTask}, e.ModifyIndex); err != nil {
		t.Fatalf("reuse: %v", err)
	}
	// A shim's lease is not Docker's to release.
	shim := netip.MustParseAddr("10.5.0.62")
	if err := s.TakeLease(ctx, "v40", shim, Lease{Node: "n1", Kind: LeaseShim}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, "v40", shim, "n1", now); err != nil {
		t.Fatal(err)
	}
	have, _ = s.Leases(ctx, "v40")
	if !have[shim].Held() {
		t.Fatal("shim lease released by ReleaseLease")
	}
	if ok, err := s.DeleteLease(ctx, "v40", shim, have[shim].ModifyIndex); !ok || err != nil {
		t.Fatalf("delete = %v %v", ok, err)
	}
	vlans, err := s.LeaseVLANs(ctx)
	if err != nil || len(vlans) != 1 || vlans[0] != "v40" {
		t.Fatalf("lease vlans = %v %v", vlans, err)
	}
}
