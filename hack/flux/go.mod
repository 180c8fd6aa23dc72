// Build module for Flux's source-controller and kustomize-controller (the integration tests' GitOps
// controllers), built by hack/flux/build.sh from the Go module proxy.
module modelrollout.io/hack/flux

go 1.26.0

require (
	github.com/fluxcd/kustomize-controller v1.9.6
	github.com/fluxcd/source-controller v1.9.6
)

// As both controllers' own go.mod (ignored in a dependency): the digest library with BLAKE3.
replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.20220411205349-bde1400a84be

// source-controller v1.9.6 requires github.com/fluxcd/pkg/artifact v0.18.3, which the Go module proxy refuses
// ("This module version is not available", like v0.18.2 and v0.18.4); v0.18.0, the nearest it serves, has the
// same API for what source-controller uses.
replace github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.0
