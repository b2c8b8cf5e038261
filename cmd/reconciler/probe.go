package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// cmdProbe is a container health check: an image built FROM scratch has no
// curl, so the binary asks its own daemon. It exits 0 when the URL answers
// 200 within the timeout, 1 otherwise, printing the answer either way.
func cmdProbe(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	url := fs.String("url", envOr("SWARMVLAN_PROBE_URL", "http://127.0.0.1:8480/readyz"), "URL to GET (also $SWARMVLAN_PROBE_URL)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", *url, resp.Status, msg)
	}
	fmt.Fprintln(c.stdout, msg)
	return nil
}
