//go:build tools

// Package keda pins the command hack/keda/build.sh builds: KEDA's operator (cmd/operator).
package keda

import (
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
