//go:build tools

// Package traefik pins the command hack/traefik/build.sh builds.
package traefik

import (
	_ "github.com/traefik/traefik/v3/cmd/traefik"
)
