//go:build !linux

package main

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sync/errgroup"
)

// startHost refuses: the host role drives the kernel through netlink.
func (d *daemon) startHost(ctx context.Context, g *errgroup.Group, resync time.Duration) error {
	return errors.New("--role host and all run only on Linux (they manage links through netlink); use --role manager")
}
