//go:build tools

// Package chaosmesh pins the command hack/chaosmesh/build.sh builds: Chaos Mesh's controller-manager
// (cmd/chaos-controller-manager).
package chaosmesh

import (
	_ "github.com/chaos-mesh/chaos-mesh/cmd/chaos-controller-manager"
)
