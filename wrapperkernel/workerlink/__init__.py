"""The private kernel<->worker link: typed frames and the byte framing that carries them.

Both processes import this package; it must never import the kernel or worker packages.
"""
