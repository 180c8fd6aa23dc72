// Package ext is the empty extension of Traefik's dynamic configuration (see go.mod beside this file).
package ext

// HTTP is embedded (inline) in Traefik's dynamic.HTTP; it adds no field.
type HTTP struct{}

// Router is embedded (inline) in Traefik's dynamic.Router; it adds no field.
type Router struct{}
