//go:build tools

// Package tools pins the Consul agent that the test bed and `make run` use.
package tools

import _ "github.com/hashicorp/consul"
