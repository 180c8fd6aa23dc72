"""Traffic routers: one module per router behind :class:`~modelrollout.routers.base.Router`.

The engine asks :func:`~modelrollout.routers.registry.router_for` for the router of a spec and never
branches on the router itself. What each router can do is a row of :data:`modelrollout.core.routing.KINDS`;
adding a router means a row there, its field in ``api.Traffic``, a module here and a registry entry.
"""
