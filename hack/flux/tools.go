//go:build tools

// Package flux pins the commands hack/flux/build.sh builds.
package flux

import (
	_ "github.com/fluxcd/kustomize-controller"
	_ "github.com/fluxcd/source-controller"
)
