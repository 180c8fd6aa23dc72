// Traefik's dynamic-configuration extension point (github.com/traefik/traefik/dynamic/ext), which Traefik's own
// go.mod takes from a directory of its repository and the Go module proxy does not serve. The open-source build
// extends nothing: two empty types, the only names Traefik's dynamic configuration embeds.
module github.com/traefik/traefik/dynamic/ext

go 1.25.0
