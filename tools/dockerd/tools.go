//go:build tools

// Package tools pins the Docker Engine 29 daemon (moby v2.0.0-beta.24 is
// Engine 29.8.1) that the Engine matrix runs; scripts/ensure-engines.sh
// builds it statically into the Engine cache.
package tools

import _ "github.com/moby/moby/v2/cmd/dockerd"
