package lab

import (
	"context"
	"testing"
	"time"
)

// TestImageBuildTestImage builds the test image on the real engine twice:
// the first call leaves an image carrying the binary's hash, the second
// finds it current and leaves the same image in place.
func TestImageBuildTestImage(t *testing.T) {
	cli := EnsureSwarm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	ref, err := BuildTestImage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if ref != ImageTestApp {
		t.Fatalf("BuildTestImage = %q, want %q", ref, ImageTestApp)
	}
	first, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if first.Config == nil || len(first.Config.Labels[imageHashLabel]) != 64 {
		t.Fatalf("image labels %v lack a sha256 under %s", first.Config, imageHashLabel)
	}
	if got := first.Config.Entrypoint; len(got) != 1 || got[0] != "/app" {
		t.Errorf("entrypoint %v, want [/app]", got)
	}

	if _, err := BuildTestImage(ctx, ""); err != nil {
		t.Fatal(err)
	}
	second, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID {
		t.Errorf("unchanged binary rebuilt the image: %s -> %s", first.ID, second.ID)
	}
}
