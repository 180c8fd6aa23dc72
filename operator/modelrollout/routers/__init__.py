"""Traffic routers: one module per router behind :class:`~modelrollout.routers.base.Router`.

The engine asks :func:`~modelrollout.routers.base.router_for` for the router of a spec and never
branches on the router itself; adding a router means adding a module and a registry entry.
"""
