//go:build tools

// Package argo pins the command hack/argo/build.sh builds: Argo Rollouts' controller (cmd/rollouts-controller),
// the peer the side-by-side benchmark (bench/peer.py) runs against.
package argo

import (
	_ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
)
